"""α and β as labelled matplotlib figures for TensorBoard's Images dashboard (BUILD_NOTES "TensorBoard and
inspection"): an edges × ops heatmap of softmax(α) per cell group or stage, β as bars per stage.

The colour of a heatmap cell is its deviation from uniform *within its row*, p − 1/k (k = the ops that edge
searches), on a diverging map centred on 0 and scaled to the largest deviation of the figure: while α is
near uniform (0.124 … 0.127) the winners still show red and the losers blue. The probabilities themselves are
printed in the cells, so the absolute values stay readable. Agg backend only (no display needed).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless; must come before pyplot is imported anywhere in the process

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
MIN_WIDTH_IN = 6.0  # >= 600 px at DPI 100: readable in TensorBoard even for a 3-op stage heatmap
# Smallest colour range: rows equal to 1e-6 would otherwise spread float noise over the whole map.
MIN_DEVIATION = 1e-4


def figure_png(fig) -> bytes:
    """PNG bytes of a figure (which is closed afterwards)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


# === edge labels (rows of α) ===


def cell_source_name(src: int) -> str:
    """Source index of a cell edge as in the DARTS figures: 0 = c_{k-2}, 1 = c_{k-1}, 2 + i = node i."""
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(src, f"node {src - 2}")


def stage_source_name(src: int) -> str:
    """State index of a stage edge: 0, 1 = the stage inputs, 2 + j = cell j."""
    return f"in{src}" if src < 2 else f"cell {src - 2}"


def cell_edge_labels(steps: int) -> list[str]:
    """"node i ← source" per row of a cell α: node i's edges come from sources 0 .. i+1, in that order."""
    return [f"node {i} ← {cell_source_name(src)}" for i in range(steps) for src in range(i + 2)]


def stage_edge_labels(n_cells: int, window: int) -> list[str]:
    """"cell j ← state" per row of a stage α: cell j reads the last min(m, j+2) states, oldest first
    (BUILD_NOTES "Stage DAGs, the sliding window and β")."""
    labels = []
    for j in range(n_cells):
        rows = min(window, j + 2)
        labels += [f"cell {j} ← {stage_source_name(t)}" for t in range(j + 2 - rows, j + 2)]
    return labels


# === figures ===


def row_deviation(probs, mask=None) -> np.ndarray:
    """p − 1/k per row (k = the row's searched ops, all when ``mask`` is None); NaN where masked out."""
    p = np.asarray(probs, dtype=np.float64)
    m = np.ones_like(p, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    k = m.sum(axis=1, keepdims=True)
    return np.where(m, p - 1.0 / np.maximum(k, 1), np.nan)


def heatmap_figure(probs, op_names: Sequence[str], edge_labels: Sequence[str], title: str, mask=None):
    """The heatmap figure of one α: rows = edges (``edge_labels``), columns = ops, values printed.

    Args:
      probs: [edges, ops] softmax(α) (over the searched ops of each row when ``mask`` is given).
      op_names, edge_labels: the axis labels.
      title: figure title, e.g. "softmax(α) normal — epoch 3".
      mask: optional bool [edges, ops]: entries an edge does not search are left blank.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(edge_labels), len(op_names)):
        raise ValueError(f"heatmap_figure: probabilities of shape {p.shape} for {len(edge_labels)} edges × "
                         f"{len(op_names)} ops")
    dev = row_deviation(p, mask)
    limit = max(float(np.nanmax(np.abs(dev))) if np.isfinite(dev).any() else 0.0, MIN_DEVIATION)
    rows, cols = p.shape
    width = max(MIN_WIDTH_IN, 2.6 + 0.95 * cols)
    fig, ax = plt.subplots(figsize=(width, 1.4 + 0.36 * rows))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(dev), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(cols), labels=list(op_names), rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(rows), labels=list(edge_labels), fontsize=8)
    best = np.nanargmax(np.where(np.isnan(dev), -np.inf, p), axis=1)
    for e in range(rows):
        for o in range(cols):
            if np.isnan(dev[e, o]):
                continue
            dark = abs(dev[e, o]) > 0.6 * limit
            ax.text(o, e, f"{p[e, o]:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black", fontweight="bold" if o == best[e] else "normal")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("p − 1/#ops of the edge (row)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def beta_figure(probs_by_stage: dict, lengths: Sequence[int], title: str):
    """softmax(β) as bars over the candidate stage lengths, one panel per stage (``probs_by_stage``:
    stage name → probabilities in ``lengths`` order)."""
    names = list(probs_by_stage)
    fig, axes = plt.subplots(1, len(names), figsize=(max(MIN_WIDTH_IN, 2.6 * len(names)), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        p = np.asarray(probs_by_stage[name], dtype=np.float64)
        if p.shape != (len(lengths),):
            raise ValueError(f"beta_figure: {name} has {p.shape} probabilities for lengths {list(lengths)}")
        colours = ["#c0392b" if i == int(np.argmax(p)) else "#7f8c8d" for i in range(len(p))]
        ax.bar([str(n) for n in lengths], p, color=colours)
        ax.axhline(1.0 / len(p), color="black", linewidth=0.8, linestyle=":", label="uniform")
        top = float(p.max())
        ax.set_ylim(0.0, min(1.0, top * 1.25 + 1e-3))
        for i, v in enumerate(p):
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("cells in the stage (n)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("softmax(β)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

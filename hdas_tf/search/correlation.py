"""How alike the candidate ops of a trained cell-search supernet are: the Pearson correlation of their outputs on
every edge, accumulated batch by batch, and its aggregate over edges (BUILD_NOTES "StacNAS operator clusters").

The outputs of an edge's ops are computed by independent op layers holding the edge's kernels, from the states
the supernet's forward pass produced; an edge's correlation runs over all sample·pixel·channel entries, with
running sums (n, Σx, Σxxᵀ), so no output is kept beyond its batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn.supernets import ChainSupernet

CORRELATION_FORMAT = "hdas_tf.op_correlation/1"
# |ρ| is capped below 1 before the Fisher z-transform, so identical ops (ρ = 1) give a finite z.
_Z_CAP = 1.0 - 1e-12


class PearsonAccumulator:
    """The Pearson correlation matrix of p variables from rows given batch by batch (streaming).

    Keeps n, Σx (p) and Σxxᵀ (p × p) in float64; ρ_ij = c_ij / √(c_ii c_jj) with c_ij = Σx_i x_j / n − m_i m_j.
    A variable with zero variance gets NaN correlations (the diagonal stays 1).
    """

    def __init__(self, num_vars: int):
        self.n = 0
        self.sum = np.zeros(num_vars)
        self.outer = np.zeros((num_vars, num_vars))

    def update(self, rows) -> None:
        """Adds ``rows`` [n, p] (each row one observation of the p variables)."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.sum.shape[0]:
            raise ValueError(f"PearsonAccumulator: rows of shape {x.shape}, expected [n, {self.sum.shape[0]}]")
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.outer += x.T @ x

    def correlation(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError("PearsonAccumulator: fewer than 2 observations")
        mean = self.sum / self.n
        cov = self.outer / self.n - np.outer(mean, mean)
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = cov / np.outer(sd, sd)
        rho = np.where(np.outer(sd, sd) > 0, np.clip(rho, -1.0, 1.0), np.nan)
        np.fill_diagonal(rho, 1.0)
        return rho


def fisher_mean(matrices) -> np.ndarray:
    """The mean of correlation matrices through Fisher's z = artanh ρ: tanh(mean z), NaN entries left out (an
    entry NaN in every matrix stays NaN)."""
    stack = np.asarray(list(matrices), dtype=np.float64)
    if stack.ndim != 3 or not len(stack):
        raise ValueError("fisher_mean: expected a non-empty list of square matrices")
    z = np.arctanh(np.clip(stack, -_Z_CAP, _Z_CAP))
    valid = np.isfinite(z)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, np.where(valid, z, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    out = np.tanh(mean)
    np.fill_diagonal(out, 1.0)
    return out


class EdgeOpCorrelation:
    """The per-edge correlation of the candidate ops (all but 'none') of a ``ChainSupernet`` with the full op set
    on every edge (a plain DARTS / H^c-DAS cell search, not a StacNAS stage).

    ``update(images, arch)`` runs one batch: the stem and cells as the supernet runs them (``training``: the
    stem's BN has running statistics and uses them when False; the cells' BNs keep none and always normalise
    with the batch's statistics), then each op of each edge on the edge's input state, by an op layer
    (``ops.make_op``) holding the edge's kernels. ``edge_correlations()`` gives the matrices.
    """

    def __init__(self, supernet: ChainSupernet, training: bool = False):
        space = supernet.space
        if space.edge_ops is not None:
            raise ValueError("op correlation needs every op on every edge; this supernet restricts edges to "
                             "per-edge op sets (a StacNAS stage-2 search)")
        self.supernet, self.training = supernet, training
        self.op_names = tuple(o for o in space.cell_ops if o != "none")
        if len(self.op_names) < 2:
            raise ValueError(f"op correlation needs at least two ops besides 'none'; the supernet has "
                             f"{list(space.cell_ops)}")
        self._layers = {}
        self.accumulators = {(i, k): PearsonAccumulator(len(self.op_names))
                             for i, cell in enumerate(supernet.cells) for k in range(cell.num_edges)}

    def _op(self, i: int, k: int, name: str, h):
        """Edge k of cell i's op ``name`` as its own layer with the cell's kernels (built on first use)."""
        key = (i, k, name)
        if key not in self._layers:
            cell = self.supernet.cells[i]
            layer = ops.make_op(name, cell.channels, cell.edge_strides[k], affine=False, pool_bn=cell.pool_bn,
                                running_stats=False)
            layer(h, training=True)  # builds its variables
            kernels = cell.edge_kernels(k).get(name, [])
            if len(layer.trainable_weights) != len(kernels):
                raise RuntimeError(f"op {name} of edge {k} of cell {i}: {len(layer.trainable_weights)} weights, "
                                   f"the cell holds {len(kernels)}")
            for var, value in zip(layer.trainable_weights, kernels):
                var.assign(value)
            self._layers[key] = layer
        return self._layers[key]

    def cell_states(self, images, arch):
        """Yields (cell index, states) per cell: the two preprocessed inputs, then the intermediate nodes."""
        net = self.supernet
        weights = {g: tf.nn.softmax(tf.convert_to_tensor(arch[f"alpha_{g}"]), axis=-1) for g in net.space.cell_groups}
        s0 = s1 = net.stem_bn(net.stem_conv(images), training=self.training)
        for i, (cell, group) in enumerate(zip(net.cells, net.groups)):
            states = [cell.preprocess0(s0, training=True), cell.preprocess1(s1, training=True)]
            out = cell(s0, s1, weights[group], training=True)
            # The cell's output is the channel concat of its nodes (SearchCell.call).
            states += tf.split(out, cell.steps, axis=-1)
            yield i, states
            s0, s1 = s1, out

    def update(self, images, arch) -> None:
        for i, states in self.cell_states(images, arch):
            cell = self.supernet.cells[i]
            for k, source in enumerate(cell.edge_sources):
                h = states[source]
                outs = [self._op(i, k, name, h)(h, training=True) for name in self.op_names]
                rows = tf.reshape(tf.stack(outs, axis=-1), (-1, len(self.op_names)))
                self.accumulators[(i, k)].update(rows.numpy())

    def edge_correlations(self) -> dict:
        """(cell index, edge index) → the [ops, ops] correlation matrix."""
        return {key: acc.correlation() for key, acc in self.accumulators.items()}

    def summary(self) -> dict:
        """The JSON document of ``op_correlation.json`` (without the run's own fields): the ops, the Fisher-z
        mean over all edges (``overall``), per cell type (normal / reduce) and per α group, and every edge's
        matrix (``cells[i][edge name]``)."""
        per_edge = self.edge_correlations()
        net = self.supernet
        by_type = {t: fisher_mean([m for (i, _), m in per_edge.items() if net.cells[i].reduction == (t == "reduce")])
                   for t in ("normal", "reduce") if any(c.reduction == (t == "reduce") for c in net.cells)}
        by_group = {g: fisher_mean([m for (i, _), m in per_edge.items() if net.groups[i] == g])
                    for g in net.space.cell_groups}
        return {
            "format": CORRELATION_FORMAT,
            "ops": list(self.op_names),
            "overall": _listed(fisher_mean(per_edge.values())),
            "cell_types": {t: _listed(m) for t, m in by_type.items()},
            "groups": {g: _listed(m) for g, m in by_group.items()},
            "cells": [{"group": net.groups[i], "reduction": cell.reduction,
                       "entries_per_edge": int(self.accumulators[(i, 0)].n),
                       "edges": {cell.edge_names[k]: _listed(per_edge[(i, k)]) for k in range(cell.num_edges)}}
                      for i, cell in enumerate(net.cells)],
        }


def _listed(matrix) -> list:
    """A matrix as nested lists with NaN as None (JSON has no NaN)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(matrix)]


def heatmap_png(corr, labels, title: str) -> bytes:
    """A labelled correlation heatmap (values printed in the cells, diverging colour scale on [-1, 1]) as PNG
    bytes, drawn with matplotlib."""
    import io

    # A bare Figure (no pyplot) renders with Agg and leaves the user's pyplot backend alone.
    from matplotlib.figure import Figure

    rho = np.asarray(corr, dtype=np.float64)
    n = len(labels)
    fig = Figure(figsize=(1.0 + 0.9 * n, 0.6 + 0.8 * n), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(rho, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=labels)
    for r in range(n):
        for c in range(n):
            value = rho[r, c]
            ax.text(c, r, "–" if not np.isfinite(value) else f"{value:.2f}", ha="center", va="center",
                    fontsize=8, color="white" if np.isfinite(value) and abs(value) > 0.6 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="Pearson ρ")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# === A finished search's correlation and the clusters it proposes ===

CLUSTERS_FILE, CORRELATION_FILE, HEATMAP_FILE = "clusters.json", "op_correlation.json", "op_correlation.png"


def validation_batches(cfg, num_images: int, batch_size: int):
    """Up to ``num_images`` images (whole batches of ``batch_size``) a search did not train its weights on: the
    architecture half of its split, or the test split when it trained on the whole training set. Returns
    (dataset of (x, y) batches, number of images, where they come from)."""
    from hdas_tf import data

    common = dict(batch_size=batch_size, seed=cfg.seed, data_dir=cfg.data_dir, image_size=cfg.image_size,
                  download=cfg.download, manual_dir=cfg.manual_dir, num_examples=cfg.num_examples)
    if cfg.train_portion < 1.0:
        _, arch_ds, info = data.search_datasets(cfg.dataset, train_portion=cfg.train_portion, **common)
        total = min(info.num_train, cfg.num_examples or info.num_train)
        available, source = total - int(np.floor(cfg.train_portion * total)), "validation half of the search split"
        ds = arch_ds  # infinite: reshuffled each pass, so cap at one pass
    else:
        _, ds, info = data.train_test_datasets(cfg.dataset, augment="none", cutout=0, **common)
        available, source = min(info.num_test, cfg.num_examples or info.num_test), "test split"
    batches = min(num_images, available) // batch_size
    if batches < 1:
        raise ValueError(f"{min(num_images, available)} images ({source}: {available}) make no batch of "
                         f"{batch_size}; raise --num_images or lower --batch_size")
    return ds.take(batches), batches * batch_size, source


def correlate_run(run_dir: str, num_images: int = 512, batch_size: int = 64, threshold: float | None = None,
                  num_clusters: int | None = None) -> dict:
    """Loads a finished cell search (``job.load_search``), accumulates its ops' per-edge correlations over
    ``num_images`` validation images, proposes clusters (``clusters.propose_clusters`` on the Fisher-z mean over
    all edges) and writes RUN_DIR/op_correlation.json, clusters.json (``hdas_tf.clusters/1``), op_correlation.png
    and the heatmaps as TensorBoard images (``diagnostics/op_correlation/...`` in RUN_DIR/tb). Checks everything
    before it writes. Returns the op_correlation document with ``clusters`` added."""
    import os

    from hdas_tf.files import atomic_path, write_json_atomic
    from hdas_tf.search import job
    from hdas_tf.space import clusters

    if (threshold is None) == (num_clusters is None):
        raise ValueError("give exactly one of --threshold and --num_clusters")
    cfg, _, model, step = job.load_search(run_dir)
    if cfg.search != "cell" or cfg.stacnas != "off":
        raise ValueError(f"{run_dir} is a {cfg.search} search (stacnas={cfg.stacnas}); op correlation needs a plain "
                         "cell search, whose edges hold every op")
    correlation = EdgeOpCorrelation(model.supernet, training=False)
    if num_clusters is not None and num_clusters > len(correlation.op_names):
        raise ValueError(f"--num_clusters={num_clusters}, but the run searched {len(correlation.op_names)} ops "
                         "besides 'none'")
    ds, images, source = validation_batches(cfg, num_images, batch_size)
    arch = {name: v.numpy() for name, v in model.arch_dict().items()}
    for x, _ in ds:
        correlation.update(x, arch)
    doc = correlation.summary()
    overall = np.array([[np.nan if v is None else v for v in row] for row in doc["overall"]])
    proposal = clusters.propose_clusters(overall, correlation.op_names, threshold=threshold,
                                         num_clusters=num_clusters)
    doc.update(images=images, images_from=source, step=step,
               batch_norm="stem: running statistics; cells: batch statistics (a search supernet keeps none)",
               clustering={"method": "average linkage on 1 - rho (scipy.cluster.hierarchy)", "threshold": threshold,
                           "num_clusters": num_clusters})
    pictures = {"overall": heatmap_png(overall, correlation.op_names, f"op correlation, all edges ({images} images)")}
    for t, m in doc["cell_types"].items():
        matrix = np.array([[np.nan if v is None else v for v in row] for row in m])
        pictures[t] = heatmap_png(matrix, correlation.op_names, f"op correlation, {t} cells")
    write_json_atomic(os.path.join(run_dir, CORRELATION_FILE), doc)
    write_json_atomic(os.path.join(run_dir, CLUSTERS_FILE), clusters.clusters_to_dict(proposal))
    with atomic_path(os.path.join(run_dir, HEATMAP_FILE), suffix=".png") as tmp:
        with open(tmp, "wb") as f:
            f.write(pictures["overall"])
    from hdas_tf.summaries.logger import SummaryLogger

    with SummaryLogger(os.path.join(run_dir, "tb")) as tb, tb.writer.as_default():
        for name, png in pictures.items():
            tf.summary.image(f"diagnostics/op_correlation/{name}", tf.io.decode_png(png, channels=3)[None], step=step,
                             description="Pearson correlation of the candidate ops' outputs, Fisher-z mean over edges")
    doc["clusters"] = clusters.clusters_to_dict(proposal)["clusters"]
    return doc

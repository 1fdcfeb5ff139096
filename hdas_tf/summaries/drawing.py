"""Genotypes drawn as in the DARTS / H-DAS papers' figures (BUILD_NOTES "TensorBoard and inspection").

A cell: inputs c_{k-2}, c_{k-1} (green), intermediate nodes (blue), output c_{k} (yellow), every edge
labelled with its op, grey concat edges into the output. A stage DAG: inputs in0, in1, its cells, the output
fed by the chosen pair; dead cells (no path to the output, not built) dashed.

Graphviz renders the DOT text of ``logger`` when its ``dot`` program is on the PATH; otherwise matplotlib
draws the same picture from a fixed layered layout (inputs left, nodes in order, output right; edges that
skip nodes bend around them). Either engine can be forced with ``engine=``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

from matplotlib.patches import FancyArrowPatch

from hdas_tf.space import genotypes as gt
from hdas_tf.space.derive import dead_cells
from hdas_tf.summaries.diagnostics import genotype_parts
from hdas_tf.summaries import logger
from hdas_tf.summaries.figures import DPI, figure_png, plt, stage_source_name

ENGINES = ("auto", "graphviz", "matplotlib")
FORMATS = ("png", "svg")
_GREEN, _BLUE, _YELLOW = "#b4eeb4", "#add8e6", "#eee8aa"  # Graphviz darkseagreen2, lightblue, palegoldenrod


def drawing_items(genotype: gt.Genotype) -> list[tuple[str, object]]:
    """(key, part) of every cell and stage DAG (``diagnostics.genotype_parts``)."""
    return genotype_parts(genotype)


def _engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"drawing engine must be one of {ENGINES}, received {engine!r}")
    if engine == "auto":
        return "graphviz" if shutil.which("dot") else "matplotlib"
    if engine == "graphviz" and not shutil.which("dot"):
        raise ValueError("the Graphviz 'dot' program is not on the PATH: install Graphviz (Debian: apt-get install "
                         "graphviz) or draw with matplotlib")
    return engine


def render_dot(text: str, fmt: str = "png") -> bytes:
    """``dot -T<fmt>`` of DOT ``text``; raises ValueError with Graphviz's message when it fails."""
    if fmt not in FORMATS:
        raise ValueError(f"render_dot: format must be one of {FORMATS}, received {fmt!r}")
    binary = shutil.which("dot")
    if binary is None:
        raise ValueError("render_dot: the Graphviz 'dot' program is not on the PATH")
    try:
        done = subprocess.run([binary, f"-T{fmt}", f"-Gdpi={DPI}"], input=text.encode("utf-8"),
                              capture_output=True, timeout=60, check=True)
    except subprocess.CalledProcessError as e:
        raise ValueError(f"Graphviz could not render the drawing: {e.stderr.decode(errors='replace').strip()}")
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"Graphviz could not render the drawing: {e}")
    return done.stdout


# === matplotlib layout ===

COLUMN = 1.9  # distance between ranks
ROW = 1.5  # distance between nodes of one rank
LABEL_AT = 0.6  # where along an edge its op label sits (0 = source, 1 = target)


def _positions(n: int, edges) -> dict[int, tuple[float, float]]:
    """Layered layout, left to right as Graphviz's ``rankdir=LR``: inputs 0, 1 at rank 0, node t at rank 1 + the
    highest rank among its sources (``edges``: (op, src, target)), the output n+2 one rank after the last.
    Nodes of one rank are stacked in index order; a node alone in its rank sits off the middle line, alternately
    above and below, so that straight edges past it do not cross it."""
    rank = {0: 0, 1: 0}
    for t in range(2, n + 2):
        rank[t] = 1 + max((rank[s] for _, s, target in edges if target == t and s in rank), default=0)
    rank[n + 2] = max(rank.values()) + 1
    pos = {}
    for r in sorted(set(rank.values())):
        members = [t for t in sorted(rank) if rank[t] == r]
        if len(members) == 1:
            y = [0.0] if members[0] == n + 2 else [0.55 if r % 2 else -0.55]
        else:
            y = [ROW * ((len(members) - 1) / 2 - k) for k in range(len(members))]
        for t, yy in zip(members, y):
            pos[t] = (COLUMN * r, yy)
    return pos


def _box(ax, xy, text, colour, dashed=False):
    ax.text(*xy, text, ha="center", va="center", fontsize=9, zorder=3, color="#555555" if dashed else "black",
            bbox=dict(boxstyle="round,pad=0.35", facecolor="white" if dashed else colour,
                      edgecolor="#555555" if dashed else "black", linestyle="--" if dashed else "-"))


def _arrow(ax, a, b, label=None, rad=0.0, colour="black", dashed=False, width=1.0):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, shrinkA=16, shrinkB=16, zorder=1,
                                 connectionstyle=f"arc3,rad={rad}", color=colour, linewidth=width,
                                 linestyle="--" if dashed else "-"))
    if label:
        # A point of arc3's quadratic Bézier (control point: the chord's midpoint moved by rad times the chord's
        # normal), past the middle: two edges that cross in their middles keep their labels apart.
        (x1, y1), (x2, y2) = a, b
        cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
        t = LABEL_AT
        mx = (1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t ** 2 * x2
        my = (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t ** 2 * y2
        ax.text(mx, my, label, ha="center", va="center", fontsize=7, zorder=2, color=colour,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.85))


def _rad(pos, src: int, target: int, repeat: int) -> float:
    """Bend of an edge: straight between neighbouring ranks; bowed away from the nodes it passes when it skips
    ranks (from the middle line when none is in the way); a repeated (source, target) pair bends further so that
    both labels stay readable. arc3 bows a rightward edge downwards for rad > 0."""
    (x1, y1), (x2, y2) = pos[src], pos[target]
    rad = 0.0
    if abs(x2 - x1) > COLUMN * 1.01:
        between = [y for t, (x, y) in pos.items() if min(x1, x2) < x < max(x1, x2)]
        chord = (y1 + y2) / 2
        if between:
            up = sum(between) / len(between) <= chord
        else:
            up = chord > 0 or (chord == 0 and src % 2 == 0)
        rad = -0.35 if up else 0.35
    return rad + (0.5 if rad >= 0 else -0.5) * repeat


def _figure_size(pos) -> tuple[float, float]:
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    return max(6.5, 0.75 * (max(xs) - min(xs)) + 2.0), max(3.0, 0.75 * (max(ys) - min(ys)) + 2.2)


def _draw_graph(ax, n, edges, concat, title, names, node_colours, dashed=()):
    """Draws inputs, ``n`` nodes and an output into ``ax``; ``edges`` = (op, src, target index 2..n+1)."""
    pos = _positions(n, edges)
    out = n + 2
    for t, xy in pos.items():
        _box(ax, xy, names[t], node_colours[t], dashed=t in dashed)
    seen: dict[tuple[int, int], int] = {}
    for op, src, target in edges:
        repeat = seen.get((src, target), 0)
        seen[(src, target)] = repeat + 1
        _arrow(ax, pos[src], pos[target], op, _rad(pos, src, target, repeat), dashed=target in dashed,
               colour="#555555" if target in dashed else "black")
    for c in concat:
        _arrow(ax, pos[c], pos[out], rad=_rad(pos, c, out, 0), colour="#888888", width=1.4)
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 1.2, max(ys) + 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)


def _cell_args(cell: gt.CellGenotype, name: str):
    n = len(cell.nodes)
    names = {0: "$c_{k-2}$", 1: "$c_{k-1}$", n + 2: "$c_{k}$"} | {i + 2: str(i) for i in range(n)}
    colours = {0: _GREEN, 1: _GREEN, n + 2: _YELLOW} | {t: _BLUE for t in range(2, n + 2)}
    edges = [(op, src, i + 2) for i, node in enumerate(cell.nodes) for op, src in node]
    return dict(n=n, edges=edges, concat=cell.concat, title=f"cell {name}", names=names, node_colours=colours)


def _stage_args(stage: gt.StageGenotype, name: str):
    n = len(stage.cells)
    dead = {j + 2 for j in dead_cells(stage)}
    names = {t: stage_source_name(t) for t in range(n + 2)} | {n + 2: "out"}
    colours = {0: _GREEN, 1: _GREEN, n + 2: _YELLOW} | {t: _BLUE for t in range(2, n + 2)}
    edges = [(op, src, j + 2) for j, cell in enumerate(stage.cells) for op, src in cell]
    title = f"stage {name}" + (f" (dead cells: {', '.join(str(t - 2) for t in sorted(dead))})" if dead else "")
    return dict(n=n, edges=edges, concat=stage.concat, title=title, names=names, node_colours=colours, dashed=dead)


def _args(key: str, item) -> dict:
    if isinstance(item, gt.CellGenotype):
        return _cell_args(item, key)
    return _stage_args(item, key.replace("stage", "") or "shared")


def _single(args: dict):
    fig, ax = plt.subplots(figsize=_figure_size(_positions(args["n"], args["edges"])))
    _draw_graph(ax, **args)
    fig.tight_layout()
    return fig


def cell_figure(cell: gt.CellGenotype, name: str):
    """matplotlib figure of a cell (see the module docstring)."""
    return _single(_cell_args(cell, name))


def stage_figure(stage: gt.StageGenotype, name: str):
    """matplotlib figure of a stage DAG; dead cells and the edges into them dashed, grey."""
    return _single(_stage_args(stage, name))


def _dot(key: str, item, cluster: str | None = None) -> str:
    if isinstance(item, gt.CellGenotype):
        return logger.cell_dot(item, key, cluster=cluster)
    return logger.stage_dot(item, key.replace("stage", "") or "shared", cluster=cluster)


# === drawings ===


def genotype_pngs(genotype: gt.Genotype, engine: str = "auto") -> dict[str, bytes]:
    """PNG bytes of every cell and stage DAG of ``genotype``, keyed as ``drawing_items``."""
    engine = _engine(engine)
    out = {}
    for key, item in drawing_items(genotype):
        out[key] = render_dot(_dot(key, item)) if engine == "graphviz" else figure_png(_single(_args(key, item)))
    return out


def combined_dot(genotype: gt.Genotype) -> str:
    """One DOT document with every cell and stage DAG as a cluster (``dot`` draws them side by side)."""
    title = genotype.name or "genotype"
    body = [_dot(key, item, cluster=f"g{i}") for i, (key, item) in enumerate(drawing_items(genotype))]
    return "\n".join([f"digraph {logger._quote(title)} {{", *logger._HEADER, f"  label={logger._quote(title)};",
                      *body, "}"]) + "\n"


def draw_genotype(genotype: gt.Genotype, path, engine: str = "auto") -> str:
    """Writes all of ``genotype``'s drawings into one ``.png`` or ``.svg`` file (atomically) and returns the
    engine used: Graphviz draws them as clusters of one graph, matplotlib as panels one above the other."""
    from hdas_tf.files import atomic_path

    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw into {path!r}: the file name must end in .png or .svg")
    items = drawing_items(genotype)
    if not items:
        raise ValueError("the genotype has neither cells nor stage DAGs to draw")
    engine = _engine(engine)
    if engine == "graphviz":
        data = render_dot(combined_dot(genotype), fmt)
    else:
        panels = [_args(key, item) for key, item in items]
        sizes = [_figure_size(_positions(a["n"], a["edges"])) for a in panels]
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(w for w, _ in sizes), sum(h for _, h in sizes)),
                                 squeeze=False, height_ratios=[h for _, h in sizes])
        for ax, args in zip(axes[:, 0], panels):
            _draw_graph(ax, **args)
        if genotype.name:
            fig.suptitle(genotype.name, fontsize=12)
        fig.tight_layout()
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format=fmt, dpi=DPI)
        finally:
            plt.close(fig)
        data = buf.getvalue()
    with atomic_path(path, suffix=f".{fmt}") as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return engine


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes, read from the IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")

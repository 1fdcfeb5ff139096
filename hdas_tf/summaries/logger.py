"""TensorBoard logging and human-readable views of architectures (BUILD_NOTES "TensorBoard and inspection").

Everything here needs numpy and ``tf.summary`` only — no matplotlib, pydot or Graphviz:

- ``alpha_heatmap``: softmax probabilities of an α variable as an RGB image (rows = edges, columns = ops),
  through a three-stop viridis-like colour ramp, upsampled with ``np.kron``.
- ``genotype_markdown`` / ``edge_softmax_table``: markdown tables, which TensorBoard's text dashboard
  renders as HTML tables.
- ``cell_dot`` / ``stage_dot`` / ``genotype_dot`` / ``write_dot_files``: Graphviz DOT text of cells and stage
  DAGs. ``write_dot_files`` also renders PNGs, but only when the ``dot`` binary is on the PATH.
- ``SummaryLogger``: one ``tf.summary`` file writer with methods for scalars, architecture variables
  (α/β), genotypes and hyperparameters.

A search writes its architecture through ``search_board`` (matplotlib figures, genotype drawings, diagnostics, the
Custom Scalars layout); ``SummaryLogger.architecture`` and the tags below remain a compact view for other callers.

Naming conventions of the logged tags (a variable named ``alpha_normal`` has the short name ``normal``; the
``alpha_`` / ``beta_`` prefix of ``SearchSpace.arch_shapes`` names is dropped):

- ``alpha/<short>/edge<e>/<op>``: scalar, softmax probability of op ``<op>`` on edge ``e`` (0-based);
- ``beta/<short>/n=<length>``: scalar, softmax probability of candidate stage length ``<length>``;
- ``alpha_raw/<short>`` (``beta_raw/<short>``): histogram of the raw α (β) values;
- ``alpha_heatmap/<short>``: image, ``alpha_heatmap`` of softmax(α);
- ``alpha_table/<short>``: text, ``edge_softmax_table`` of softmax(α);
- ``genotype``: text, ``genotype_markdown``; ``genotype_json``: the JSON document in a fenced code block;
- ``genotype_dot/<key>``: text, the DOT source of each cell / stage in a fenced code block.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from hdas_tf.space import genotypes as gt
from hdas_tf.space.derive import dead_cells

_log = logging.getLogger(__name__)

# Three stops of matplotlib's viridis (at 0, 0.5, 1): dark purple → teal → yellow. Brightness (and the
# green channel) increases monotonically along the ramp, so a larger probability is always brighter.
RAMP = np.array([[68.0, 1.0, 84.0], [33.0, 145.0, 140.0], [253.0, 231.0, 37.0]])


# === Heatmap ===


def ramp_colours(values, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """RGB colours (float, 0..255) of ``values`` on the three-stop ramp; values outside [vmin, vmax] clip."""
    if not vmax > vmin:
        raise ValueError(f"ramp_colours: need vmax > vmin, received vmin={vmin}, vmax={vmax}")
    t = np.clip((np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    pos = t * (len(RAMP) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(RAMP) - 2)
    frac = (pos - lo)[..., None]
    return RAMP[lo] * (1.0 - frac) + RAMP[lo + 1] * frac


def alpha_heatmap(weights, cell_px: int = 16, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """An α heatmap as an image batch for ``tf.summary.image``.

    Args:
      weights: array [edges, ops]. Probabilities, i.e. softmax(α) over the op axis — this function does
        NOT softmax (``SummaryLogger.architecture`` does it before calling). A 1-D array (e.g. softmax(β))
        is drawn as one row.
      cell_px: int. Side of the square block of pixels per (edge, op) entry. Defaults to 16.
      vmin, vmax: float. The values mapped to the two ends of the colour ramp. Defaults to 0 and 1, an
        absolute scale, so images of different epochs compare.

    Returns:
      uint8 array [1, edges·cell_px, ops·cell_px, 3]; rows are edges, columns ops.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"alpha_heatmap: expected a non-empty [edges, ops] array, received shape {w.shape}")
    if not isinstance(cell_px, (int, np.integer)) or cell_px < 1:
        raise ValueError(f"alpha_heatmap: cell_px must be a positive integer, received {cell_px!r}")
    colours = ramp_colours(w, vmin, vmax)  # [edges, ops, 3]
    image = np.kron(colours, np.ones((cell_px, cell_px, 1)))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)[None]


def softmax(x, axis: int = -1) -> np.ndarray:
    """Numerically stable numpy softmax."""
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


# === Markdown ===


def _cell_source(src: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(src, f"node {src - 2}")


def _stage_source(src: int) -> str:
    return f"in{src}" if src < 2 else f"cell {src - 2}"


def _edge_text(op: str, source: str) -> str:
    # Code spans keep underscores in op names from being read as emphasis.
    return f"`{op}` ← {source}"


def cell_markdown(cell: gt.CellGenotype, name: str) -> str:
    """A markdown table of one cell: one row per intermediate node with its edges ``op ← source``."""
    lines = [f"#### cell {name}", "", "| node | edges |", "|---|---|"]
    for i, node in enumerate(cell.nodes):
        lines.append(f"| {i} | " + ", ".join(_edge_text(op, _cell_source(src)) for op, src in node) + " |")
    lines += ["", "concat: " + ", ".join(_cell_source(c) for c in cell.concat)]
    return "\n".join(lines)


def stage_markdown(stage: gt.StageGenotype, name: str) -> str:
    """A markdown table of one stage DAG: one row per cell with its edges; dead cells are marked."""
    dead = set(dead_cells(stage))
    lines = [f"#### stage {name}", "", "| cell | edges |", "|---|---|"]
    for j, cell in enumerate(stage.cells):
        mark = " (dead)" if j in dead else ""
        lines.append(f"| {j}{mark} | " + ", ".join(_edge_text(op, _stage_source(src)) for op, src in cell) + " |")
    lines += ["", "concat: " + ", ".join(_stage_source(c) for c in stage.concat)]
    if dead:
        lines.append("dead cells (not built): " + ", ".join(str(j) for j in sorted(dead)))
    return "\n".join(lines)


def _stage_keys(genotype: gt.Genotype) -> list[str]:
    if genotype.stages is None:
        return []
    return ["shared"] if len(genotype.stages) == 1 else [str(s) for s in range(len(genotype.stages))]


def _cell_keys(genotype: gt.Genotype) -> list[str]:
    if genotype.cells is None:
        return []
    canonical = gt.STAGE_SPECIFIC_KEYS + gt.SHARED_KEYS
    return [k for k in canonical if k in genotype.cells] + [k for k in genotype.cells if k not in canonical]


def genotype_markdown(genotype: gt.Genotype) -> str:
    """Markdown for a whole genotype: a table per cell group, a table per stage DAG, the stage lengths.

    Stages are numbered from 0 as in the genotype JSON; a DAG shared by all stages is called "shared".
    """
    title = genotype.name if genotype.name else "genotype"
    parts = [f"### {title}"]
    for key in _cell_keys(genotype):
        parts.append(cell_markdown(genotype.cells[key], key))
    for key, stage in zip(_stage_keys(genotype), genotype.stages or ()):
        parts.append(stage_markdown(stage, key))
    if genotype.stages is None and genotype.cells is not None:
        parts.append("stage level: chain")
    if genotype.stage_lengths is not None:
        parts.append("stage lengths: " + ", ".join(str(n) for n in genotype.stage_lengths))
    return "\n\n".join(parts) + "\n"


def edge_softmax_table(weights, op_names: Sequence[str], edge_labels: Sequence[str] | None = None,
                       digits: int = 3) -> str:
    """A markdown table of probabilities [edges, ops] (already softmaxed), the largest of each row in bold."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(op_names):
        raise ValueError(f"edge_softmax_table: expected shape [edges, {len(op_names)}], received {w.shape}")
    labels = [f"edge{e}" for e in range(w.shape[0])] if edge_labels is None else list(edge_labels)
    if len(labels) != w.shape[0]:
        raise ValueError(f"edge_softmax_table: {len(labels)} edge labels for {w.shape[0]} edges")
    lines = ["| edge | " + " | ".join(op_names) + " |", "|---" * (len(op_names) + 1) + "|"]
    for label, row in zip(labels, w):
        best = int(np.argmax(row))
        cells = [f"**{p:.{digits}f}**" if o == best else f"{p:.{digits}f}" for o, p in enumerate(row)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# === Graphviz DOT ===


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADER = [
    "  rankdir=LR;",
    '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    '  edge [fontname="Helvetica", fontsize=10];',
]


def _graph_open(title: str, cluster: str | None) -> list[str]:
    """The opening lines of a graph, or of a ``subgraph cluster_*`` inside a combined document."""
    if cluster is None:
        return [f"digraph {_quote(title)} {{", *_HEADER, f"  label={_quote(title)};"]
    return [f"subgraph {_quote(f'cluster_{cluster}')} {{", f"  label={_quote(title)};"]


def cell_dot(cell: gt.CellGenotype, name: str, cluster: str | None = None) -> str:
    """Graphviz DOT text of a cell: inputs c_{k-2}, c_{k-1}, nodes 0..n-1, output c_{k}.

    Every genotype edge is one line ``src -> node [label="op"]``; the concat edges into ``c_{k}`` carry
    no label. With ``cluster`` (a unique word), a ``subgraph cluster_<cluster>`` whose node ids start with
    ``<cluster>_``, for one document holding several graphs (``drawing.combined_dot``).
    """
    p = "" if cluster is None else f"{cluster}_"
    ids = {0: f"{p}c_km2", 1: f"{p}c_km1", **{i + 2: f"{p}node{i}" for i in range(len(cell.nodes))}}
    lines = _graph_open(f"cell {name}", cluster)
    lines.append(f'  {p}c_km2 [label="c_{{k-2}}", fillcolor=darkseagreen2];')
    lines.append(f'  {p}c_km1 [label="c_{{k-1}}", fillcolor=darkseagreen2];')
    for i in range(len(cell.nodes)):
        lines.append(f'  {p}node{i} [label="{i}", fillcolor=lightblue];')
    lines.append(f'  {p}c_k [label="c_{{k}}", fillcolor=palegoldenrod];')
    for i, node in enumerate(cell.nodes):
        for op, src in node:
            lines.append(f"  {ids[src]} -> {p}node{i} [label={_quote(op)}];")
    for c in cell.concat:
        lines.append(f"  {ids[c]} -> {p}c_k [color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def stage_dot(stage: gt.StageGenotype, name: str, cluster: str | None = None) -> str:
    """Graphviz DOT text of a stage DAG: inputs in0, in1, cells 0..n-1, output ``out``.

    Every genotype edge is one line ``src -> cellJ [label="op"]``; the concat edges into ``out`` carry no
    label. Dead cells (``derive.dead_cells``) and the edges into them are drawn dashed. ``cluster``: as in
    ``cell_dot``.
    """
    dead = set(dead_cells(stage))
    p = "" if cluster is None else f"{cluster}_"
    ids = {0: f"{p}in0", 1: f"{p}in1", **{j + 2: f"{p}cell{j}" for j in range(len(stage.cells))}}
    lines = _graph_open(f"stage {name}", cluster)
    lines.append(f'  {p}in0 [label="in0", fillcolor=darkseagreen2];')
    lines.append(f'  {p}in1 [label="in1", fillcolor=darkseagreen2];')
    for j in range(len(stage.cells)):
        if j in dead:
            lines.append(f'  {p}cell{j} [label="cell {j}", style="rounded,dashed", fillcolor=white];')
        else:
            lines.append(f'  {p}cell{j} [label="cell {j}", fillcolor=lightblue];')
    lines.append(f'  {p}out [label="out", fillcolor=palegoldenrod];')
    for j, cell in enumerate(stage.cells):
        style = ", style=dashed" if j in dead else ""
        for op, src in cell:
            lines.append(f"  {ids[src]} -> {p}cell{j} [label={_quote(op)}{style}];")
    for c in stage.concat:
        lines.append(f"  {ids[c]} -> {p}out [color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def genotype_dot(genotype: gt.Genotype) -> dict[str, str]:
    """DOT text of every cell and stage DAG, keyed by file stem: ``cell_<group>``, ``stage_<s>`` (s from
    0, as in the genotype JSON) or ``stage_shared`` for one DAG shared by all stages."""
    out = {}
    for key in _cell_keys(genotype):
        out[f"cell_{key}"] = cell_dot(genotype.cells[key], key)
    for key, stage in zip(_stage_keys(genotype), genotype.stages or ()):
        out[f"stage_{key}"] = stage_dot(stage, key)
    return out


def write_dot_files(genotype: gt.Genotype, directory, render: bool = True) -> list[str]:
    """Write ``<stem>.dot`` for every entry of ``genotype_dot`` into ``directory`` (created if needed).

    When ``render`` and the Graphviz ``dot`` binary is on the PATH, also write ``<stem>.png`` next to each;
    a failed rendering is logged, never raised (the DOT text is the artefact that always exists).

    Returns:
      The paths written, DOT files first.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    dots = []
    for stem, text in genotype_dot(genotype).items():
        path = os.path.join(directory, f"{stem}.dot")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        dots.append(path)
    pngs = []
    binary = shutil.which("dot") if render else None
    if binary:
        for path in dots:
            png = path[: -len(".dot")] + ".png"
            try:
                subprocess.run([binary, "-Tpng", path, "-o", png], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as e:
                _log.warning("could not render %s with %s: %s", path, binary, e)
                continue
            pngs.append(png)
    return dots + pngs


# === TensorBoard ===


def _short(name: str) -> str:
    for prefix in ("alpha_", "beta_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return name


def _is_beta(name: str) -> bool:
    return name.startswith("beta")


def _numpy(value) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def arch_labels(space) -> dict[str, list]:
    """The ``labels`` argument of ``SummaryLogger.architecture`` for a ``SearchSpace``: every α named by
    ``space.arch_shapes()`` gets its op names, every β its candidate stage lengths."""
    labels = {}
    for name in space.arch_shapes():
        if _is_beta(name):
            labels[name] = list(space.candidate_lengths)
        elif name.startswith("alpha_stage"):
            labels[name] = list(space.stage_ops)
        else:
            labels[name] = list(space.cell_ops)
    return labels


def _plain(value):
    """A value hp.hparams accepts (bool, int, float, str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class SummaryLogger:
    """A ``tf.summary`` file writer for a search or a training run (tags: see the module docstring).

    Use one logger per run directory, e.g. ``SummaryLogger(logdir / "arch")``. Do not write to it from
    inside ``model.fit``'s own ``TensorBoard`` writer context (BUILD_NOTES "Keras 3 specifics"); call it eagerly, e.g. at
    epoch end. Also a context manager (closes on exit).
    """

    def __init__(self, logdir):
        self.logdir = os.fspath(logdir)
        self.writer = tf.summary.create_file_writer(self.logdir)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One scalar per entry; keys are the tags."""
        with self.writer.as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, value, step=step)

    def architecture(self, step: int, arch: Mapping, op_names_by_name: Mapping[str, Sequence],
                     masks: Mapping | None = None) -> None:
        """Log raw architecture variables: softmax scalars, raw histograms, heatmap and table per α.

        Args:
          step: int.
          arch: name → raw α [edges, ops] or β [candidates] (numpy arrays, tensors or variables), named as
            ``SearchSpace.arch_shapes`` names them (``alpha_*`` / ``beta_*``).
          op_names_by_name: name → the op names of an α's last axis, or the candidate stage lengths of
            a β (as ints, or as strings "n=4"); ``arch_labels(space)`` builds it for a SearchSpace.
          masks: optional name → bool [edges, ops]: the ops each edge searches (StacNAS stage 2,
            ``SearchSpace.op_mask``). The softmax runs over those alone, as in the supernet; the others
            show as 0 and are left out of the raw histogram.
        """
        with self.writer.as_default():
            for name, value in arch.items():
                if name not in op_names_by_name:
                    raise ValueError(f"architecture: no op names / stage lengths given for {name!r}")
                raw, names, short = _numpy(value), [str(x) for x in op_names_by_name[name]], _short(name)
                if _is_beta(name):
                    if raw.shape != (len(names),):
                        raise ValueError(f"architecture: {name!r} has shape {raw.shape}; expected "
                                         f"({len(names)},) for stage lengths {names}")
                    for n, p in zip(names, softmax(raw)):
                        label = n if n.startswith("n=") else f"n={n}"  # lengths given as 4 or as "n=4"
                        tf.summary.scalar(f"beta/{short}/{label}", p, step=step)
                    tf.summary.histogram(f"beta_raw/{short}", raw, step=step)
                    continue
                if raw.ndim != 2 or raw.shape[1] != len(names):
                    raise ValueError(f"architecture: {name!r} has shape {raw.shape}; expected "
                                     f"[edges, {len(names)}] for ops {names}")
                mask = None if masks is None or name not in masks else np.asarray(masks[name], dtype=bool)
                if mask is not None and mask.shape != raw.shape:
                    raise ValueError(f"architecture: mask of {name!r} has shape {mask.shape}; expected {raw.shape}")
                probs = softmax(raw if mask is None else np.where(mask, raw, -np.inf), axis=-1)
                raw = raw if mask is None else raw[mask]
                for e, row in enumerate(probs):
                    for op, p in zip(names, row):
                        tf.summary.scalar(f"alpha/{short}/edge{e}/{op}", p, step=step)
                tf.summary.histogram(f"alpha_raw/{short}", raw, step=step)
                tf.summary.image(f"alpha_heatmap/{short}", alpha_heatmap(probs), step=step,
                                 description=f"softmax({name}): rows = edges, columns = {', '.join(names)}")
                tf.summary.text(f"alpha_table/{short}", edge_softmax_table(probs, names), step=step)

    def genotype(self, step: int, genotype: gt.Genotype) -> None:
        """The genotype as markdown tables, as its JSON document and as DOT text per cell / stage."""
        with self.writer.as_default():
            tf.summary.text("genotype", genotype_markdown(genotype), step=step)
            tf.summary.text("genotype_json", "```json\n" + genotype.to_json() + "\n```", step=step)
            for stem, text in genotype_dot(genotype).items():
                tf.summary.text(f"genotype_dot/{stem}", "```dot\n" + text + "```", step=step)

    def hparams(self, values: Mapping, trial_id: str | None = None, metrics: Sequence[str] | None = None) -> None:
        """Record the run's hyperparameters for the HParams dashboard.

        Values that are not bool/int/float/str (tuples, None, paths) are logged as their ``str``. With
        ``metrics`` (tags such as ``"epoch_accuracy"``), an experiment config listing them is written too.
        """
        from tensorboard.plugins.hparams import api as hp  # tensorboard is a dependency of tensorflow

        plain = {str(k): _plain(v) for k, v in values.items()}
        with self.writer.as_default():
            if metrics:
                hp.hparams_config(hparams=[hp.HParam(k) for k in plain], metrics=[hp.Metric(m) for m in metrics])
            hp.hparams(plain, trial_id=trial_id)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

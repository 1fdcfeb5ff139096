"""Stage DAG layers of H^s-DAS: the search stage (mixed stage edges, β output mixture) and the fixed stage.

A stage is a DAG of cells at one resolution (BUILD_NOTES "Stage DAGs, the sliding window and β"). States 0 and 1 are
two 1×1 ReLUConvBN projections of the stage input; state t >= 2 is cell t-2. Cell j reads the sum of its incoming
stage edges, fed to the cell as both s0 and s1 (so both of its preprocessings are 1×1 ReLUConvBN), and the
stage output is the channel concat of two states (the last two cells, or the β mixture in the
cell-distribution search).

Width convention: every state of a stage has the width of a cell's output, C_s·|cell concat| (4·C_s for
the usual four-node cell). The projections map the stage input to that width so that projections and
cell outputs can be summed on the same stage edge, as the H-DAS reference does; the cells then reduce it
back to C_s in their own preprocessing.

Index conventions are those of ``genotypes``: within a stage's α, rows go cell by cell, and within cell j
by window position r = 0..min(m, j+2)-1, i.e. state (j+2) - min(m, j+2) + r (oldest first).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn import parameter_free
from hdas_tf.nn.cells import FixedCell
from hdas_tf.space.op_registry import STAGE_OPS
from hdas_tf.space.derive import dead_cells, parse_stage_alphas
from hdas_tf.space.genotypes import CellGenotype, StageGenotype, validate_cell, validate_stage

_PACKAGE = "hdas_tf"


# === Stage-edge layout (shared by the layers, the losses and genotype derivation) ===


def stage_cell_sources(j: int, window: int) -> list[int]:
    """State indices cell j (0-based) may read: the last min(m, j+2) states, oldest first
    (BUILD_NOTES "Stage DAGs, the sliding window and β")."""
    rows = min(window, j + 2)
    return list(range(j + 2 - rows, j + 2))


def stage_edge_sources(n_cells: int, window: int) -> list[list[int]]:
    """Per cell, the source state of each of its candidate edges, in α's row order."""
    return [stage_cell_sources(j, window) for j in range(n_cells)]


def num_stage_edges(n_cells: int, window: int) -> int:
    """Rows of a stage's α: Σ_j min(m, j+2)."""
    return sum(min(window, j + 2) for j in range(n_cells))


def stage_alpha_rows(space, s: int) -> int:
    """Rows of the α that stage s reads. A shared α (one DAG for all stages) is sized for the longest
    stage; a shorter stage reads its prefix, which is the same cells' edges because rows go cell by cell
    and a cell's window does not depend on the stage length."""
    if space.stage == "shared":
        return num_stage_edges(max(space.cells_per_stage), space.window)
    return num_stage_edges(space.cells_per_stage[s], space.window)


def stage_arch_shapes(space) -> dict[str, tuple[int, ...]]:
    """Name → shape of the stage-level architecture variables, with per-stage lengths honoured.

    Equals ``SearchSpace.arch_shapes()`` whenever the three stages have the same number of cells (every
    distribution search, and the usual 6-6-6); for unequal stage lengths (phase 3 with the lengths a
    β search chose) each stage-specific α has its own row count.
    """
    if space.stage == "chain":
        raise ValueError("stage_arch_shapes: the space has no stage level (stage='chain')")
    ops_ = len(space.stage_ops)
    shapes: dict[str, tuple[int, ...]] = {}
    if space.stage == "shared":
        shapes["alpha_stage"] = (stage_alpha_rows(space, 0), ops_)
    else:
        for s in range(3):
            shapes[f"alpha_stage{s + 1}"] = (stage_alpha_rows(space, s), ops_)
    if space.max_cells is not None:
        for s in range(3):
            shapes[f"beta_stage{s + 1}"] = (len(space.candidate_lengths),)
    return shapes


def _cell_dict(cell, where: str) -> dict:
    """A cell genotype as plain lists {"nodes": [[[op, src], ...], ...], "concat": [...]}, validated."""
    if isinstance(cell, CellGenotype):
        nodes, concat = cell.nodes, cell.concat
    elif isinstance(cell, Mapping) and "nodes" in cell:
        nodes = cell["nodes"]
        concat = cell.get("concat")
    else:
        raise ValueError(f"{where}: cell must be a CellGenotype or a dict with 'nodes' (and 'concat'), "
                         f"received {cell!r}")
    if concat is None:
        concat = list(range(2, len(nodes) + 2))
    genotype = CellGenotype(nodes=nodes, concat=concat)
    validate_cell(genotype, f"{where} cell")
    return {"nodes": [[[str(op), int(src)] for op, src in node] for node in genotype.nodes],
            "concat": [int(c) for c in genotype.concat]}


def _stage_genotype(stage, where: str) -> StageGenotype:
    if isinstance(stage, StageGenotype):
        genotype = stage
    elif isinstance(stage, Mapping) and "cells" in stage:
        cells = stage["cells"]
        concat = stage.get("concat")
        if concat is None:
            concat = (len(cells), len(cells) + 1)
        genotype = StageGenotype(cells=cells, concat=concat)
    else:
        raise ValueError(f"{where}: stage must be a StageGenotype or a dict with 'cells' and 'concat', "
                         f"received {stage!r}")
    validate_stage(genotype, f"{where} stage")
    return genotype


def _check_int(where: str, minimum: int, **values):
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{where}: {key} must be an integer >= {minimum}, received {value!r}")


# === Search stage ===


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SearchStage(keras.layers.Layer):
    """A stage of the H^s-DAS supernet: fixed cells wired by mixed stage edges
    (BUILD_NOTES "Stage DAGs, the sliding window and β").

    Cell j's input = Σ over its candidate sources t (the last min(m, j+2) states) of the mixed stage edge
    Σ_o w_{e,o}·o(state_t). The stage ops are parameter-free (pooling + non-affine BN, identity), so each
    state's max_pool+BN, avg_pool+BN and identity are computed once and reused by every edge leaving it;
    'none' contributes zeros and is never built. The projections and pooling BNs are non-affine and use
    batch statistics (everything searched is non-affine); the cells are fixed discrete cells built as in
    evaluation networks (affine BN, their pooling BN included, as the H-DAS reference; no drop path) but without
    running statistics, which a supernet never reads.

    Output: concat(cell n-2, cell n-1) of the last two cells; in the cell-distribution variant
    (``max_cells`` given, ``n_cells == max_cells``), Σ_n b_n·concat(cell n-2, cell n-1) over the candidate
    lengths n = min_cells..max_cells (0-based cells), computed as concat(Σ_n b_n·cell_{n-2},
    Σ_n b_n·cell_{n-1}) since concat is linear.

    Args:
      cell: dict {"nodes": [[[op, src], ...], ...], "concat": [...]} or CellGenotype. The stage's normal cell.
      channels: int. C_s, the cells' node width; states are C_s·|concat| wide.
      n_cells: int. Cells built (N, or N_max in the distribution search).
      window: int. m, the number of latest states a cell may read. Defaults to 3.
      op_names: sequence of str. Stage op set in α's column order. Defaults to ``STAGE_OPS``.
      pool_bn: bool. BN after the pooling ops (stage edges and cells). Defaults to True.
      min_cells: int. Shortest candidate stage length (distribution search only).
      max_cells: int. Longest candidate length; None (default) disables the β mixture.

    ``call(x, weights, beta_weights=None, training=None)``: ``weights`` [num_edges, len(op_names)] are the
    stage-edge weights ALREADY softmaxed over ops (as ``SearchCell`` takes them: the supernet softmaxes once,
    so a shared α is normalised once for all stages); ``beta_weights`` [len(candidate lengths)] are
    softmax(β), required exactly in the distribution variant.
    """

    def __init__(self, cell, channels, n_cells, window=3, op_names=STAGE_OPS, pool_bn=True, min_cells=None,
                 max_cells=None, **kwargs):
        super().__init__(**kwargs)
        _check_int("SearchStage", 1, channels=channels, n_cells=n_cells, window=window)
        op_names = tuple(op_names)
        unknown = [o for o in op_names if o not in STAGE_OPS]
        if unknown or not op_names or len(set(op_names)) != len(op_names):
            raise ValueError(f"SearchStage: op_names must be distinct stage ops from {list(STAGE_OPS)}, "
                             f"received {list(op_names)}")
        if max_cells is not None:
            _check_int("SearchStage", 2, min_cells=min_cells, max_cells=max_cells)
            if not min_cells <= max_cells or n_cells != max_cells:
                raise ValueError(
                    "SearchStage: the distribution variant needs 2 <= min_cells <= max_cells == n_cells, received "
                    f"min_cells={min_cells}, max_cells={max_cells}, n_cells={n_cells}")
        elif min_cells is not None:
            raise ValueError(f"SearchStage: min_cells={min_cells} given without max_cells")
        self.cell = _cell_dict(cell, "SearchStage")
        self.channels, self.n_cells, self.window = int(channels), int(n_cells), int(window)
        self.op_names, self.pool_bn = op_names, bool(pool_bn)
        self.min_cells = None if min_cells is None else int(min_cells)
        self.max_cells = None if max_cells is None else int(max_cells)
        self.sources = stage_edge_sources(self.n_cells, self.window)
        read = {t for srcs in self.sources for t in srcs}
        # With a window of 1 no cell reads state 0: its projection would be a dead weight.
        self._projected = [i for i in (0, 1) if i in read]
        self.projections = [ops.ReLUConvBN(self.state_channels, 1, 1, affine=False, running_stats=False,
                                           name=f"projection_{i}") for i in self._projected]
        # Running statistics are never read: a supernet is only run on batches in training mode.
        self.cells = [FixedCell(self.channels, self.cell["nodes"], self.cell["concat"], reduction=False,
                                reduction_prev=False, affine=True, pool_bn=self.pool_bn, drop_path=False,
                                running_stats=False, name=f"cell_{j}") for j in range(self.n_cells)]
        # Per state, the stage edges leaving it (in α's row order); their parameter-free ops (pooling + BN,
        # identity) are computed once per state for all of them (``parameter_free.shared_ops``).
        edges = [(k, t) for k, t in enumerate(t for srcs in self.sources for t in srcs)]
        self.out_edges = {t: [k for k, src in edges if src == t] for t in sorted(read)}
        self.shared_op_names = [name for name in self.op_names if name != "none"]
        self._shared_columns = [self.op_names.index(name) for name in self.shared_op_names]

    # === shapes ===

    @property
    def state_channels(self) -> int:
        """Width of every state (projections and cell outputs): C_s·|cell concat|."""
        return self.channels * len(self.cell["concat"])

    @property
    def output_channels(self) -> int:
        return 2 * self.state_channels

    @property
    def num_edges(self) -> int:
        return num_stage_edges(self.n_cells, self.window)

    @property
    def candidate_lengths(self) -> tuple[int, ...]:
        return () if self.max_cells is None else tuple(range(self.min_cells, self.max_cells + 1))

    def build(self, x_shape, weights_shape=None, beta_weights_shape=None):
        x_shape = tuple(x_shape)
        for projection in self.projections:
            projection.build(x_shape)
        state = (*x_shape[:3], self.state_channels)
        for cell in self.cells:
            cell.build(state, state)
        self.built = True

    def compute_output_shape(self, x_shape, weights_shape=None, beta_weights_shape=None):
        return (*tuple(x_shape)[:3], self.output_channels)

    # === forward ===

    def _check_arch(self, weights, beta_weights):
        expected = (self.num_edges, len(self.op_names))
        if tuple(weights.shape) != expected:
            raise ValueError(f"{self.name}: stage-edge weights must have shape {expected} "
                             f"(edges, ops), received {tuple(weights.shape)}")
        if self.max_cells is None:
            if beta_weights is not None:
                raise ValueError(f"{self.name}: beta_weights given, but the stage has no distribution search "
                                 "(max_cells=None)")
        elif beta_weights is None or tuple(beta_weights.shape) != (len(self.candidate_lengths),):
            got = None if beta_weights is None else tuple(beta_weights.shape)
            raise ValueError(f"{self.name}: beta_weights of shape ({len(self.candidate_lengths)},) required for "
                             f"candidate lengths {list(self.candidate_lengths)}, received {got}")

    def _shared(self, t, state, flat):
        """Edge k → its term Σ_o w_{k,o}·o(state_t) for every stage edge leaving state t."""
        if t not in self.out_edges or not self.shared_op_names:
            return {}
        weights = parameter_free.edge_op_weights(flat, len(self.op_names), self.out_edges[t], self._shared_columns)
        outs = parameter_free.shared_ops(state, self.shared_op_names, weights, 1, bn=self.pool_bn)
        return dict(zip(self.out_edges[t], outs))

    def states(self, x, weights, training=None):
        """All states of the stage: [projection 0 (or None), projection 1, cell 0, ..., cell n-1]."""
        flat = tf.unstack(tf.reshape(tf.cast(weights, x.dtype), [-1]))  # one op, not one slice per scalar
        states = [None, None]
        for i, projection in zip(self._projected, self.projections):
            states[i] = projection(x, training=training)
        shared = {t: self._shared(t, h, flat) for t, h in enumerate(states) if h is not None}
        k = 0
        for j, srcs in enumerate(self.sources):
            terms = []
            for t in srcs:
                if k in shared[t]:
                    terms.append(shared[t][k])
                k += 1
            h = tf.add_n(terms) if terms else tf.zeros_like(states[srcs[-1]])  # an op set of 'none' alone
            out = self.cells[j](h, h, training=training)
            states.append(out)
            shared[j + 2] = self._shared(j + 2, out, flat)
        return states

    def call(self, x, weights, beta_weights=None, training=None):
        self._check_arch(weights, beta_weights)
        states = self.states(x, weights, training=training)
        n = self.n_cells
        if self.max_cells is None:
            return tf.concat([states[n], states[n + 1]], axis=-1)
        # β mixture: candidate n outputs concat(cell n-2, cell n-1) = concat(state n, state n+1).
        b = tf.cast(beta_weights, x.dtype)[None, :]
        first = parameter_free.weighted_sums(b, [states[length] for length in self.candidate_lengths])[0]
        second = parameter_free.weighted_sums(b, [states[length + 1] for length in self.candidate_lengths])[0]
        return tf.concat([first, second], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(cell=self.cell, channels=self.channels, n_cells=self.n_cells, window=self.window,
                      op_names=list(self.op_names), pool_bn=self.pool_bn, min_cells=self.min_cells,
                      max_cells=self.max_cells)
        return config


# === Fixed stage ===


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedStage(keras.layers.Layer):
    """A derived stage (evaluation networks): the cells of a ``StageGenotype``, dead cells not built.

    Cell j's input = Σ over its genotype edges (op, src) of op(state_src), with the stage ops max/avg
    pooling (+ BN per ``pool_bn``) and identity; the cell is called with it as both s0 and s1. Cells with
    no path to the concat states (``derive.dead_cells``) are not built, and neither is a projection that
    no live cell and no concat index reads. Drop path, when on, acts on every non-identity op inside the cells
    (as ``FixedCell``) and on every non-identity stage edge (the pooling edges), as the H-DAS reference does,
    with the same rate; identity edges are never dropped.

    Args:
      stage: dict {"cells": [[[op, src], ...], ...], "concat": [a, b]} or StageGenotype.
      cell: dict {"nodes": [...], "concat": [...]} or CellGenotype. The stage's normal cell.
      channels: int. C_s; states are C_s·|cell concat| wide (see the module docstring).
      pool_bn: bool. BN after pooling, on stage edges and in cells. Defaults to True.
      drop_path: bool. Drop path on the non-identity ops of the cells and of the stage edges. Defaults to False.
      affine: bool. Affine BN in projections, pooling edges and cells. Defaults to True.

    ``call(x, drop_rate=None, training=None)``; output width ``output_channels`` = 2·C_s·|cell concat|.
    """

    def __init__(self, stage, cell, channels, pool_bn=True, drop_path=False, affine=True, **kwargs):
        super().__init__(**kwargs)
        _check_int("FixedStage", 1, channels=channels)
        genotype = _stage_genotype(stage, "FixedStage")
        self.stage = {"cells": [[[str(op), int(src)] for op, src in c] for c in genotype.cells],
                      "concat": [int(c) for c in genotype.concat]}
        self.cell = _cell_dict(cell, "FixedStage")
        self.channels, self.pool_bn = int(channels), bool(pool_bn)
        self.use_drop_path, self.affine = bool(drop_path), bool(affine)
        dead = set(dead_cells(genotype))
        self.live_cells = [j for j in range(len(self.stage["cells"])) if j not in dead]
        read = set(self.stage["concat"]) | {src for j in self.live_cells for _, src in self.stage["cells"][j]}
        self._projected = [i for i in (0, 1) if i in read]
        self.projections = [ops.ReLUConvBN(self.state_channels, 1, 1, affine=self.affine, name=f"projection_{i}")
                            for i in self._projected]
        self.stage_cells, self.edge_ops, self.edge_drops = [], [], []
        for j in self.live_cells:
            self.stage_cells.append(FixedCell(self.channels, self.cell["nodes"], self.cell["concat"], reduction=False,
                                              reduction_prev=False, affine=self.affine, pool_bn=self.pool_bn,
                                              drop_path=self.use_drop_path, name=f"cell_{j}"))
            for e, (op, _) in enumerate(self.stage["cells"][j]):
                layer = ops.make_op(op, self.state_channels, 1, affine=self.affine, pool_bn=self.pool_bn,
                                    op_name=f"edge_{j}_{e}")
                self.edge_ops.append(layer)
                needs_drop = self.use_drop_path and not isinstance(layer, ops.Identity)
                self.edge_drops.append(ops.DropPath(name=f"drop_edge_{j}_{e}") if needs_drop else None)

    @property
    def state_channels(self) -> int:
        return self.channels * len(self.cell["concat"])

    @property
    def output_channels(self) -> int:
        return 2 * self.state_channels

    @property
    def dead_cells(self) -> list[int]:
        live = set(self.live_cells)
        return [j for j in range(len(self.stage["cells"])) if j not in live]

    def build(self, x_shape, drop_rate_shape=None):
        x_shape = tuple(x_shape)
        for projection in self.projections:
            projection.build(x_shape)
        state = (*x_shape[:3], self.state_channels)
        for cell in self.stage_cells:
            cell.build(state, state)
        for op in self.edge_ops:
            op.build(state)
        self.built = True

    def compute_output_shape(self, x_shape, drop_rate_shape=None):
        return (*tuple(x_shape)[:3], self.output_channels)

    def edge_outputs(self, j, states, drop_rate=None, training=None) -> list:
        """The outputs of live cell j's stage edges, in genotype order (their sum is the cell's input), read
        from ``states`` (state index → tensor); drop path on the non-identity edges when a rate is given in
        training."""
        k = sum(len(self.stage["cells"][i]) for i in self.live_cells[:self.live_cells.index(j)])
        outs = []
        for _, src in self.stage["cells"][j]:
            layer, drop = self.edge_ops[k], self.edge_drops[k]
            h = layer(states[src]) if isinstance(layer, ops.Identity) else layer(states[src], training=training)
            if drop is not None and drop_rate is not None:
                h = drop(h, drop_rate, training=training)
            outs.append(h)
            k += 1
        return outs

    def call(self, x, drop_rate=None, training=None):
        states = {}
        for i, projection in zip(self._projected, self.projections):
            states[i] = projection(x, training=training)
        for j, cell in zip(self.live_cells, self.stage_cells):
            outs = self.edge_outputs(j, states, drop_rate, training=training)
            total = outs[0]
            for h in outs[1:]:
                total = total + h
            states[j + 2] = cell(total, total, drop_rate=drop_rate, training=training)
        a, b = self.stage["concat"]
        return tf.concat([states[a], states[b]], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(stage=self.stage, cell=self.cell, channels=self.channels, pool_bn=self.pool_bn,
                      drop_path=self.use_drop_path, affine=self.affine)
        return config


# === Deriving stage genotypes (BUILD_NOTES "Deriving genotypes") ===


def split_stage_alphas(alphas, n_cells: int, window: int) -> list[np.ndarray]:
    """Cut a stage's flat α [Σ_j min(m, j+2), ops] into one [min(m, j+2), ops] block per cell."""
    a = np.asarray(alphas)
    need = num_stage_edges(n_cells, window)
    if a.ndim != 2 or a.shape[0] != need:
        raise ValueError(f"stage alphas for {n_cells} cells with window {window} need {need} rows, "
                         f"received shape {a.shape}")
    out, start = [], 0
    for j in range(n_cells):
        rows = min(window, j + 2)
        out.append(a[start:start + rows])
        start += rows
    return out


def derive_stage_genotype(arch: dict, space, ranking: str = "softmax", k: int = 2):
    """Discrete stage DAGs from the stage-level α (and β) of a stage search.

    Each cell keeps its top-k candidate edges by strongest non-'none' op, with sources as STATE indices
    (``derive.parse_stage_alphas`` maps window positions). In the distribution search the stage length
    is n = argmax_n β_s (lowest n on ties); the DAG is cut to its first n cells (later cells have no path
    to the output) and its concat is the argmax-β pair (cell n-2, cell n-1) = states (n, n+1).

    Args:
      arch: dict name → array, keys as ``SearchSpace.arch_shapes()`` (alpha_stage or alpha_stage1..3,
        beta_stage1..3).
      space: SearchSpace with a stage level.
      ranking: "softmax" or "logit" (``--edge_ranking``). Defaults to "softmax".
      k: edges kept per cell. Defaults to 2.

    Returns:
      (three StageGenotype, one per stage — a shared α yields three DAGs that agree on their common cells;
      three lists of dead cells; the chosen stage lengths as a tuple, or None without a β search).
    """
    if space.stage == "chain":
        raise ValueError("derive_stage_genotype: the space has no stage level (stage='chain')")
    shapes = stage_arch_shapes(space)
    missing = [name for name in shapes if name not in arch]
    if missing:
        raise ValueError(f"derive_stage_genotype: arch lacks {missing}; received keys {sorted(arch)}")
    stages, dead, lengths = [], [], []
    for s in range(3):
        name = "alpha_stage" if space.stage == "shared" else f"alpha_stage{s + 1}"
        a = np.asarray(arch[name], dtype=np.float64)
        if a.shape != shapes[name]:
            raise ValueError(f"derive_stage_genotype: {name} must have shape {shapes[name]}, received {a.shape}")
        n = space.cells_per_stage[s]
        per_cell = split_stage_alphas(a[:num_stage_edges(n, space.window)], n, space.window)
        if space.max_cells is not None:
            b = np.asarray(arch[f"beta_stage{s + 1}"], dtype=np.float64)
            if b.shape != shapes[f"beta_stage{s + 1}"]:
                raise ValueError(f"derive_stage_genotype: beta_stage{s + 1} must have shape "
                                 f"{shapes[f'beta_stage{s + 1}']}, received {b.shape}")
            n = space.candidate_lengths[int(np.argmax(b))]
            per_cell = per_cell[:n]
        stage, stage_dead = parse_stage_alphas(per_cell, space.window, op_names=space.stage_ops, k=k,
                                               ranking=ranking)
        stages.append(stage)
        dead.append(stage_dead)
        lengths.append(n)
    return stages, dead, (tuple(lengths) if space.max_cells is not None else None)

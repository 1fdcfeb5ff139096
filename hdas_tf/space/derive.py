"""Deriving genotypes from architecture weights: the top-k edges of each cell node (DARTS) or stage cell
(H^s-DAS) by their strongest non-'none' op, and the dead cells of a stage DAG."""

from __future__ import annotations

import numpy as np

from hdas_tf.space.genotypes import CellGenotype, StageGenotype, is_int, validate_cell, validate_stage
from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS


def _check_parse_args(op_names, k, ranking) -> None:
    if not isinstance(op_names, (list, tuple)) or not all(isinstance(o, str) for o in op_names):
        raise ValueError(f"op_names must be a sequence of op names, got {op_names!r}")
    if len(set(op_names)) != len(op_names):
        raise ValueError(f"op_names has duplicates: {list(op_names)}")
    if all(o == "none" for o in op_names):
        raise ValueError(f"op_names has no op other than 'none': {list(op_names)}")
    if not is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if ranking not in ("softmax", "logit"):
        raise ValueError(f"ranking must be 'softmax' or 'logit', got {ranking!r}")


def alpha_matrix(alphas, shape: tuple, where: str) -> np.ndarray:
    """``alphas`` as a float64 array of ``shape``, finite; errors name ``where``."""
    try:
        a = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a numeric array ({e})") from None
    if a.shape != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: contains non-finite values")
    return a


def _top_edges(a: np.ndarray, sources, op_names, k: int, ranking: str) -> tuple:
    """The top-k rows of α (one row per candidate edge) by their strongest non-'none' op.

    softmax: the op's probability under softmax over ALL ops of the edge, 'none' included (DARTS);
    logit: the raw α (the H-DAS code's ranking). Ties go to the lower source. Each kept edge takes the
    argmax non-'none' op, which is the same under both rankings (softmax is monotonic).
    """
    keep = np.array([o for o, name in enumerate(op_names) if name != "none"])
    raw = a[:, keep]
    best = keep[np.argmax(raw, axis=1)]
    if ranking == "softmax":
        z = np.exp(a - a.max(axis=1, keepdims=True))
        score = (z / z.sum(axis=1, keepdims=True))[:, keep].max(axis=1)
    else:
        score = raw.max(axis=1)
    order = sorted(range(len(sources)), key=lambda r: (-score[r], r))[: min(k, len(sources))]
    return tuple((op_names[best[r]], int(sources[r])) for r in order)


def parse_cell_alphas(
    alphas, op_names=CELL_OPS, steps: int = 4, k: int = 2, ranking: str = "softmax", concat=None, op_mask=None
) -> CellGenotype:
    """Derive a discrete cell from the α of one cell (BUILD_NOTES "Deriving genotypes").

    Args:
        alphas: array [num_edges, len(op_names)], num_edges = Σ_{i<steps} (i+2) (14 for 4 steps); rows go
            node by node, and within node i by source 0..i+1.
        op_names: sequence of str. The ops of α's last axis, in order: ``CELL_OPS`` or a subset (e.g. a
            StacNAS cluster set); 'none' may be absent. Defaults to ``CELL_OPS``.
        steps: int. Intermediate nodes. Defaults to 4.
        k: int. Edges kept per node. Defaults to 2.
        ranking: str. "softmax" (DARTS) or "logit" (raw α, as the H-DAS code). Defaults to "softmax".
        concat: sequence of int. Defaults to all nodes, (2, ..., steps+1).
        op_mask: optional bool array of α's shape: the ops each edge may use (StacNAS stage 2,
            ``SearchSpace.op_mask``). The others are left out of the softmax and of the choice, as the
            supernet left them out. Defaults to every op.

    Returns:
        CellGenotype. Within a node the edges are ordered by descending score (ties: lower source first),
        the order in which the DARTS code lists them.
    """
    _check_parse_args(op_names, k, ranking)
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    n_edges = sum(i + 2 for i in range(steps))
    a = alpha_matrix(alphas, (n_edges, len(op_names)), "cell alphas")
    if op_mask is not None:
        mask = np.asarray(op_mask, dtype=bool)
        if mask.shape != a.shape:
            raise ValueError(f"op_mask: expected shape {a.shape}, got {mask.shape}")
        searched = mask[:, [o for o, name in enumerate(op_names) if name != "none"]].any(axis=1)
        if not searched.all():
            raise ValueError(f"op_mask: edges {np.flatnonzero(~searched).tolist()} allow no op other than 'none'")
        a = np.where(mask, a, -np.inf)  # exp(-inf) = 0: out of the softmax; never the argmax
    nodes, start = [], 0
    for i in range(steps):
        n_in = i + 2
        nodes.append(_top_edges(a[start : start + n_in], range(n_in), op_names, k, ranking))
        start += n_in
    concat = tuple(range(2, steps + 2)) if concat is None else concat
    cell = CellGenotype(nodes=tuple(nodes), concat=concat)
    validate_cell(cell, "parsed cell", op_names=op_names)
    return cell


def parse_stage_alphas(
    alphas_per_cell, window: int, op_names=STAGE_OPS, k: int = 2, ranking: str = "softmax", concat=None
) -> tuple[StageGenotype, list[int]]:
    """Derive a stage DAG from the stage-edge α of one stage (BUILD_NOTES "Deriving genotypes").

    Args:
        alphas_per_cell: list with one array per cell j (0-based), shape [min(window, j+2), len(op_names)].
            Row r is window position r: state (j+2) - min(window, j+2) + r, i.e. the last min(window, j+2)
            states, oldest first (BUILD_NOTES "Stage DAGs, the sliding window and β").
        window: int. The sliding window m.
        op_names: sequence of str. Defaults to ``STAGE_OPS``.
        k: int. Edges kept per cell (at most the number of rows). Defaults to 2.
        ranking: str. "softmax" or "logit", as in ``parse_cell_alphas``.
        concat: two state indices for the stage output, e.g. the argmax-β pair. Defaults to the last two
            cells, (n, n+1).

    Returns:
        (StageGenotype with STATE indices as sources, not window positions; its dead cells).
    """
    _check_parse_args(op_names, k, ranking)
    if not is_int(window) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if not isinstance(alphas_per_cell, (list, tuple)) or not alphas_per_cell:
        raise ValueError("alphas_per_cell must be a non-empty list with one α array per cell")
    cells = []
    for j, alphas in enumerate(alphas_per_cell):
        rows = min(window, j + 2)
        a = alpha_matrix(alphas, (rows, len(op_names)), f"stage alphas cell {j}")
        first = j + 2 - rows  # the oldest state in cell j's window
        cells.append(_top_edges(a, range(first, j + 2), op_names, k, ranking))
    n = len(cells)
    concat = (n, n + 1) if concat is None else concat
    stage = StageGenotype(cells=tuple(cells), concat=concat)
    validate_stage(stage, "parsed stage", op_names=op_names)
    return stage, dead_cells(stage)


def dead_cells(stage: StageGenotype) -> list[int]:
    """0-based indices of the cells with no path to the stage output (not built in evaluation networks,
    BUILD_NOTES "Deriving genotypes"): walk back from the two concat states; cells never reached are dead, including
    every cell after the chosen concat pair."""
    validate_stage(stage, "stage", op_names=None)
    reached, todo = set(), list(stage.concat)
    while todo:
        t = todo.pop()
        if t < 2 or t - 2 in reached:
            continue  # a stage input, or a cell already walked
        reached.add(t - 2)
        todo.extend(src for _, src in stage.cells[t - 2])
    return [j for j in range(len(stage.cells)) if j not in reached]


"""The search-space description (op sets, nodes, sharing, stage window and lengths) and its size arithmetic.

One frozen value says everything that shapes a supernet and its architecture variables, so that a
search, a checkpoint and a genotype parser agree on what α's axes mean.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS

CELL_SHARING = ("shared", "stage_specific")
STAGE_LEVELS = ("chain", "shared", "stage_specific")
SHARED_GROUPS = ("normal", "reduce")
STAGE_SPECIFIC_GROUPS = ("normal1", "reduce1", "normal2", "reduce2", "normal3")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What is searched, and how big the supernet is.

    Args:
      cell_ops: op names of a cell edge, in canonical order (α's last axis).
      stage_ops: op names of a stage edge.
      steps: intermediate nodes per cell (4).
      cells: "shared" (DARTS: one normal + one reduce α) or "stage_specific" (H^c-DAS: five groups).
      stage: "chain" (no stage search), "shared" (one DAG α for all stages, H^s-DAS*) or
        "stage_specific" (one per stage, H^s-DAS).
      window: m, the number of latest states a stage cell may read
        (BUILD_NOTES "Stage DAGs, the sliding window and β").
      stage_lengths: cells per stage in a stage supernet.
      min_cells, max_cells: the candidate stage lengths of the cell-distribution (β) search;
        ``max_cells=None`` means no distribution search.
      layers, init_channels, num_classes: the chain supernet's L, C and classes.
      edge_ops: per cell α group, per edge, the ops that edge may use (a subset of ``cell_ops``, at least one of
        them not 'none'); ``None`` = every edge uses every op. StacNAS stage 2 restricts each edge to its
        winning cluster (``hdas_tf.clusters``). Given as ``{group: [[op, ...], ...]}`` or as (group, edges)
        pairs; stored as pairs in ``cell_groups`` order, each op set in ``cell_ops`` order. α keeps its full
        [edges, len(cell_ops)] shape; the ops an edge may not use get probability 0 (``op_mask``).
    """

    cell_ops: tuple[str, ...] = CELL_OPS
    stage_ops: tuple[str, ...] = STAGE_OPS
    steps: int = 4
    cells: str = "shared"
    stage: str = "chain"
    window: int = 3
    stage_lengths: tuple[int, int, int] = (6, 6, 6)
    min_cells: int = 4
    max_cells: int | None = None
    layers: int = 8
    init_channels: int = 16
    num_classes: int = 10
    edge_ops: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] | None = None

    def __post_init__(self):
        if self.cells not in CELL_SHARING:
            raise ValueError(f"cells must be one of {CELL_SHARING}, received {self.cells!r}")
        if self.stage not in STAGE_LEVELS:
            raise ValueError(f"stage must be one of {STAGE_LEVELS}, received {self.stage!r}")
        for name, ops, known in (("cell_ops", self.cell_ops, CELL_OPS), ("stage_ops", self.stage_ops, STAGE_OPS)):
            unknown = [o for o in ops if o not in known]
            if unknown or not ops:
                raise ValueError(f"{name}: unknown or empty op set {list(ops)}; choose from {list(known)}")
            if len(set(ops)) != len(ops):
                raise ValueError(f"{name}: duplicate ops in {list(ops)}")
        if self.steps < 1 or self.window < 1 or self.init_channels < 1 or self.num_classes < 2:
            raise ValueError(
                f"steps, window, init_channels must be >= 1 and num_classes >= 2; received steps={self.steps}, "
                f"window={self.window}, init_channels={self.init_channels}, num_classes={self.num_classes}")
        if self.layers < 3:
            raise ValueError(f"layers must be >= 3 (two reduction cells and a normal one), received {self.layers}")
        if len(self.stage_lengths) != 3 or any(n < 1 for n in self.stage_lengths):
            raise ValueError(f"stage_lengths must be three positive integers, received {self.stage_lengths}")
        if self.max_cells is not None and not 2 <= self.min_cells <= self.max_cells:
            raise ValueError(
                f"need 2 <= min_cells <= max_cells, received min_cells={self.min_cells}, max_cells={self.max_cells}")
        if self.edge_ops is not None:
            object.__setattr__(self, "edge_ops", self._checked_edge_ops(self.edge_ops))

    def _checked_edge_ops(self, edge_ops):
        if self.stage != "chain":
            raise ValueError("edge_ops (per-edge op sets) apply to a cell search (stage='chain') only")
        pairs = dict(edge_ops.items() if isinstance(edge_ops, dict) else edge_ops)
        if set(pairs) != set(self.cell_groups):
            raise ValueError(f"edge_ops: groups {sorted(pairs)} do not match the cell groups {list(self.cell_groups)} "
                             f"of cells={self.cells!r}")
        out = []
        for group in self.cell_groups:
            per_edge = list(pairs[group])
            if len(per_edge) != self.edges_per_cell:
                raise ValueError(f"edge_ops[{group!r}]: {len(per_edge)} edges; {self.steps} nodes have "
                                 f"{self.edges_per_cell}")
            edges = []
            for k, names in enumerate(per_edge):
                names = [names] if isinstance(names, str) else list(names)
                unknown = [o for o in names if o not in self.cell_ops]
                if unknown:
                    raise ValueError(f"edge_ops[{group!r}] edge {k}: ops {unknown} are not in cell_ops "
                                     f"{list(self.cell_ops)}")
                if not any(o != "none" for o in names):
                    raise ValueError(f"edge_ops[{group!r}] edge {k}: needs at least one op other than 'none', "
                                     f"received {names}")
                edges.append(tuple(o for o in self.cell_ops if o in names))
            out.append((group, tuple(edges)))
        return tuple(out)

    # === cell level ===

    @property
    def cell_groups(self) -> tuple[str, ...]:
        return SHARED_GROUPS if self.cells == "shared" else STAGE_SPECIFIC_GROUPS

    @property
    def edges_per_cell(self) -> int:
        return sum(i + 2 for i in range(self.steps))

    def reduction_indices(self, layers: int | None = None) -> tuple[int, int]:
        layers = self.layers if layers is None else layers
        return layers // 3, 2 * layers // 3

    def cell_group(self, index: int, layers: int | None = None) -> str:
        """The α group of chain cell ``index``: its stage position for stage-specific cells
        (BUILD_NOTES "Cells, chains and stage-specific cells")."""
        r1, r2 = self.reduction_indices(layers)
        if self.cells == "shared":
            return "reduce" if index in (r1, r2) else "normal"
        if index < r1:
            return "normal1"
        if index == r1:
            return "reduce1"
        if index < r2:
            return "normal2"
        if index == r2:
            return "reduce2"
        return "normal3"

    def edge_op_names(self, group: str) -> tuple[tuple[str, ...], ...]:
        """The ops each edge of α group ``group`` may use (every op unless ``edge_ops`` restricts them)."""
        if self.edge_ops is None:
            return (self.cell_ops,) * self.edges_per_cell
        return dict(self.edge_ops)[group]

    def op_mask(self, group: str) -> np.ndarray:
        """bool [edges, len(cell_ops)]: which α entries of ``group`` are searched."""
        return np.array([[o in names for o in self.cell_ops] for names in self.edge_op_names(group)])

    # === stage level ===

    @property
    def cells_per_stage(self) -> tuple[int, int, int]:
        """Cells built per stage: N_max in a distribution search, else the stage lengths."""
        if self.max_cells is not None:
            return (self.max_cells,) * 3
        return tuple(self.stage_lengths)

    def sources(self, j: int) -> int:
        """How many states stage cell j (0-based) reads: the last min(m, j + 2)."""
        return min(self.window, j + 2)

    @property
    def candidate_lengths(self) -> tuple[int, ...]:
        if self.max_cells is None:
            return ()
        return tuple(range(self.min_cells, self.max_cells + 1))

    # === architecture variables ===

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every architecture variable this space searches."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.stage == "chain":
            for group in self.cell_groups:
                shapes[f"alpha_{group}"] = (self.edges_per_cell, len(self.cell_ops))
            return shapes
        # Stage search: one α row per stage edge, the edges of a stage concatenated cell by cell. A shared
        # α serves every stage and is sized for the longest one (shorter stages read its first rows).
        rows = [sum(self.sources(j) for j in range(n)) for n in self.cells_per_stage]
        if self.stage == "shared":
            shapes["alpha_stage"] = (max(rows), len(self.stage_ops))
        else:
            for s, r in enumerate(rows):
                shapes[f"alpha_stage{s + 1}"] = (r, len(self.stage_ops))
        if self.max_cells is not None:
            for s in range(3):
                shapes[f"beta_stage{s + 1}"] = (len(self.candidate_lengths),)
        return shapes

    def num_arch_params(self) -> int:
        return sum(math.prod(s) for s in self.arch_shapes().values())


def space_to_config(space: SearchSpace) -> dict:
    """JSON-ready dict of a SearchSpace (tuples become lists; ``edge_ops`` a {group: [[op, ...], ...]} dict)."""
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(space).items()}
    if space.edge_ops is not None:
        config["edge_ops"] = {g: [list(ops) for ops in edges] for g, edges in space.edge_ops}
    return config


def space_from_config(config: dict) -> SearchSpace:
    """Inverse of ``space_to_config``."""
    return SearchSpace(**{k: (v if k == "edge_ops" else tuple(v) if isinstance(v, list) else v)
                          for k, v in config.items()})


# === search-space sizes (log10 of the number of discrete architectures) ===

def _log10_choose_edges(num_sources: int, k: int, num_ops: int) -> float:
    k = min(k, num_sources)
    return math.log10(math.comb(num_sources, k)) + k * math.log10(num_ops)


def log10_cell_space(steps: int = 4, num_ops: int = 7, k: int = 2) -> float:
    """One cell: node i picks k of its i+2 inputs, each with one of the non-'none' ops."""
    return sum(_log10_choose_edges(i + 2, k, num_ops) for i in range(steps))


def log10_stage_space(n_cells: int, window: int = 3, num_ops: int = 3, k: int = 2) -> float:
    """One stage DAG of ``n_cells``: cell j picks k of its last min(m, j+2) states, one op each."""
    return sum(_log10_choose_edges(min(window, j + 2), k, num_ops) for j in range(n_cells))


def log10_distribution_stage_space(min_cells: int, max_cells: int, window: int = 3, num_ops: int = 3,
                                   k: int = 2) -> float:
    """One stage whose length is searched too: Σ_n over candidate lengths of the DAGs of n cells."""
    total = sum(10 ** log10_stage_space(n, window, num_ops, k) for n in range(min_cells, max_cells + 1))
    return math.log10(total)


def log10_cell_space_per_edge(steps: int, ops_per_edge, k: int = 2) -> float:
    """One cell whose edges have their own op counts (α rows node by node): node i picks k of its i+2 inputs,
    each with one of that edge's non-'none' ops — Σ over the k-subsets of the product of their counts."""
    total, start = 0.0, 0
    for i in range(steps):
        counts = list(ops_per_edge[start:start + i + 2])
        start += i + 2
        total += math.log10(sum(math.prod(c) for c in itertools.combinations(counts, min(k, len(counts)))))
    return total


def log10_cell_level_size(space: SearchSpace) -> float:
    """log10 of the number of cell choices: one cell per α group (2 shared, 5 stage-specific)."""
    if space.edge_ops is not None:
        return sum(log10_cell_space_per_edge(space.steps, [len([o for o in ops if o != "none"]) for ops in edges])
                   for _, edges in space.edge_ops)
    non_none = len([o for o in space.cell_ops if o != "none"])
    return len(space.cell_groups) * log10_cell_space(space.steps, non_none)


def log10_stage_level_size(space: SearchSpace) -> float:
    """log10 of the number of stage DAGs (and stage lengths, in a distribution search); 0 for a chain."""
    if space.stage == "chain":
        return 0.0
    non_none = len([o for o in space.stage_ops if o != "none"])
    if space.max_cells is not None:
        per_stage = [log10_distribution_stage_space(space.min_cells, space.max_cells, space.window, non_none)] * 3
    else:
        per_stage = [log10_stage_space(n, space.window, non_none) for n in space.stage_lengths]
    # A shared DAG is one choice serving every stage.
    return sum(per_stage) if space.stage == "stage_specific" else max(per_stage)


def log10_space_size(space: SearchSpace) -> float:
    """log10 of the number of architectures: cell choices × stage choices."""
    return log10_cell_level_size(space) + log10_stage_level_size(space)

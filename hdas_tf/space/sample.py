"""Random architectures drawn uniformly from the space a search explores: the random baselines of the H-DAS
ablation (the "Furthermore…" paragraph: a searched architecture against the mean of random ones, as a
relative improvement, ``hdas_tf.train.relative_improvement``).

The space is the one a ``SearchSpace`` describes and ``derive`` reads a genotype from: a cell node keeps two
distinct predecessors, each with one non-'none' op; a stage cell keeps min(2, window) distinct states of its
sliding window, each with one non-'none' stage op, and the stage output is its last two cells. Every such
architecture is equally likely (BUILD_NOTES "Paper protocols, baselines and RI").
"""

from __future__ import annotations

import numpy as np

from hdas_tf.space.genotypes import CellGenotype, Genotype, StageGenotype
from hdas_tf.space.search_space import SearchSpace

KINDS = ("cell", "stage")
EDGES_PER_NODE = 2  # k of the top-k derivation (DARTS, H-DAS)


def _non_none(ops) -> tuple[str, ...]:
    ops = tuple(o for o in ops if o != "none")
    if not ops:
        raise ValueError("the op set has no op other than 'none'; there is nothing to sample")
    return ops


def _edges(rng: np.random.Generator, sources, ops, k: int) -> tuple:
    """k distinct sources drawn without replacement (every k-subset equally likely), each with a uniform op;
    listed by source, so that one architecture has one spelling."""
    picked = sorted(int(s) for s in rng.choice(np.asarray(sources), size=min(k, len(sources)), replace=False))
    return tuple((ops[int(rng.integers(len(ops)))], s) for s in picked)


def sample_cell(rng: np.random.Generator, ops, steps: int = 4, k: int = EDGES_PER_NODE) -> CellGenotype:
    """One cell: node i reads k distinct sources of 0..i+1, each through a uniformly drawn non-'none' op; the
    output concatenates every node, as a derived cell does."""
    ops = _non_none(ops)
    nodes = tuple(_edges(rng, range(i + 2), ops, k) for i in range(steps))
    return CellGenotype(nodes=nodes, concat=tuple(range(2, steps + 2)))


def sample_stage(rng: np.random.Generator, n_cells: int, window: int, ops, k: int = EDGES_PER_NODE) -> StageGenotype:
    """One stage DAG of ``n_cells``: cell j reads k distinct states of its window, the last min(window, j+2)
    (BUILD_NOTES "Stage DAGs, the sliding window and β"), each through a uniformly drawn non-'none' stage op; the
    output is the last two cells."""
    ops = _non_none(ops)
    cells = tuple(_edges(rng, range(j + 2 - min(window, j + 2), j + 2), ops, k) for j in range(n_cells))
    return StageGenotype(cells=cells, concat=(n_cells, n_cells + 1))


def sample_genotype(rng: np.random.Generator, space: SearchSpace, kind: str, cells: Genotype | None = None,
                    name: str | None = None) -> Genotype:
    """One architecture of ``space``.

    Args:
      rng: the generator to draw from.
      space: the search space; ``kind='cell'`` reads its cell groups (``cells``: shared or stage-specific),
        op set and steps; ``kind='stage'`` its stage sharing, window, stage lengths and stage ops.
      kind: 'cell' (a cell search's space) or 'stage' (an H^s-DAS stage search's space).
      cells: for ``kind='stage'``, the fixed cell genotype the stage DAGs are put on (as a stage search does).
      name: the genotype's name.
    """
    if kind == "cell":
        if space.edge_ops is not None:
            raise ValueError("per-edge op sets (StacNAS stage 2) are not sampled; sample the full cell space")
        return Genotype(cells={g: sample_cell(rng, space.cell_ops, space.steps) for g in space.cell_groups}, name=name)
    if kind != "stage":
        raise ValueError(f"kind must be one of {KINDS}, received {kind!r}")
    if space.stage == "chain":
        raise ValueError("a stage sample needs a stage-level space: stage='shared' or 'stage_specific'")
    if cells is None or cells.cells is None:
        raise ValueError("a stage sample needs a cell genotype with cells to put the stage DAGs on (e.g. DARTS_V2)")
    lengths = tuple(space.stage_lengths)
    if space.stage == "shared":
        if len(set(lengths)) != 1:
            raise ValueError(f"one DAG shared by all stages needs equal stage lengths, received {list(lengths)}")
        stages = (sample_stage(rng, lengths[0], space.window, space.stage_ops),)
    else:
        stages = tuple(sample_stage(rng, n, space.window, space.stage_ops) for n in lengths)
    return Genotype(cells=dict(cells.cells), stages=stages, stage_lengths=lengths, name=name)


def sample_genotypes(space: SearchSpace, kind: str, num: int, seed: int, cells: Genotype | None = None,
                     prefix: str = "random") -> list[Genotype]:
    """``num`` architectures; sample i is drawn from its own stream (seed, i), so it is the same whatever
    ``num`` is (the first 5 of 10 samples are the 5 samples of ``num=5``). Each one is validated, with the
    window for stage samples."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive integer, received {num!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, received {seed!r}")
    out = []
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        genotype = sample_genotype(rng, space, kind, cells, name=f"{prefix}_{kind}_s{seed}_{i:03d}")
        genotype.validate(window=space.window if kind == "stage" else None)
        out.append(genotype)
    return out

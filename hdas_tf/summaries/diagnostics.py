"""Collapse diagnostics of a search, from α and the derived genotypes (BUILD_NOTES "TensorBoard and inspection").

- ``alpha_entropy``: mean over edges of the entropy of softmax(α) (natural log); uniform α gives log(#ops),
  a decided edge 0. A search whose entropy stays at log(#ops) has not started to choose.
- ``skip_connections``: skip edges in a derived normal cell. DARTS collapses towards cells of parameter-free
  skips; two or more is the warning sign, and DARTS+ stops the search there (``--stop_on_skips``).
- ``changed_edges``: edges of a cell or stage DAG not in the previous epoch's genotype (as a multiset per
  node / cell): 0 for a settled search.
- ``dead_cells``: stage cells with no path to the output (``derive.dead_cells``).
- ``expected_stage_depth``: the expected depth of a stage's last cell under α (the depth loss's d_j, paper
  Eq. 2), averaged over softmax(β) of the candidate lengths in a distribution search; small means shallow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from hdas_tf.space import genotypes as gt
from hdas_tf.space.derive import dead_cells

SKIP = "skip_connect"
SKIP_WARNING = 2  # skips in a normal cell from which a log warning is written


def softmax(x, mask=None) -> np.ndarray:
    """softmax over the last axis, over the ``mask``ed-in entries only (the others get 0)."""
    x = np.asarray(x, dtype=np.float64)
    if mask is not None:
        x = np.where(np.asarray(mask, dtype=bool), x, -np.inf)
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def alpha_entropy(probs) -> float:
    """Mean over rows (edges) of −Σ p log p, natural log; 0·log 0 counts as 0."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"alpha_entropy: expected [edges, ops] probabilities, received shape {p.shape}")
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(terms.sum(axis=1).mean())


def skip_connections(cell: gt.CellGenotype) -> int:
    """Number of ``skip_connect`` edges in a cell."""
    return sum(op == SKIP for node in cell.nodes for op, _ in node)


def normal_skips(genotype: gt.Genotype, groups: Sequence[str] | None = None) -> dict[str, int]:
    """Skip count of every normal cell of ``genotype`` (or of the cell groups named in ``groups``)."""
    if genotype.cells is None:
        return {}
    keys = [k for k in genotype.cells if k.startswith("normal")] if groups is None else list(groups)
    return {k: skip_connections(genotype.cells[k]) for k in keys if k.startswith("normal")}


def _edge_lists(item) -> tuple:
    return item.nodes if isinstance(item, gt.CellGenotype) else item.cells


def changed_edges(before, after) -> int:
    """Edges of ``after`` (a CellGenotype or StageGenotype) that ``before`` lacks, node by node (cell by cell
    for stages) as multisets of (op, source); nodes or cells only one of them has count all their edges."""
    old, new = _edge_lists(before), _edge_lists(after)
    changed = 0
    for i in range(max(len(old), len(new))):
        a = Counter(old[i]) if i < len(old) else Counter()
        b = Counter(new[i]) if i < len(new) else Counter()
        changed += max(sum((b - a).values()), sum((a - b).values()))
    return changed


def expected_stage_depth(depths_of: Callable[[int], Sequence[float]], n_cells: int, beta=None,
                         candidate_lengths: Sequence[int] = ()) -> float:
    """The expected depth of the stage's last cell: d_{n-1} from ``depths_of(n_cells)`` (the n expected
    depths d_0..d_{n-1}), or with β, Σ_n softmax(β)_n · d_{n-1} over the candidate lengths n."""
    d = np.asarray(depths_of(n_cells), dtype=np.float64)
    if beta is None:
        return float(d[-1])
    b = softmax(beta)
    return float(sum(p * d[n - 1] for p, n in zip(b, candidate_lengths)))


def genotype_diagnostics(genotype: gt.Genotype, previous: gt.Genotype | None, items) -> dict[str, float]:
    """The genotype-level diagnostics as ``{"diagnostics/<name>/<key>": value}``.

    Args:
      genotype: this epoch's genotype.
      previous: the previous epoch's genotype, or None (no ``changed_edges`` then).
      items: (key, CellGenotype or StageGenotype) pairs of the searched parts, e.g. the searched cell groups
        of a cell search or the stage DAGs of a stage search (``genotype_parts`` keys).
    """
    out = {}
    prev = dict(genotype_parts(previous)) if previous is not None else {}
    for key, item in items:
        if isinstance(item, gt.CellGenotype):
            if key.startswith("normal"):
                out[f"diagnostics/skip_connections/{key}"] = float(skip_connections(item))
        else:
            out[f"diagnostics/dead_cells/{key}"] = float(len(dead_cells(item)))
        if key in prev:
            out[f"diagnostics/changed_edges/{key}"] = float(changed_edges(prev[key], item))
    return out


def genotype_parts(genotype: gt.Genotype) -> list[tuple[str, object]]:
    """(key, CellGenotype or StageGenotype) of every cell and stage DAG, in genotype order. Keys are the α
    short names of a search: the cell key ("normal", "reduce2", …), "stage1".."stage3", or "stage" for one DAG
    shared by all stages."""
    cells = genotype.cells or {}
    canonical = gt.STAGE_SPECIFIC_KEYS + gt.SHARED_KEYS
    keys = [k for k in canonical if k in cells] + [k for k in cells if k not in canonical]
    items = [(key, cells[key]) for key in keys]
    stages = genotype.stages or ()
    for s, stage in enumerate(stages):
        items.append(("stage" if len(stages) == 1 else f"stage{s + 1}", stage))
    return items

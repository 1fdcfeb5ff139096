"""Random architectures (hdas_tf.space.sample): every sample is a valid genotype of the searched space, samples
are reproducible from the seed, and they are uniform over the whole space — a chi-square test of op
frequencies and of each node's source pair against the uniform expectation, which a deliberately biased
sampler fails."""

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from hdas_tf.space.genotypes import CellGenotype
from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS
from hdas_tf.space.registry import REGISTRY
from hdas_tf.space.sample import sample_cell, sample_genotype, sample_genotypes, sample_stage
from hdas_tf.space.search_space import SearchSpace

CELL_NON_NONE = [o for o in CELL_OPS if o != "none"]  # 7 ops
STAGE_NON_NONE = [o for o in STAGE_OPS if o != "none"]  # max_pool_3x3, avg_pool_3x3, skip_connect
P_MIN = 1e-3  # a uniform sampler passes at this level with the fixed seeds below


def _uniformity_p_values(node_edges, candidates, ops):
    """p-values of chi-square tests against the uniform law: one for the op of every edge (all edges pooled),
    one per node for its source pair (every 2-subset of the node's candidate sources equally likely).

    node_edges: per node, the list of its edge tuples over all samples. candidates: per node, its sources.
    """
    op_counts = Counter(op for edges in node_edges for edge in edges for op, _ in edge)
    assert set(op_counts) <= set(ops)
    p = {"ops": chisquare([op_counts[o] for o in ops]).pvalue}
    for n, (edges, sources) in enumerate(zip(node_edges, candidates)):
        pairs = list(itertools.combinations(sources, 2))
        if len(pairs) < 2:
            continue  # one possible pair: nothing to test
        counts = Counter(tuple(sorted(src for _, src in edge)) for edge in edges)
        assert set(counts) <= set(pairs)
        p[f"node {n} sources"] = chisquare([counts[pair] for pair in pairs]).pvalue
    return p


def _cell_p_values(draw, n=3000, seed=11):
    rng = np.random.default_rng(seed)
    cells = [draw(rng) for _ in range(n)]
    node_edges = [[cell.nodes[i] for cell in cells] for i in range(4)]
    return _uniformity_p_values(node_edges, [range(i + 2) for i in range(4)], CELL_NON_NONE)


def test_cell_ops_and_source_pairs_are_uniform():
    p = _cell_p_values(lambda rng: sample_cell(rng, CELL_OPS))
    assert len(p) == 4  # ops + nodes 1..3 (node 0 has only the pair (0, 1))
    assert min(p.values()) > P_MIN, p


def test_biased_cell_samplers_fail_the_same_test():
    # 'skip_connect' listed twice (as a sampler that mapped 'none' to a skip would draw it): skip twice as likely.
    skewed_ops = list(CELL_OPS) + ["skip_connect"]
    p = _cell_p_values(lambda rng: sample_cell(rng, skewed_ops))
    assert p["ops"] < 1e-6 and min(v for k, v in p.items() if k != "ops") > P_MIN

    def adjacent_sources(rng):  # node i reads two neighbouring sources only: the pair (0, 2) never appears
        nodes = []
        for i in range(4):
            s = int(rng.integers(i + 1))
            nodes.append(tuple((CELL_NON_NONE[int(rng.integers(7))], src) for src in (s, s + 1)))
        return CellGenotype(nodes=tuple(nodes))

    p = _cell_p_values(adjacent_sources)
    assert p["ops"] > P_MIN and max(p[f"node {i} sources"] for i in (1, 2, 3)) < 1e-6


def test_stage_ops_and_window_sources_are_uniform():
    window, n_cells = 4, 5
    rng = np.random.default_rng(5)
    stages = [sample_stage(rng, n_cells, window, STAGE_OPS) for _ in range(3000)]
    node_edges = [[stage.cells[j] for stage in stages] for j in range(n_cells)]
    windows = [range(j + 2 - min(window, j + 2), j + 2) for j in range(n_cells)]
    p = _uniformity_p_values(node_edges, windows, STAGE_NON_NONE)
    assert len(p) == 1 + 4 and min(p.values()) > P_MIN, p
    # A sampler whose window is one state too narrow (m = 3 for the space's m = 4) fails it from cell 2 on,
    # where the two windows differ (cells 0 and 1 have fewer than three earlier states either way).
    narrow = [sample_stage(rng, n_cells, 3, STAGE_OPS) for _ in range(3000)]
    p = _uniformity_p_values([[s.cells[j] for s in narrow] for j in range(n_cells)], windows, STAGE_NON_NONE)
    assert p["ops"] > P_MIN and p["node 1 sources"] > P_MIN
    assert max(p[f"node {j} sources"] for j in (2, 3, 4)) < 1e-6


def test_every_sample_is_a_valid_genotype_of_its_space():
    stage_space = SearchSpace(stage="stage_specific", window=3, stage_lengths=(4, 6, 5))
    for g in sample_genotypes(stage_space, "stage", 50, seed=1, cells=REGISTRY["DARTS_V2"]):
        g.validate(window=3)
        assert g.cells == REGISTRY["DARTS_V2"].cells and g.stage_lengths == (4, 6, 5)
        for stage, n in zip(g.stages, (4, 6, 5)):
            assert len(stage.cells) == n and stage.concat == (n, n + 1)
            for j, cell in enumerate(stage.cells):
                sources = [src for _, src in cell]
                assert len(cell) == 2 and len(set(sources)) == 2 and min(sources) >= j + 2 - 3
                assert all(op in STAGE_NON_NONE for op, _ in cell)
    specific = sample_genotypes(SearchSpace(cells="stage_specific"), "cell", 50, seed=2)
    for g in specific:
        g.validate()
        assert g.cell_sharing == "stage_specific" and g.stages is None
        for cell in g.cells.values():
            assert cell.concat == (2, 3, 4, 5)
            for i, node in enumerate(cell.nodes):
                sources = [src for _, src in node]
                assert len(set(sources)) == 2 and max(sources) <= i + 1
                assert all(op in CELL_NON_NONE for op, _ in node)
    # five independent cells: in 50 samples, some differ between groups
    assert any(len(set(g.cells.values())) > 1 for g in specific)


def test_shared_stage_dag_and_window_of_one():
    shared = sample_genotype(np.random.default_rng(0), SearchSpace(stage="shared", stage_lengths=(3, 3, 3)), "stage",
                             REGISTRY["DARTS_V2"])
    assert len(shared.stages) == 1
    shared.validate(window=3)
    # m = 1: cell j has one candidate state (the newest), so one edge, as the derivation keeps min(k, rows)
    one = sample_genotype(np.random.default_rng(0), SearchSpace(stage="stage_specific", window=1,
                                                                stage_lengths=(3, 3, 3)), "stage", REGISTRY["HC_DAS"])
    assert all(len(cell) == 1 and cell[0][1] == j + 1 for stage in one.stages for j, cell in enumerate(stage.cells))


def test_reproducible_from_the_seed():
    space = SearchSpace(cells="shared")
    first = sample_genotypes(space, "cell", 6, seed=42)
    assert first == sample_genotypes(space, "cell", 6, seed=42)
    assert sample_genotypes(space, "cell", 3, seed=42) == first[:3]  # sample i depends on (seed, i) only
    other = sample_genotypes(space, "cell", 6, seed=43)
    assert [g.cells for g in other] != [g.cells for g in first]
    assert [g.name for g in first] == [f"random_cell_s42_{i:03d}" for i in range(6)]


@pytest.mark.parametrize("space, kind, cells, message", [
    (SearchSpace(), "stage", REGISTRY["DARTS_V2"], "stage-level space"),
    (SearchSpace(stage="stage_specific"), "stage", None, "needs a cell genotype"),
    (SearchSpace(stage="stage_specific"), "stage", REGISTRY["HS_DAS_CIFAR"], "needs a cell genotype"),
    (SearchSpace(stage="shared", stage_lengths=(4, 6, 6)), "stage", REGISTRY["DARTS_V2"], "equal stage lengths"),
    (SearchSpace(), "network", None, "kind must be one of"),
])
def test_bad_requests_are_refused(space, kind, cells, message):
    with pytest.raises(ValueError, match=message):
        sample_genotypes(space, kind, 1, seed=0, cells=cells)

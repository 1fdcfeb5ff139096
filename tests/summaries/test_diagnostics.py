"""hdas_tf.summaries.diagnostics on hand-set α and hand-built genotypes (values known without the code)."""

import math

import numpy as np
import pytest

from hdas_tf.space import genotypes as gt
from hdas_tf.summaries import diagnostics as D

# Two skip connections (node 0 and node 2) in the normal cell, one in the reduce cell.
NORMAL = gt.CellGenotype(nodes=((("skip_connect", 0), ("sep_conv_3x3", 1)),
                                (("sep_conv_3x3", 0), ("max_pool_3x3", 2)),
                                (("skip_connect", 1), ("dil_conv_3x3", 3)),
                                (("sep_conv_5x5", 0), ("avg_pool_3x3", 4))))
REDUCE = gt.CellGenotype(nodes=((("max_pool_3x3", 0), ("max_pool_3x3", 1)),
                                (("skip_connect", 2), ("max_pool_3x3", 1)),
                                (("max_pool_3x3", 0), ("skip_connect", 2)),
                                (("skip_connect", 2), ("max_pool_3x3", 1))))


def test_entropy_of_uniform_alpha_is_log_op_count():
    assert D.alpha_entropy(D.softmax(np.zeros((14, 8)))) == pytest.approx(math.log(8))
    assert D.alpha_entropy(D.softmax(np.full((5, 4), 3.7))) == pytest.approx(math.log(4))


def test_entropy_of_a_decided_edge_is_zero_and_rows_average():
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert D.alpha_entropy(p) == pytest.approx(math.log(4) / 2)  # (0 + log 4) / 2
    p2 = np.array([[0.5, 0.5, 0.0]])
    assert D.alpha_entropy(p2) == pytest.approx(math.log(2))


def test_masked_softmax_is_uniform_over_the_searched_ops():
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    p = D.softmax(np.zeros((2, 4)), mask)
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0, 0.0], [0.25] * 4])
    assert D.alpha_entropy(p) == pytest.approx((math.log(2) + math.log(4)) / 2)


def test_skip_count_of_known_cells():
    assert D.skip_connections(NORMAL) == 2
    assert D.skip_connections(REDUCE) == 3
    g = gt.Genotype(cells={"normal": NORMAL, "reduce": REDUCE})
    assert D.normal_skips(g) == {"normal": 2}  # reduction cells do not count
    assert D.normal_skips(g, ["reduce"]) == {}


def test_changed_edges_of_known_cells():
    assert D.changed_edges(NORMAL, NORMAL) == 0
    # Node 1 swaps one op, node 3 swaps both edges: 1 + 2 changed edges; the order within a node is irrelevant.
    after = gt.CellGenotype(nodes=((("sep_conv_3x3", 1), ("skip_connect", 0)),
                                   (("sep_conv_3x3", 0), ("avg_pool_3x3", 2)),
                                   (("skip_connect", 1), ("dil_conv_3x3", 3)),
                                   (("skip_connect", 2), ("skip_connect", 3))))
    assert D.changed_edges(NORMAL, after) == 3
    assert D.changed_edges(after, NORMAL) == 3


def test_changed_edges_of_stages_of_different_lengths():
    short = gt.StageGenotype(cells=((("skip_connect", 0), ("skip_connect", 1)),
                                    (("max_pool_3x3", 1), ("skip_connect", 2))), concat=(2, 3))
    longer = gt.StageGenotype(cells=((("skip_connect", 0), ("skip_connect", 1)),
                                     (("avg_pool_3x3", 1), ("skip_connect", 2)),
                                     (("skip_connect", 2), ("skip_connect", 3))), concat=(3, 4))
    # cell 1 changes one edge; cell 2 exists only in the longer stage: its 2 edges count.
    assert D.changed_edges(short, longer) == 3


def test_expected_stage_depth_with_and_without_beta():
    depths = lambda n: [1.0, 2.0, 3.0, 4.0][:n]  # noqa: E731
    assert D.expected_stage_depth(depths, 4) == 4.0
    # softmax([0, log 3]) = [1/4, 3/4] over lengths 3 and 4: 1/4·d_2 + 3/4·d_3 = 0.75 + 3.
    assert D.expected_stage_depth(depths, 4, np.array([0.0, math.log(3.0)]), (3, 4)) == pytest.approx(3.75)


def test_genotype_diagnostics_tags():
    before = gt.Genotype(cells={"normal": NORMAL, "reduce": REDUCE})
    after = gt.Genotype(cells={"normal": NORMAL, "reduce": gt.CellGenotype(nodes=REDUCE.nodes[:3] + (
        (("max_pool_3x3", 2), ("max_pool_3x3", 1)),))})
    values = D.genotype_diagnostics(after, before, D.genotype_parts(after))
    assert values == {"diagnostics/skip_connections/normal": 2.0, "diagnostics/changed_edges/normal": 0.0,
                      "diagnostics/changed_edges/reduce": 1.0}
    assert "diagnostics/changed_edges/normal" not in D.genotype_diagnostics(after, None, D.genotype_parts(after))


def test_genotype_parts_keys():
    stage = gt.StageGenotype(cells=((("skip_connect", 0), ("skip_connect", 1)),), concat=(1, 2))
    g = gt.Genotype(cells={"normal": NORMAL, "reduce": REDUCE}, stages=(stage, stage, stage))
    assert [k for k, _ in D.genotype_parts(g)] == ["normal", "reduce", "stage1", "stage2", "stage3"]
    shared = gt.Genotype(cells=None, stages=(stage,))
    assert [k for k, _ in D.genotype_parts(shared)] == ["stage"]

"""Tests of hdas_tf.space.derive: genotypes parsed from α, and dead stage cells."""

import re

import numpy as np
import pytest

from hdas_tf.space import derive as D
from hdas_tf.space import genotypes as G
from hdas_tf.space.genotypes import CellGenotype, Genotype, StageGenotype
from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS
from hdas_tf.space.registry import REGISTRY

SKIP, MAX, AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
SEP3, DIL3 = "sep_conv_3x3", "dil_conv_3x3"


# === Parsing α ===


def _alphas_for_cell(cell, op_names=CELL_OPS):
    """α under which the cell is the unique parse: the e-th listed edge of a node gets logit 3 - e on its op."""
    rows = []
    for i, node in enumerate(cell.nodes):
        block = np.zeros((i + 2, len(op_names)))
        for e, (op, src) in enumerate(node):
            block[src, op_names.index(op)] = 3.0 - e
        rows.append(block)
    return np.concatenate(rows)


@pytest.mark.parametrize("ranking", ["softmax", "logit"])
def test_parse_cell_alphas_reproduces_every_registry_cell(ranking):
    for g in REGISTRY.values():
        for cell in (g.cells or {}).values():
            assert D.parse_cell_alphas(_alphas_for_cell(cell), ranking=ranking) == cell


def test_parse_cell_alphas_ties_and_none():
    # Uniform α: every score ties, so the lower sources win, each with the first non-'none' op.
    cell = D.parse_cell_alphas(np.zeros((14, 8)))
    assert cell == CellGenotype(((("max_pool_3x3", 0), ("max_pool_3x3", 1)),) * 4, (2, 3, 4, 5))
    # 'none' strongest everywhere: still never chosen; the op is the argmax over the other ops.
    a = np.zeros((14, 8))
    a[:, 7] = 5.0
    a[0, CELL_OPS.index("dil_conv_5x5")] = 1.0
    assert D.parse_cell_alphas(a).nodes[0] == (("dil_conv_5x5", 0), ("max_pool_3x3", 1))


def test_parse_cell_alphas_softmax_and_logit_pick_different_edges():
    ops = ("skip_connect", "sep_conv_3x3", "none")
    a = np.array(
        [
            # node 0: sources 0, 1
            [1.0, 0.0, 0.0],  # softmax skip = e/(e+2) = 0.576
            [0.0, 2.0, 0.0],  # softmax sep = e²/(e²+2) = 0.787
            # node 1: sources 0, 1, 2
            [3.0, 0.0, 10.0],  # logit 3 (largest), but 'none' dominates: softmax skip = 0.0009
            [2.0, 0.0, 0.0],  # logit 2, softmax 0.787
            [0.0, 1.0, 0.0],  # logit 1, softmax 0.576
        ]
    )
    soft = D.parse_cell_alphas(a, op_names=ops, steps=2, ranking="softmax")
    logit = D.parse_cell_alphas(a, op_names=ops, steps=2, ranking="logit")
    assert soft == CellGenotype(
        (((SEP3, 1), (SKIP, 0)), ((SKIP, 1), (SEP3, 2))), concat=(2, 3)
    )
    assert logit == CellGenotype(
        (((SEP3, 1), (SKIP, 0)), ((SKIP, 0), (SKIP, 1))), concat=(2, 3)
    )


def test_parse_cell_alphas_op_subset_k_and_concat():
    ops = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none")  # a StacNAS-style set
    a = np.zeros((5, 5))
    a[1, 3] = 1.0  # node 0, source 1 -> dil_conv_3x3
    a[4, 2] = 2.0  # node 1, source 2 -> sep_conv_3x3
    cell = D.parse_cell_alphas(a, op_names=ops, steps=2, k=1, concat=(3,))
    assert cell == CellGenotype((((DIL3, 1),), ((SEP3, 2),)), concat=(3,))
    # k larger than a node's in-degree keeps all of its edges.
    assert len(D.parse_cell_alphas(a, op_names=ops, steps=2, k=3).nodes[0]) == 2
    with pytest.raises(ValueError, match=re.escape("cell alphas: expected shape (14, 8), got (5, 5)")):
        D.parse_cell_alphas(a)
    with pytest.raises(ValueError, match="cell alphas: contains non-finite values"):
        D.parse_cell_alphas(np.full((14, 8), np.nan))
    with pytest.raises(ValueError, match="ranking must be 'softmax' or 'logit', got 'max'"):
        D.parse_cell_alphas(np.zeros((14, 8)), ranking="max")


def _stage_alphas():
    """Six cells, window 3, STAGE_OPS columns (max, avg, skip, none); rows are the window positions."""
    z = lambda n: np.zeros((n, 4))  # noqa: E731
    cells = [z(2), z(3), z(3), z(3), z(3), z(3)]
    cells[0][0, 2], cells[0][1, 0] = 2.0, 1.0  # states 0, 1: skip 0 > max 1
    cells[1][1, 1], cells[1][2, 2] = 2.0, 3.0  # states 0, 1, 2: skip 2 > avg 1
    cells[2][0, 0], cells[2][2, 2] = 2.0, 1.0  # states 1, 2, 3: max 1 > skip 3
    cells[3][0, 2], cells[3][1, 0] = 2.0, 1.0  # states 2, 3, 4: skip 2 > max 3 (cell 2 = state 4 unused)
    cells[4][0, 2], cells[4][2, 1] = 2.0, 3.0  # states 3, 4, 5: avg 5 > skip 3
    cells[5][1, 2], cells[5][2, 2] = 1.0, 2.0  # states 4, 5, 6: skip 6 > skip 5
    return cells


@pytest.mark.parametrize("ranking", ["softmax", "logit"])
def test_parse_stage_alphas_window_maps_rows_to_states_and_finds_dead_cells(ranking):
    stage, dead = D.parse_stage_alphas(_stage_alphas(), window=3, ranking=ranking)
    assert stage == StageGenotype(
        cells=(
            ((SKIP, 0), (MAX, 1)),
            ((SKIP, 2), (AVG, 1)),
            ((MAX, 1), (SKIP, 3)),
            ((SKIP, 2), (MAX, 3)),
            ((AVG, 5), (SKIP, 3)),
            ((SKIP, 6), (SKIP, 5)),
        ),
        concat=(6, 7),
    )
    assert dead == [2]
    Genotype(cells=None, stages=(stage,)).validate(window=3)
    # The argmax-β pair as output: cells 3 and 4; cell 5 is after it and dead too.
    stage, dead = D.parse_stage_alphas(_stage_alphas(), window=3, ranking=ranking, concat=(5, 6))
    assert stage.concat == (5, 6)
    assert dead == [2, 5]


def test_parse_stage_alphas_full_window_reproduces_registry_dags():
    for name in ("HS_DAS_CIFAR", "HS_DAS_IMAGENET"):
        for stage in REGISTRY[name].stages:
            n = len(stage.cells)
            alphas = []
            for j, cell in enumerate(stage.cells):
                a = np.zeros((j + 2, len(STAGE_OPS)))  # window n+1: every earlier state is a candidate
                for e, (op, src) in enumerate(cell):
                    a[src, STAGE_OPS.index(op)] = 3.0 - e
                alphas.append(a)
            assert D.parse_stage_alphas(alphas, window=n + 1) == (stage, [])


def test_parse_stage_alphas_errors():
    alphas = _stage_alphas()
    alphas[2] = np.zeros((4, 4))
    with pytest.raises(ValueError, match=re.escape("stage alphas cell 2: expected shape (3, 4), got (4, 4)")):
        D.parse_stage_alphas(alphas, window=3)
    with pytest.raises(ValueError, match=re.escape("parsed stage concat: state index 9 out of range")):
        D.parse_stage_alphas(_stage_alphas(), window=3, concat=(6, 9))
    with pytest.raises(ValueError, match="window must be a positive integer"):
        D.parse_stage_alphas(_stage_alphas(), window=0)


def test_chain_stage_and_dead_cells():
    assert G.chain_stage(3) == StageGenotype(
        cells=(((SKIP, 0), (SKIP, 1)), ((SKIP, 1), (SKIP, 2)), ((SKIP, 2), (SKIP, 3))), concat=(3, 4)
    )
    assert D.dead_cells(G.chain_stage(6)) == []
    # Output = the two stage inputs: every cell is dead.
    assert D.dead_cells(StageGenotype(G.chain_stage(3).cells, concat=(0, 1))) == [0, 1, 2]
    # Output = cells 0 and 2 of a chain: cell 2 reads cell 1, so nothing is dead.
    assert D.dead_cells(StageGenotype(G.chain_stage(3).cells, concat=(2, 4))) == []
    with pytest.raises(ValueError, match="a chain stage needs a positive number of cells, got 0"):
        G.chain_stage(0)


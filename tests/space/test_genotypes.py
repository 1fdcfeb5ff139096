"""Tests of hdas_tf.space.genotypes: the JSON document, validation messages, access, save and load."""

import json
import os
import re

import pytest

from hdas_tf.space import genotypes as G
from hdas_tf.space.genotypes import FORMAT, CellGenotype, Genotype, StageGenotype
from hdas_tf.space.registry import REGISTRY

SKIP, MAX, AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
SEP3, DIL3 = "sep_conv_3x3", "dil_conv_3x3"
DARTS_V2_NORMAL = [(SEP3, 0), (SEP3, 1), (SEP3, 0), (SEP3, 1), (SEP3, 1), (SKIP, 0), (SKIP, 0), (DIL3, 2)]
DARTS_V2_REDUCE = [(MAX, 0), (MAX, 1), (SKIP, 2), (MAX, 1), (MAX, 0), (SKIP, 2), (SKIP, 2), (MAX, 1)]


def _pairs(flat):
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))



# === JSON ===


@pytest.mark.parametrize("name", list(REGISTRY))
def test_json_round_trip(name, tmp_path):
    g = REGISTRY[name]
    back = Genotype.from_json(g.to_json())
    assert back == g
    assert hash(back) == hash(g)
    path = tmp_path / f"{name}.json"
    g.save(path)
    assert Genotype.load(path) == g
    assert os.listdir(tmp_path) == [f"{name}.json"]  # the atomic write leaves no temp file behind
    assert json.loads(path.read_text())["format"] == FORMAT


def test_to_dict_layout():
    d = REGISTRY["DARTS_V2"].to_dict()
    assert list(d) == ["format", "name", "cells"]
    assert d["cells"]["normal"]["nodes"][3] == [["skip_connect", 0], ["dil_conv_3x3", 2]]
    assert d["cells"]["normal"]["concat"] == [2, 3, 4, 5]
    tiny = Genotype(cells=None, stages=(G.chain_stage(2),), stage_lengths=(2, 2, 2), name="tiny")
    assert tiny.to_dict() == {
        "format": FORMAT,
        "name": "tiny",
        "stages": [{"cells": [[[SKIP, 0], [SKIP, 1]], [[SKIP, 1], [SKIP, 2]]], "concat": [2, 3]}],
        "stage_lengths": [2, 2, 2],
    }
    assert Genotype.from_dict(tiny.to_dict()) == tiny


def test_from_dict_hand_written_without_format_and_bare_node_lists():
    nodes = lambda flat: [[list(a), list(b)] for a, b in _pairs(flat)]  # noqa: E731
    g = Genotype.from_dict({"cells": {"normal": nodes(DARTS_V2_NORMAL), "reduce": nodes(DARTS_V2_REDUCE)}})
    assert g.name is None
    assert g.cells == REGISTRY["DARTS_V2"].cells
    assert g.cells["reduce"].concat == (2, 3, 4, 5)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "g.json"
    REGISTRY["DARTS_V1"].save(path)
    REGISTRY["PDARTS"].save(str(path))
    assert Genotype.load(str(path)) == REGISTRY["PDARTS"]
    assert os.listdir(tmp_path) == ["g.json"]


# === Validation: one case per kind of problem, the message names the entry ===


def _darts():
    return REGISTRY["DARTS_V2"].to_dict()


def _hs():
    return REGISTRY["HS_DAS_CIFAR"].to_dict()


def _set(d, path, value):
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


BAD_DOCUMENTS = [
    (
        _set(_darts(), ["cells", "normal", "nodes", 2, 1, 0], "sep_conv_7x7"),
        "cell 'normal' node 2 edge 1: unknown op 'sep_conv_7x7'; known ops: max_pool_3x3, avg_pool_3x3",
    ),
    (
        _set(_darts(), ["cells", "reduce", "nodes", 0, 0, 0], "none"),
        "cell 'reduce' node 0 edge 0: op 'none' is not allowed",
    ),
    (
        _set(_darts(), ["cells", "normal", "nodes", 0, 0, 0], 3),
        "cell 'normal' node 0 edge 0: op must be a string, got 3",
    ),
    (
        _set(_hs(), ["stages", 1, "cells", 3, 0, 0], SEP3),
        "stage 1 cell 3 edge 0: unknown op 'sep_conv_3x3'; known ops: max_pool_3x3, avg_pool_3x3, skip_connect",
    ),
    (_set(_hs(), ["stages", 2, "cells", 0, 0, 0], "none"), "stage 2 cell 0 edge 0: op 'none' is not allowed"),
    (
        _set(_darts(), ["cells", "reduce", "nodes", 1, 0, 1], 3),
        "cell 'reduce' node 1 edge 0: source 3 out of range; valid sources are 0..2",
    ),
    (
        _set(_darts(), ["cells", "normal", "nodes", 0, 1, 1], -1),
        "cell 'normal' node 0 edge 1: source -1 out of range; valid sources are 0..1",
    ),
    (
        _set(_darts(), ["cells", "normal", "nodes", 0, 1, 1], 1.0),
        "cell 'normal' node 0 edge 1: source must be an integer, got 1.0",
    ),
    (
        _set(_darts(), ["cells", "normal", "nodes", 0, 1, 1], "1"),
        "cell 'normal' node 0 edge 1: source must be an integer, got '1'",
    ),
    (
        _set(_darts(), ["cells", "normal", "nodes", 0, 1, 1], True),
        "cell 'normal' node 0 edge 1: source must be an integer, got True",
    ),
    (
        _set(_darts(), ["cells", "normal", "nodes", 3], [[SKIP, 0], [DIL3, 0]]),
        "cell 'normal' node 3 edge 1: duplicate source 0 (edge 0 already reads it)",
    ),
    (
        _set(_hs(), ["stages", 0, "cells", 0, 1, 1], 2),
        "stage 0 cell 0 edge 1: source 2 out of range; valid sources are 0..1",
    ),
    (
        _set(_hs(), ["stages", 0, "cells", 4], [[MAX, 3], [SKIP, 3]]),
        "stage 0 cell 4 edge 1: duplicate source 3 (edge 0 already reads it)",
    ),
    (_set(_darts(), ["cells", "normal", "nodes", 1], []), "cell 'normal' node 1 has no edges"),
    (_set(_darts(), ["cells", "normal", "nodes"], []), "cell 'normal': nodes must be a non-empty list"),
    (_set(_darts(), ["cells", "normal", "nodes"], "abc"), "cell 'normal': nodes must be a list of nodes"),
    (_set(_darts(), ["cells", "normal", "nodes", 0, 0], [SEP3]), "cell 'normal' node 0 edge 0: expected [op, source]"),
    (
        _set(_darts(), ["cells", "normal", "nodes", 0], SEP3),
        "cell 'normal' node 0: expected a list of [op, source] edges",
    ),
    (
        _set(_darts(), ["cells", "normal", "concat"], [2, 3, 4, 6]),
        "cell 'normal' concat: index 6 out of range; valid indices are 2..5",
    ),
    (
        _set(_darts(), ["cells", "reduce", "concat"], [0, 2, 3, 4, 5]),
        "cell 'reduce' concat: index 0 out of range; valid indices are 2..5",
    ),
    (_set(_darts(), ["cells", "reduce", "concat"], [2, 2, 3]), "cell 'reduce' concat: duplicate index"),
    (_set(_darts(), ["cells", "normal", "extra"], 1), "cell 'normal': expected keys 'nodes' and optionally 'concat'"),
    (_set(_darts(), ["cells", "normal"], 5), "cell 'normal': expected an object with 'nodes' or a list of nodes"),
    (
        _set(_darts(), ["cells", "normal1"], _darts()["cells"]["normal"]),
        "cells: keys [\"'normal'\", \"'normal1'\", \"'reduce'\"] are neither exactly ['normal', 'reduce']",
    ),
    (_set(_darts(), ["cells"], [1, 2]), "cells must be an object mapping cell key to cell, got list"),
    (_set(_hs(), ["stages"], _hs()["stages"][:2]), "stages: expected 3 stage DAGs (stage-specific) or 1"),
    (_set(_hs(), ["stages"], {"a": 1}), "stages must be a list of stage DAGs, got dict"),
    (_set(_hs(), ["stages", 1], [1]), "stage 1: expected an object with 'cells' and 'concat'"),
    (_set(_hs(), ["stages", 0, "concat"], [6, 6]), "stage 0 concat: the two state indices must differ, got [6, 6]"),
    (_set(_hs(), ["stages", 2, "concat"], [6, 8]), "stage 2 concat: state index 8 out of range; valid states are 0..7"),
    (_set(_hs(), ["stages", 0, "concat"], [7]), "stage 0 concat: expected two state indices, got (7,)"),
    (_set(_hs(), ["stages", 0, "concat"], [6, "7"]), "stage 0 concat: expected two state indices"),
    (_set(_hs(), ["stage_lengths"], [6, 6]), "stage_lengths: expected 3 positive integers (cells per stage)"),
    (_set(_hs(), ["stage_lengths"], [6, 0, 6]), "stage_lengths: expected 3 positive integers (cells per stage)"),
    (_set(_hs(), ["stage_lengths"], 6), "stage_lengths: expected 3 positive integers (cells per stage)"),
    (_set(_hs(), ["stage_lengths"], [6, 5, 6]), "stage 1: the DAG has 6 cells but stage_lengths[1] is 5"),
    (_set(_darts(), ["format"], "hdas_tf.genotype/2"), "unsupported genotype format 'hdas_tf.genotype/2'"),
    ({"name": "x"}, "not a genotype document: no 'format' key"),
    ({"format": FORMAT}, "genotype is empty: it has neither cells nor stages"),
    ([1, 2], "a genotype document must be a JSON object, got list"),
    (_set(_hs(), ["stage_length"], [6, 6, 6]), "unknown genotype document keys ['stage_length']"),
    (_set(_darts(), ["name"], 5), "name must be a string, got 5"),
]


@pytest.mark.parametrize("doc, message", BAD_DOCUMENTS, ids=[m[:48] for _, m in BAD_DOCUMENTS])
def test_bad_documents_raise_value_error_naming_the_entry(doc, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Genotype.from_dict(doc)


def test_bad_genotype_objects_raise_value_error():
    darts = REGISTRY["DARTS_V2"]
    with pytest.raises(ValueError, match=re.escape("cell 'normal': expected a CellGenotype, got str")):
        Genotype(cells={"normal": "x", "reduce": darts.cells["reduce"]}).validate()
    with pytest.raises(ValueError, match=re.escape("stage 0: expected a StageGenotype, got CellGenotype")):
        Genotype(cells=None, stages=(darts.cells["normal"],)).validate()
    message = "stages: expected 3 stage DAGs (stage-specific) or 1 (shared by all"
    with pytest.raises(ValueError, match=re.escape(message)):
        Genotype(cells=dict(darts.cells), stages=(G.chain_stage(6),) * 2).validate()
    with pytest.raises(ValueError, match="window must be a positive integer"):
        REGISTRY["HS_DAS_CIFAR"].validate(window=0)
    with pytest.raises(ValueError, match="not a genotype JSON document"):
        Genotype.from_json("{not json")


def test_validate_cell_and_stage_with_other_op_sets():
    cell = CellGenotype((((SEP3, 0), (SKIP, 1)),), concat=(2,))
    G.validate_cell(cell, "cell 'x'", op_names=(SEP3, SKIP))
    message = "cell 'x' node 0 edge 1: unknown op 'skip_connect'; known ops: sep_conv_3x3"
    with pytest.raises(ValueError, match=re.escape(message)):
        G.validate_cell(cell, "cell 'x'", op_names=(SEP3, "none"))
    # Three inputs: node 0 may read sources 0..2.
    G.validate_cell(CellGenotype((((SEP3, 2),),), concat=(3,)), "c", inputs=3)
    with pytest.raises(ValueError, match=re.escape("c node 0 edge 0: source 2 out of range; valid sources are 0..1")):
        G.validate_cell(CellGenotype((((SEP3, 2),),), concat=(2,)), "c")
    stage = StageGenotype(cells=(((SKIP, 0), (MAX, 1)),), concat=(1, 2))
    G.validate_stage(stage, "s")
    message = "s cell 0 edge 1: unknown op 'max_pool_3x3'; known ops: skip_connect"
    with pytest.raises(ValueError, match=re.escape(message)):
        G.validate_stage(stage, "s", op_names=(SKIP, "none"))


# === Access: cell_for, stage_for, with_stages ===


def test_cell_for_shared_and_stage_specific():
    darts, hc = REGISTRY["DARTS_V2"], REGISTRY["HC_DAS"]
    for group, key in [("normal", "normal"), ("normal1", "normal"), ("normal2", "normal"), ("normal3", "normal"),
                       ("reduce", "reduce"), ("reduce1", "reduce"), ("reduce2", "reduce")]:
        assert darts.cell_for(group) is darts.cells[key]
    for group in G.STAGE_SPECIFIC_KEYS:
        assert hc.cell_for(group) is hc.cells[group]
    assert hc.cell_for("normal2") != hc.cell_for("normal3")
    with pytest.raises(ValueError, match="'HC_DAS' has stage-specific cells .* not 'normal'"):
        hc.cell_for("normal")
    with pytest.raises(ValueError, match="'HS_DAS_CIFAR' has no cells"):
        REGISTRY["HS_DAS_CIFAR"].cell_for("normal1")
    with pytest.raises(ValueError, match="unknown cell group 'normal4'"):
        darts.cell_for("normal4")


def test_stage_for():
    hs = REGISTRY["HS_DAS_CIFAR"]
    assert [hs.stage_for(s) for s in range(3)] == list(hs.stages)
    shared = Genotype(cells=dict(REGISTRY["DARTS_V2"].cells), stages=(G.chain_stage(4),))
    assert [shared.stage_for(s) for s in range(3)] == [G.chain_stage(4)] * 3
    lengths_only = Genotype(cells=dict(REGISTRY["DARTS_V2"].cells), stage_lengths=(4, 5, 6))
    lengths_only.validate()
    assert [len(lengths_only.stage_for(s).cells) for s in range(3)] == [4, 5, 6]
    with pytest.raises(ValueError, match="has no stage DAGs"):
        REGISTRY["DARTS_V2"].stage_for(0)
    with pytest.raises(ValueError, match="stage index must be 0, 1 or 2, got 3"):
        hs.stage_for(3)


def test_with_stages():
    g = REGISTRY["DARTS_V2"].with_stages(REGISTRY["HS_DAS_CIFAR"])
    g.validate(window=3)
    assert g.name == "DARTS_V2+HS_DAS_CIFAR"
    assert g.cells == REGISTRY["DARTS_V2"].cells
    assert g.stages == REGISTRY["HS_DAS_CIFAR"].stages
    assert g.stage_lengths is None
    assert (g.cell_sharing, g.cell_for("reduce2")) == ("shared", REGISTRY["DARTS_V2"].cells["reduce"])
    assert Genotype.from_json(g.to_json()) == g
    lengths = Genotype(cells=None, stages=REGISTRY["HS_DAS_CIFAR"].stages, stage_lengths=(6, 6, 6))
    assert REGISTRY["HC_DAS"].with_stages(lengths).stage_lengths == (6, 6, 6)


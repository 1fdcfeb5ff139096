"""Tests of hdas_tf.genotypes: JSON format, validation messages, safe PyTorch import, α parsing, registry."""

import copy
import json
import os
import re

import numpy as np
import pytest

from hdas_tf.space import genotypes as G
from hdas_tf.space.genotypes import (
    CELL_OPS,
    FORMAT,
    REGISTRY,
    STAGE_OPS,
    CellGenotype,
    Genotype,
    StageGenotype,
)

SKIP, MAX, AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
SEP3, DIL3 = "sep_conv_3x3", "dil_conv_3x3"

# The DARTS repository's DARTS_V2 string, verbatim in form (flat lists, list concat).
DARTS_V2_TORCH = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)
DARTS_V2_NORMAL = [(SEP3, 0), (SEP3, 1), (SEP3, 0), (SEP3, 1), (SEP3, 1), (SKIP, 0), (SKIP, 0), (DIL3, 2)]
DARTS_V2_REDUCE = [(MAX, 0), (MAX, 1), (SKIP, 2), (MAX, 1), (MAX, 0), (SKIP, 2), (SKIP, 2), (MAX, 1)]

HC_DAS_TORCH = """HC_DAS = Genotype3(
    normal1=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
             ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 3)],
    normal1_concat=range(2, 6),
    reduce1=[('max_pool_3x3', 0), ('skip_connect', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 2),
             ('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), ('dil_conv_3x3', 4)],
    reduce1_concat=range(2, 6),
    normal2=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1),
             ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1)],
    normal2_concat=range(2, 6),
    reduce2=[('dil_conv_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('dil_conv_5x5', 2),
             ('max_pool_3x3', 0), ('dil_conv_5x5', 3), ('max_pool_3x3', 0), ('skip_connect', 4)],
    reduce2_concat=range(2, 6),
    normal3=[('dil_conv_5x5', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('dil_conv_3x3', 2),
             ('dil_conv_3x3', 0), ('sep_conv_5x5', 2), ('sep_conv_5x5', 3), ('sep_conv_3x3', 4)],
    normal3_concat=[2, 3, 4, 5],
)
"""

# H-DAS repository style: nested lists (one list per cell), concat as a range.
HS_DAS_CIFAR_TORCH = """Genotype2(
    DAG1=[[('skip_connect', 0), ('skip_connect', 1)], [('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('max_pool_3x3', 2)], [('max_pool_3x3', 2), ('skip_connect', 4)],
          [('max_pool_3x3', 3), ('skip_connect', 5)], [('max_pool_3x3', 4), ('skip_connect', 6)]],
    DAG1_concat=range(6, 8),
    DAG2=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('skip_connect', 2)], [('max_pool_3x3', 2), ('skip_connect', 3)],
          [('max_pool_3x3', 3), ('skip_connect', 5)], [('avg_pool_3x3', 4), ('skip_connect', 6)]],
    DAG2_concat=range(6, 8),
    DAG3=[[('skip_connect', 0), ('skip_connect', 1)], [('skip_connect', 1), ('skip_connect', 2)],
          [('skip_connect', 2), ('skip_connect', 3)], [('max_pool_3x3', 2), ('skip_connect', 3)],
          [('max_pool_3x3', 3), ('skip_connect', 5)], [('max_pool_3x3', 4), ('max_pool_3x3', 5)]],
    DAG3_concat=range(6, 8))
"""

# Flat lists (2 edges per cell), list concat.
HS_DAS_IMAGENET_TORCH = (
    "Genotype2(DAG1=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 0), ('skip_connect', 2), "
    "('skip_connect', 2), ('skip_connect', 3), ('skip_connect', 2), ('avg_pool_3x3', 4)], DAG1_concat=[4, 5], "
    "DAG2=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 1), ('skip_connect', 2), "
    "('skip_connect', 2), ('skip_connect', 3), ('skip_connect', 3), ('skip_connect', 4)], DAG2_concat=[4, 5], "
    "DAG3=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 1), ('skip_connect', 2), "
    "('skip_connect', 2), ('skip_connect', 3), ('max_pool_3x3', 2), ('skip_connect', 3)], DAG3_concat=[4, 5])"
)


def _pairs(flat):
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


# === Registry ===


def test_registry_names_and_kinds():
    assert list(REGISTRY) == [
        "DARTS_V1",
        "DARTS_V2",
        "PDARTS",
        "PC_DARTS",
        "NOISY_DARTS_A",
        "STACNAS_CIFAR10",
        "HC_DAS",
        "HS_DAS_CIFAR",
        "HS_DAS_IMAGENET",
    ]
    kinds = {name: (g.cell_sharing, None if g.stages is None else len(g.stages)) for name, g in REGISTRY.items()}
    assert kinds == {
        "DARTS_V1": ("shared", None),
        "DARTS_V2": ("shared", None),
        "PDARTS": ("shared", None),
        "PC_DARTS": ("shared", None),
        "NOISY_DARTS_A": ("shared", None),
        "STACNAS_CIFAR10": ("shared", None),
        "HC_DAS": ("stage_specific", None),
        "HS_DAS_CIFAR": (None, 3),
        "HS_DAS_IMAGENET": (None, 3),
    }
    for name, g in REGISTRY.items():
        assert g.name == name


def test_registry_transcription_spot_checks():
    assert REGISTRY["DARTS_V2"].cells["normal"].nodes == _pairs(DARTS_V2_NORMAL)
    assert REGISTRY["DARTS_V2"].cells["reduce"].concat == (2, 3, 4, 5)
    assert REGISTRY["PDARTS"].cells["normal"].nodes[3] == ((SEP3, 0), ("dil_conv_5x5", 4))
    assert REGISTRY["HC_DAS"].cells["reduce2"].nodes[0] == ((DIL3, 1), (MAX, 0))
    assert REGISTRY["HS_DAS_CIFAR"].stages[1].cells[5] == ((AVG, 4), (SKIP, 6))
    assert [s.concat for s in REGISTRY["HS_DAS_CIFAR"].stages] == [(6, 7)] * 3
    assert [len(s.cells) for s in REGISTRY["HS_DAS_IMAGENET"].stages] == [4, 4, 4]
    assert [s.concat for s in REGISTRY["HS_DAS_IMAGENET"].stages] == [(4, 5)] * 3


def test_registry_stage_dags_fit_window_3_and_have_no_dead_cells():
    for name in ("HS_DAS_CIFAR", "HS_DAS_IMAGENET"):
        REGISTRY[name].validate(window=3)
        assert [G.dead_cells(s) for s in REGISTRY[name].stages] == [[], [], []]
    with pytest.raises(ValueError, match=re.escape(
        "stage 0 cell 1 edge 0: source 0 is outside the sliding window of 2 states; valid sources are 1..2"
    )):
        REGISTRY["HS_DAS_CIFAR"].validate(window=2)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        REGISTRY["DARTS_V2"].cells["normal"] = REGISTRY["DARTS_V1"].cells["normal"]
    assert copy.deepcopy(REGISTRY["DARTS_V2"]) == REGISTRY["DARTS_V2"]


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


# === Safe import of PyTorch strings ===


def test_import_darts_v2_string():
    g = G.from_pytorch_string(DARTS_V2_TORCH)
    assert g.cells == REGISTRY["DARTS_V2"].cells
    assert g.name is None
    assert G.from_pytorch_string("DARTS_V2 = " + DARTS_V2_TORCH) == REGISTRY["DARTS_V2"]
    assert G.from_pytorch_string(DARTS_V2_TORCH, name="DARTS_V2") == REGISTRY["DARTS_V2"]


def test_import_positional_range_and_nested_forms():
    normal, reduce = repr(DARTS_V2_NORMAL), repr(DARTS_V2_REDUCE)
    positional = G.from_pytorch_string(f"Genotype({normal}, range(2, 6), {reduce}, range(2, 6))")
    assert positional.cells == REGISTRY["DARTS_V2"].cells
    nested_normal = repr([list(p) for p in _pairs(DARTS_V2_NORMAL)])
    nested_reduce = repr([list(p) for p in _pairs(DARTS_V2_REDUCE)])
    nested = G.from_pytorch_string(
        f"Genotype(normal={nested_normal}, normal_concat=range(2, 6), "
        f"reduce={nested_reduce}, reduce_concat=range(2, 6))"
    )
    assert nested.cells == REGISTRY["DARTS_V2"].cells
    no_concat = G.from_pytorch_string(f"Genotype(normal={normal}, reduce={reduce})")
    assert no_concat.cells == REGISTRY["DARTS_V2"].cells


def test_import_genotype3_and_genotype2():
    assert G.from_pytorch_string(HC_DAS_TORCH) == REGISTRY["HC_DAS"]
    cifar = G.from_pytorch_string(HS_DAS_CIFAR_TORCH, name="HS_DAS_CIFAR")
    assert cifar == REGISTRY["HS_DAS_CIFAR"]
    assert cifar.cells is None
    imagenet = G.from_pytorch_string(HS_DAS_IMAGENET_TORCH)
    assert imagenet.stages == REGISTRY["HS_DAS_IMAGENET"].stages


def test_import_flat_quark0_list():
    g = G.from_pytorch_string(repr(DARTS_V2_NORMAL + DARTS_V2_REDUCE))
    assert g.cells == REGISTRY["DARTS_V2"].cells
    with pytest.raises(ValueError, match="a bare list must hold 16 .op, source. pairs.*got 8 entries"):
        G.from_pytorch_string(repr(DARTS_V2_NORMAL))


MALICIOUS = [
    ("__import__('os').system('echo hi')", "unsupported construct: call of a non-name (Attribute) at line 1, column 1"),
    ("__import__('os')", "unsupported construct: call of '__import__' at line 1, column 1"),
    ("Genotype(normal=os.system('echo hi'), reduce=[])", "call of a non-name (Attribute) at line 1, column 17"),
    ("Genotype(normal=PRIMITIVES, reduce=[])", "unsupported construct Name at line 1, column 17"),
    ("(lambda: 1)()", "call of a non-name (Lambda)"),
    ("Genotype(normal=[x for x in range(3)], reduce=[])", "unsupported construct ListComp at line 1, column 17"),
    ("Genotype(normal=[('sep_conv_3x3', 0)] * 8, reduce=[])", "unsupported construct BinOp at line 1, column 17"),
    ("Genotype(normal=[], normal_concat=range(10 ** 9), reduce=[])", "unsupported construct BinOp"),
    (
        "Genotype(normal=[], normal_concat=range(0, 100000000), reduce=[])",
        "range(...) at line 1, column 35 has 100000000",
    ),
    ("Genotype(**{'normal': []})", "unsupported construct: **-argument in Genotype(...)"),
    ("Genotype(normal=[], reduce=[], evil=1)", "Genotype(...) at line 1, column 1: unknown field 'evil'"),
    ("Genotype(normal=[])", "Genotype(...) at line 1, column 1 is missing field 'reduce'"),
    ("Genotype(normal=Genotype(normal=[], reduce=[]), reduce=[])", "nested Genotype(...) at line 1, column 17"),
    ("import os", "unsupported statement Import at line 1, column 1"),
    ("a = 1\nb = 2", "found 2 statements"),
    ("'just a string'", "expected Genotype(...), Genotype2(...), Genotype3(...) or a list of 16 edges"),
    ("Genotype(normal=[", "not a genotype string: syntax error at line 1"),
    ("open('/etc/passwd').read()", "call of a non-name (Attribute)"),
    ("Genotype(normal=[(f'{x}', 0)], reduce=[])", "unsupported construct JoinedStr"),
]


@pytest.mark.parametrize("text, message", MALICIOUS, ids=[t[:40] for t, _ in MALICIOUS])
def test_import_rejects_anything_but_literals(text, message, capfd):
    with pytest.raises(ValueError, match=re.escape(message)):
        G.from_pytorch_string(text)
    assert "hi" not in capfd.readouterr().out


def test_import_validates_the_result():
    with pytest.raises(ValueError, match=re.escape("cell 'normal' node 3 edge 1: unknown op 'sep_conv_7x7'")):
        G.from_pytorch_string(DARTS_V2_TORCH.replace("('dil_conv_3x3', 2)", "('sep_conv_7x7', 2)"))
    with pytest.raises(ValueError, match=re.escape("cell 'normal' node 0 edge 1: source -1 out of range")):
        G.from_pytorch_string(
            "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', -1)], "
            "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)])"
        )
    with pytest.raises(ValueError, match="a flat edge list holds 2 edges per node; got an odd number .3."):
        G.from_pytorch_string(
            "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], reduce=[])"
        )


def test_load_pytorch_string_file_and_errors_name_the_path(tmp_path):
    py = tmp_path / "genotype.txt"
    py.write_text("DARTS_V2 = " + DARTS_V2_TORCH + "\n")
    assert Genotype.load(py) == REGISTRY["DARTS_V2"]
    bad = tmp_path / "bad.json"
    bad.write_text("this is not a genotype")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: neither a genotype JSON document")):
        Genotype.load(bad)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(_set(_darts(), ["cells", "normal", "nodes", 1], [])))
    with pytest.raises(ValueError, match=re.escape(f"{invalid}: cell 'normal' node 1 has no edges")):
        Genotype.load(invalid)
    evil = tmp_path / "evil.py"
    evil.write_text("__import__('os').system('echo hi')")
    with pytest.raises(ValueError, match=re.escape(f"{evil}: neither a genotype JSON document")):
        Genotype.load(evil)
    evil.write_text("Genotype(normal=__import__('os').system('echo hi'), reduce=[])")
    message = f"{evil}: unsupported construct: call of a non-name (Attribute) at line 1, column 17"
    with pytest.raises(ValueError, match=re.escape(message)):
        Genotype.load(evil)
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=re.escape(f"genotype file {str(missing)!r} does not exist")):
        Genotype.load(missing)


# === resolve ===


def test_resolve(tmp_path):
    assert G.resolve("darts_v2") is REGISTRY["DARTS_V2"]
    assert G.resolve("Hs_Das_Cifar") is REGISTRY["HS_DAS_CIFAR"]
    path = tmp_path / "mine.json"
    REGISTRY["PC_DARTS"].save(path)
    assert G.resolve(str(path)) == REGISTRY["PC_DARTS"]
    assert G.resolve(path) == REGISTRY["PC_DARTS"]
    with pytest.raises(ValueError, match=r"unknown genotype 'nope': not a registry name \(known: DARTS_V1, DARTS_V2, "
                                         r"PDARTS, .*HS_DAS_IMAGENET\) and the file 'nope' does not exist"):
        G.resolve("nope")
    with pytest.raises(ValueError, match="exists but is not a file"):
        G.resolve(str(tmp_path))


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
            assert G.parse_cell_alphas(_alphas_for_cell(cell), ranking=ranking) == cell


def test_parse_cell_alphas_ties_and_none():
    # Uniform α: every score ties, so the lower sources win, each with the first non-'none' op.
    cell = G.parse_cell_alphas(np.zeros((14, 8)))
    assert cell == CellGenotype(((("max_pool_3x3", 0), ("max_pool_3x3", 1)),) * 4, (2, 3, 4, 5))
    # 'none' strongest everywhere: still never chosen; the op is the argmax over the other ops.
    a = np.zeros((14, 8))
    a[:, 7] = 5.0
    a[0, CELL_OPS.index("dil_conv_5x5")] = 1.0
    assert G.parse_cell_alphas(a).nodes[0] == (("dil_conv_5x5", 0), ("max_pool_3x3", 1))


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
    soft = G.parse_cell_alphas(a, op_names=ops, steps=2, ranking="softmax")
    logit = G.parse_cell_alphas(a, op_names=ops, steps=2, ranking="logit")
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
    cell = G.parse_cell_alphas(a, op_names=ops, steps=2, k=1, concat=(3,))
    assert cell == CellGenotype((((DIL3, 1),), ((SEP3, 2),)), concat=(3,))
    # k larger than a node's in-degree keeps all of its edges.
    assert len(G.parse_cell_alphas(a, op_names=ops, steps=2, k=3).nodes[0]) == 2
    with pytest.raises(ValueError, match=re.escape("cell alphas: expected shape (14, 8), got (5, 5)")):
        G.parse_cell_alphas(a)
    with pytest.raises(ValueError, match="cell alphas: contains non-finite values"):
        G.parse_cell_alphas(np.full((14, 8), np.nan))
    with pytest.raises(ValueError, match="ranking must be 'softmax' or 'logit', got 'max'"):
        G.parse_cell_alphas(np.zeros((14, 8)), ranking="max")


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
    stage, dead = G.parse_stage_alphas(_stage_alphas(), window=3, ranking=ranking)
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
    stage, dead = G.parse_stage_alphas(_stage_alphas(), window=3, ranking=ranking, concat=(5, 6))
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
            assert G.parse_stage_alphas(alphas, window=n + 1) == (stage, [])


def test_parse_stage_alphas_errors():
    alphas = _stage_alphas()
    alphas[2] = np.zeros((4, 4))
    with pytest.raises(ValueError, match=re.escape("stage alphas cell 2: expected shape (3, 4), got (4, 4)")):
        G.parse_stage_alphas(alphas, window=3)
    with pytest.raises(ValueError, match=re.escape("parsed stage concat: state index 9 out of range")):
        G.parse_stage_alphas(_stage_alphas(), window=3, concat=(6, 9))
    with pytest.raises(ValueError, match="window must be a positive integer"):
        G.parse_stage_alphas(_stage_alphas(), window=0)


def test_chain_stage_and_dead_cells():
    assert G.chain_stage(3) == StageGenotype(
        cells=(((SKIP, 0), (SKIP, 1)), ((SKIP, 1), (SKIP, 2)), ((SKIP, 2), (SKIP, 3))), concat=(3, 4)
    )
    assert G.dead_cells(G.chain_stage(6)) == []
    # Output = the two stage inputs: every cell is dead.
    assert G.dead_cells(StageGenotype(G.chain_stage(3).cells, concat=(0, 1))) == [0, 1, 2]
    # Output = cells 0 and 2 of a chain: cell 2 reads cell 1, so nothing is dead.
    assert G.dead_cells(StageGenotype(G.chain_stage(3).cells, concat=(2, 4))) == []
    with pytest.raises(ValueError, match="a chain stage needs a positive number of cells, got 0"):
        G.chain_stage(0)

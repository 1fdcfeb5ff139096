"""Tests of hdas_tf.space.pytorch_import: the safe parser of PyTorch genotype strings, and loading such files."""

import json
import re

import pytest

from hdas_tf.space import pytorch_import as P
from hdas_tf.space.genotypes import Genotype
from hdas_tf.space.registry import REGISTRY

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



# === Safe import of PyTorch strings ===


def test_import_darts_v2_string():
    g = P.from_pytorch_string(DARTS_V2_TORCH)
    assert g.cells == REGISTRY["DARTS_V2"].cells
    assert g.name is None
    assert P.from_pytorch_string("DARTS_V2 = " + DARTS_V2_TORCH) == REGISTRY["DARTS_V2"]
    assert P.from_pytorch_string(DARTS_V2_TORCH, name="DARTS_V2") == REGISTRY["DARTS_V2"]


def test_import_positional_range_and_nested_forms():
    normal, reduce = repr(DARTS_V2_NORMAL), repr(DARTS_V2_REDUCE)
    positional = P.from_pytorch_string(f"Genotype({normal}, range(2, 6), {reduce}, range(2, 6))")
    assert positional.cells == REGISTRY["DARTS_V2"].cells
    nested_normal = repr([list(p) for p in _pairs(DARTS_V2_NORMAL)])
    nested_reduce = repr([list(p) for p in _pairs(DARTS_V2_REDUCE)])
    nested = P.from_pytorch_string(
        f"Genotype(normal={nested_normal}, normal_concat=range(2, 6), "
        f"reduce={nested_reduce}, reduce_concat=range(2, 6))"
    )
    assert nested.cells == REGISTRY["DARTS_V2"].cells
    no_concat = P.from_pytorch_string(f"Genotype(normal={normal}, reduce={reduce})")
    assert no_concat.cells == REGISTRY["DARTS_V2"].cells


def test_import_genotype3_and_genotype2():
    assert P.from_pytorch_string(HC_DAS_TORCH) == REGISTRY["HC_DAS"]
    cifar = P.from_pytorch_string(HS_DAS_CIFAR_TORCH, name="HS_DAS_CIFAR")
    assert cifar == REGISTRY["HS_DAS_CIFAR"]
    assert cifar.cells is None
    imagenet = P.from_pytorch_string(HS_DAS_IMAGENET_TORCH)
    assert imagenet.stages == REGISTRY["HS_DAS_IMAGENET"].stages


def test_import_flat_quark0_list():
    g = P.from_pytorch_string(repr(DARTS_V2_NORMAL + DARTS_V2_REDUCE))
    assert g.cells == REGISTRY["DARTS_V2"].cells
    with pytest.raises(ValueError, match="a bare list must hold 16 .op, source. pairs.*got 8 entries"):
        P.from_pytorch_string(repr(DARTS_V2_NORMAL))


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
        P.from_pytorch_string(text)
    assert "hi" not in capfd.readouterr().out


def test_import_validates_the_result():
    with pytest.raises(ValueError, match=re.escape("cell 'normal' node 3 edge 1: unknown op 'sep_conv_7x7'")):
        P.from_pytorch_string(DARTS_V2_TORCH.replace("('dil_conv_3x3', 2)", "('sep_conv_7x7', 2)"))
    with pytest.raises(ValueError, match=re.escape("cell 'normal' node 0 edge 1: source -1 out of range")):
        P.from_pytorch_string(
            "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', -1)], "
            "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)])"
        )
    with pytest.raises(ValueError, match="a flat edge list holds 2 edges per node; got an odd number .3."):
        P.from_pytorch_string(
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
    doc = REGISTRY["DARTS_V2"].to_dict()
    doc["cells"]["normal"]["nodes"][1] = []
    invalid.write_text(json.dumps(doc))
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


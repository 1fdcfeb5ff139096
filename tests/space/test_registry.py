"""Tests of hdas_tf.space.registry: the published genotypes and resolve."""

import copy
import re

import pytest

from hdas_tf.space import registry as R
from hdas_tf.space.derive import dead_cells
from hdas_tf.space.registry import REGISTRY

SKIP, MAX, AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
SEP3, DIL3 = "sep_conv_3x3", "dil_conv_3x3"
DARTS_V2_NORMAL = [(SEP3, 0), (SEP3, 1), (SEP3, 0), (SEP3, 1), (SEP3, 1), (SKIP, 0), (SKIP, 0), (DIL3, 2)]
DARTS_V2_REDUCE = [(MAX, 0), (MAX, 1), (SKIP, 2), (MAX, 1), (MAX, 0), (SKIP, 2), (SKIP, 2), (MAX, 1)]


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
        assert [dead_cells(s) for s in REGISTRY[name].stages] == [[], [], []]
    with pytest.raises(ValueError, match=re.escape(
        "stage 0 cell 1 edge 0: source 0 is outside the sliding window of 2 states; valid sources are 1..2"
    )):
        REGISTRY["HS_DAS_CIFAR"].validate(window=2)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        REGISTRY["DARTS_V2"].cells["normal"] = REGISTRY["DARTS_V1"].cells["normal"]
    assert copy.deepcopy(REGISTRY["DARTS_V2"]) == REGISTRY["DARTS_V2"]


# === resolve ===


def test_resolve(tmp_path):
    assert R.resolve("darts_v2") is REGISTRY["DARTS_V2"]
    assert R.resolve("Hs_Das_Cifar") is REGISTRY["HS_DAS_CIFAR"]
    path = tmp_path / "mine.json"
    REGISTRY["PC_DARTS"].save(path)
    assert R.resolve(str(path)) == REGISTRY["PC_DARTS"]
    assert R.resolve(path) == REGISTRY["PC_DARTS"]
    with pytest.raises(ValueError, match=r"unknown genotype 'nope': not a registry name \(known: DARTS_V1, DARTS_V2, "
                                         r"PDARTS, .*HS_DAS_IMAGENET\) and the file 'nope' does not exist"):
        R.resolve("nope")
    with pytest.raises(ValueError, match="exists but is not a file"):
        R.resolve(str(tmp_path))


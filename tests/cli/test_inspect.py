"""`python -m hdas_tf.inspect`: parameters and MACs of a genotype's evaluation network (the published DARTS
count through the CLI), stage networks from a cell genotype + stage DAGs, the supernet mode kept as it was,
DOT output, and flag combinations refused before any work."""

import json
import os
import subprocess
import sys

import pytest
from absl import app
from absl.testing import flagsaver

from hdas_tf.cli import inspect as inspect_main
from hdas_tf.space.registry import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.inspect", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _run(capsys, **flag_values) -> str:
    """Runs the inspect main in process with these flags; returns its stdout."""
    capsys.readouterr()
    with flagsaver.flagsaver(**flag_values):
        inspect_main.main(["inspect"])
    return capsys.readouterr().out


def test_darts_v2_cifar_published_parameter_count_through_the_cli():
    proc = _cli("--genotype=DARTS_V2", "--layout=cifar", "--init_channels=36", "--layers=20", "--pool_bn=false",
                "--json")
    report = json.loads(proc.stdout)
    assert report["params"] == 3_349_342  # the DARTS paper's CIFAR-10 figure
    assert report["params_with_aux"] == 3_349_342 + 476_426  # aux head: 576·128 + 256 + 128·768·4 + 1536 + 7690
    assert report["aux_params"] == 476_426
    assert report["macs"] == 528_359_040
    assert report["network"] == "chain" and report["layers"] == 20 and report["num_classes"] == 10


def test_stage_network_from_cells_and_a_stage_dag_file(capsys, tmp_path):
    from hdas_tf.nn.eval_networks import StageNetwork
    from hdas_tf.space.genotypes import Genotype
    from hdas_tf.nn.macs import count_macs, count_params

    # One DAG shared by all stages, two cells (a stage-only genotype file, as a stage search writes).
    dag = {"name": "tiny_dag", "stages": [{"cells": [[["skip_connect", 0], ["skip_connect", 1]],
                                                     [["max_pool_3x3", 0], ["skip_connect", 2]]], "concat": [2, 3]}]}
    (tmp_path / "dag.json").write_text(json.dumps(dag))
    report = json.loads(_run(capsys, genotype="DARTS_V2", stage_genotype=str(tmp_path / "dag.json"), init_channels=4,
                             json=True))
    net = StageNetwork(REGISTRY["DARTS_V2"].with_stages(Genotype.from_dict(dag)), 10, 4, input_shape=(32, 32, 3))
    assert report["network"] == "stage" and report["genotype"] == "DARTS_V2+tiny_dag"
    assert report["params"] == count_params(net) and report["params_with_aux"] == count_params(net, include_aux=True)
    assert report["macs"] == count_macs(net)
    assert report["stage_lengths"] == [2, 2, 2] and report["live_cells"] == [2, 2, 2] and report["layers"] == 8


def test_imagenet_defaults_and_text_output(capsys):
    # Chain network, ImageNet layout: the reference C=48, L=14, 1000 classes, 224×224 unless given.
    report = json.loads(_run(capsys, genotype="DARTS_V2", layout="imagenet", init_channels=8, layers=3, json=True))
    assert (report["num_classes"], report["image_size"], report["init_channels"], report["layers"]) == (1000, 224, 8, 3)
    text = _run(capsys, genotype="DARTS_V2", layout="imagenet", init_channels=8, layers=3)
    assert f"params: {report['params']:,}" in text and f"macs: {report['macs']:,}" in text


def test_supernet_mode_is_the_default_without_a_genotype(capsys):
    specific = json.loads(_run(capsys, cells="stage_specific", init_channels=2, layers=3, json=True))
    assert specific["supernet"] == "cell" and specific["arch_params"] == 5 * 14 * 8  # α: 5 cell groups, 14 edges, 8 ops
    shared = json.loads(_run(capsys, supernet="cell", init_channels=2, layers=3, json=True))
    assert shared["arch_params"] == 2 * 14 * 8
    assert shared["params"] == specific["params"] > 0  # sharing α changes no weight


def test_stacnas_supernets_of_both_stages(capsys, tmp_path):
    """Stage 1 has one op per cluster (+ none); stage 2 holds kernels only for each edge's cluster members."""
    from hdas_tf.space.clusters import DEFAULT_CLUSTERS, EdgeClusters

    stage1 = json.loads(_run(capsys, stacnas="clusters", init_channels=2, layers=3, json=True))
    assert stage1["cell_ops"] == ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none"]
    assert stage1["arch_params"] == 2 * 14 * 5
    path = tmp_path / "edge_clusters.json"
    path.write_text(json.dumps(EdgeClusters(DEFAULT_CLUSTERS, 4, (("normal", ("separable",) * 14),
                                                                  ("reduce", ("separable",) * 14))).to_dict()))
    stage2 = json.loads(_run(capsys, stacnas="members", edge_clusters=str(path), init_channels=2, layers=3, json=True))
    assert stage2["cell_ops"] == ["sep_conv_3x3", "sep_conv_5x5", "none"] and stage2["arch_params"] == 2 * 14 * 3
    full = json.loads(_run(capsys, init_channels=2, layers=3, json=True))
    # With every edge separable, stage 2 lacks exactly the full supernet's dilated kernels (dil k: k·k·C + C²
    # per edge, 14 edges) and the strided skips' FactorizedReduce (8 edges of a reduction cell, 2·C·C/2 each).
    # L = 3, C = 2: cells at C = 2 (normal), 4 and 8 (reductions).
    dilated = sum(14 * ((9 * c + c * c) + (25 * c + c * c)) for c in (2, 4, 8))
    strided_skips = sum(8 * 2 * c * (c // 2) for c in (4, 8))
    assert full["params"] - stage2["params"] == dilated + strided_skips
    with pytest.raises(app.UsageError, match="needs edge_clusters"):
        _run(capsys, stacnas="members", init_channels=2, layers=3, json=True)


def test_dot_prints_every_cell_and_stage_dag(capsys):
    text = _run(capsys, genotype="DARTS_V2", stage_genotype="HS_DAS_CIFAR", dot=True)
    assert text.count("digraph") == 5  # normal, reduce, three stage DAGs
    assert "sep_conv_3x3" in text and "max_pool_3x3" in text


@pytest.mark.parametrize("flags, message", [
    (dict(supernet="cell", genotype="DARTS_V2"), "takes no --genotype"),
    (dict(stage_genotype="HS_DAS_CIFAR"), "--stage_genotype needs --genotype"),
    (dict(supernet="none"), "pass --genotype"),
    (dict(dot=True), "--dot draws a genotype"),
    (dict(genotype="DARTS_V2", stacnas="clusters"), "describe a search supernet"),
])
def test_contradictory_flags_are_refused(flags, message):
    from absl import app

    with flagsaver.flagsaver(**flags), pytest.raises(app.UsageError, match=message):
        inspect_main.main(["inspect"])


def test_unknown_genotype_is_a_usage_error():
    from absl import app

    with flagsaver.flagsaver(genotype="NO_SUCH_GENOTYPE"), pytest.raises(app.UsageError, match="unknown genotype"):
        inspect_main.main(["inspect"])

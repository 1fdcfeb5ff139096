"""`python -m hdas_tf.inspect`: parameters and MACs of a genotype's evaluation network (the published DARTS
count through the CLI), stage networks from a cell genotype + stage DAGs, the cell supernet, the H^s-DAS stage
and distribution supernets (counted by hand from the layer shapes, and equal to what the search builds), DOT
output, and flag combinations refused before any work."""

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


# === stage and distribution supernets ===


def cell_params_by_hand(cell, c, c_in, reduction):
    """A fixed cell of a stage supernet, reading one c_in-wide tensor as both inputs (two 1×1 ReLUConvBN, no
    FactorizedReduce): affine BN (γ, β), its pooling BN included (--pool_bn). Ops: sep k: 2·(k·k·C + C² + 2C);
    dil k: k·k·C + C² + 2C; skip: 0, or FactorizedReduce 2·C·C/2 + 2C at stride 2; pool: 2C."""
    total = 2 * (c_in * c + 2 * c)
    for node in cell.nodes:
        for op, src in node:
            stride = 2 if reduction and src < 2 else 1
            k = int(op[-1]) if "conv" in op else 0
            total += {"sep": 2 * (k * k * c + c * c + 2 * c), "dil": k * k * c + c * c + 2 * c,
                      "ski": 0 if stride == 1 else 2 * c * (c // 2) + 2 * c, "max": 2 * c, "avg": 2 * c}[op[:3]]
    return total


def stage_supernet_params_by_hand(genotype, c, cells_per_stage, classes=10):
    """Stem 3×3 conv 3 → 4C (no bias) + affine BN; stage s at C_s = 2^s·C, states W = 4·C_s wide: two non-affine
    1×1 projections W_in → W (window >= 2: both read), its cells (each reading W), mixed stage edges without
    parameters (pooling + non-affine BN, identity); reduction cells at 2·C_s read the stage output (2·W);
    GAP → dense on 32C with bias."""
    total = 27 * 4 * c + 2 * 4 * c
    w_in = 4 * c
    for s, n in enumerate(cells_per_stage):
        c_s = c * 2 ** s
        w = 4 * c_s
        total += 2 * w_in * w + n * cell_params_by_hand(genotype.cell_for(f"normal{s + 1}"), c_s, w, False)
        if s < 2:
            total += cell_params_by_hand(genotype.cell_for(f"reduce{s + 1}"), 2 * c_s, 2 * w, True)
            w_in = 8 * c_s
    return total + 32 * c * classes + classes


def test_stage_supernet_on_the_paper_settings_through_the_cli():
    # H^s-DAS stage search: DARTS_V2 cells, C = 16, L = 20 (6-6-6), window 3.
    proc = _cli("--supernet=stage", "--genotype=DARTS_V2", "--init_channels=16", "--layers=20",
                "--stage_lengths=6,6,6", "--window=3", "--json")
    report = json.loads(proc.stdout)
    darts = REGISTRY["DARTS_V2"]
    assert report["params"] == stage_supernet_params_by_hand(darts, 16, (6, 6, 6))
    # 917,226 with non-affine pooling BN in the fixed cells; the 5 max-pool edges of each reduction cell
    # (C = 32, 64) add γ and β: 2·5·32 + 2·5·64 = 960.
    assert report["params"] == 917_226 + 960 == 918_186
    # α: per stage Σ_j min(3, j + 2) = 2 + 5·3 = 17 edges × 4 stage ops; no β.
    assert report["arch_params"] == 3 * 17 * 4 == 204
    assert report["arch_shapes"] == {f"alpha_stage{s}": [17, 4] for s in (1, 2, 3)}
    assert (report["supernet"], report["layers"], report["stage_lengths"]) == ("stage", 20, [6, 6, 6])
    assert round(report["log10_space_size"]) == 24  # the paper's stage-level space (the cells are fixed)


def test_distribution_supernet_on_the_paper_settings(capsys):
    # Cell-distribution search: L = 26, N_max = 8, N_min = 4.
    report = json.loads(_run(capsys, supernet="distribution", genotype="DARTS_V2", init_channels=16, layers=26,
                             max_cells=8, min_cells=4, json=True))
    assert report["params"] == stage_supernet_params_by_hand(REGISTRY["DARTS_V2"], 16, (8, 8, 8))
    assert report["params"] == 1_149_514 + 960 == 1_150_474
    # α: 2 + 7·3 = 23 edges × 4 ops per stage; β: n = 4..8, 5 per stage.
    assert report["arch_params"] == 3 * 23 * 4 + 3 * 5 == 291
    assert report["candidate_lengths"] == [4, 5, 6, 7, 8] and report["layers"] == 26
    assert round(report["log10_space_size"]) == 33
    shared = json.loads(_run(capsys, supernet="distribution", genotype="DARTS_V2", stage="shared", init_channels=2,
                             max_cells=5, json=True))
    assert shared["arch_params"] == (2 + 4 * 3) * 4 + 3 * 2  # one α for all stages; β: n = 4, 5
    assert shared["params"] == stage_supernet_params_by_hand(REGISTRY["DARTS_V2"], 2, (5, 5, 5))


def test_stage_supernet_report_is_the_searched_supernet(capsys, tmp_path):
    """The weights and α/β the search model holds for the same flags (``search.job.build_search``)."""
    import numpy as np
    import tensorflow as tf

    from hdas_tf import data
    from hdas_tf.search.config import SearchConfig
    from hdas_tf.search.job import build_search

    genotype = tmp_path / "cells.json"
    genotype.write_text(json.dumps(REGISTRY["HC_DAS"].to_dict()))
    flags_ = dict(genotype=str(genotype), init_channels=2, window=2)
    report = json.loads(_run(capsys, supernet="stage", stage_lengths=["2", "3", "2"], json=True, **flags_))
    cfg = SearchConfig(search="stage", stage_lengths=(2, 3, 2), **flags_)
    info = data.DataInfo("synthetic", 10, (32, 32, 3), (0.5,) * 3, (0.25,) * 3, None, 8, 8)
    _, model, _ = build_search(cfg, tf.distribute.get_strategy(), info, steps_per_epoch=1)
    assert report["params"] == sum(int(np.prod(v.shape)) for v in model.weight_variables)
    assert report["params"] == stage_supernet_params_by_hand(REGISTRY["HC_DAS"], 2, (2, 3, 2))
    # Window 2: every cell has 2 candidate edges; 4 stage ops.
    assert report["arch_params"] == sum(int(np.prod(v.shape)) for v in model.arch_variables) == (4 + 6 + 4) * 4


@pytest.mark.parametrize("flags, message", [
    (dict(supernet="stage"), "needs --genotype"),
    (dict(supernet="distribution", genotype="DARTS_V2", stage_genotype="HS_DAS_CIFAR"), "takes no --stage_genotype"),
    (dict(supernet="stage", genotype="DARTS_V2", stacnas="clusters"), "describe a cell supernet"),
    (dict(supernet="stage", genotype="DARTS_V2", layout="imagenet"), "CIFAR layout only"),
    (dict(supernet="stage", genotype="DARTS_V2", dot=True), "--dot"),
    (dict(genotype="DARTS_V2", window=2), "--window describe a stage or distribution supernet"),
    (dict(stage_lengths=["6", "6", "6"]), "--stage_lengths describe a stage or distribution supernet"),
    (dict(supernet="stage", genotype="DARTS_V2", max_cells=6), "--min_cells and --max_cells"),
    (dict(supernet="distribution", genotype="DARTS_V2", stage_lengths=["6", "6", "6"]), "--stage_lengths sets"),
    (dict(supernet="stage", genotype="DARTS_V2", stage_lengths=["6", "x", "6"]), "three positive integers"),
    (dict(supernet="stage", genotype="DARTS_V2", stage_lengths=["6", "6"]), "three positive integers"),
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


def test_stage_supernet_inputs_the_search_cannot_use_are_usage_errors():
    small = dict(supernet="stage", init_channels=2, stage_lengths=["2", "2", "2"])
    with flagsaver.flagsaver(genotype="DARTS_V2", layers=20, **small), pytest.raises(
            app.UsageError, match="2\\+2\\+2 stage cells \\+ 2 reduction cells = 8"):
        inspect_main.main(["inspect"])
    with flagsaver.flagsaver(genotype="HS_DAS_CIFAR", **small), pytest.raises(app.UsageError, match="has no cells"):
        inspect_main.main(["inspect"])
    with flagsaver.flagsaver(supernet="distribution", genotype="DARTS_V2", min_cells=6, max_cells=5), pytest.raises(
            app.UsageError, match="min_cells"):
        inspect_main.main(["inspect"])


def test_unknown_genotype_is_a_usage_error():
    from absl import app

    with flagsaver.flagsaver(genotype="NO_SUCH_GENOTYPE"), pytest.raises(app.UsageError, match="unknown genotype"):
        inspect_main.main(["inspect"])

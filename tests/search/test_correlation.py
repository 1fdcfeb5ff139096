"""Operator correlation (BUILD_NOTES "StacNAS operator clusters"): the streaming Pearson accumulator, the
Fisher-z mean, the per-edge correlation of a supernet's ops, and `python -m hdas_tf.clusters` feeding a
StacNAS stage-1 search."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn.supernets import ChainSupernet
from hdas_tf.search.correlation import EdgeOpCorrelation, PearsonAccumulator, fisher_mean, heatmap_png
from hdas_tf.space import clusters as C
from hdas_tf.space.op_registry import CELL_OPS
from hdas_tf.space.search_space import SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# === the accumulator ===

def test_streaming_equals_all_at_once():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(4, 4))
    rows = rng.normal(size=(1000, 4)) @ mix + np.array([3.0, -1.0, 0.0, 10.0])  # correlated, off-centre
    acc = PearsonAccumulator(4)
    for part in np.split(rows, [7, 300, 301, 820]):  # uneven batches, one of a single row
        acc.update(part)
    assert acc.n == 1000
    np.testing.assert_allclose(acc.correlation(), np.corrcoef(rows, rowvar=False), rtol=1e-10, atol=1e-12)


def test_independent_outputs_correlate_near_zero_and_identical_ones_exactly_one():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 200_000))
    acc = PearsonAccumulator(3)
    acc.update(np.stack([a, b, 2.0 * a + 5.0], axis=1))  # the third is the first, rescaled and shifted
    rho = acc.correlation()
    # Independent: |ρ| ~ 1/√n = 0.0022; 0.01 is 4.5 standard errors.
    assert abs(rho[0, 1]) < 0.01
    assert rho[0, 2] == pytest.approx(1.0, abs=1e-12)


def test_constant_output_gives_nan_not_a_number_that_means_something():
    acc = PearsonAccumulator(2)
    acc.update(np.stack([np.arange(10.0), np.full(10, 3.0)], axis=1))
    rho = acc.correlation()
    assert np.isnan(rho[0, 1]) and rho[0, 0] == rho[1, 1] == 1.0
    with pytest.raises(ValueError, match="rows of shape"):
        acc.update(np.zeros((3, 3)))


def test_fisher_mean_by_hand():
    m1, m2 = np.array([[1.0, 0.5], [0.5, 1.0]]), np.array([[1.0, 0.8], [0.8, 1.0]])
    expected = math.tanh((math.atanh(0.5) + math.atanh(0.8)) / 2)  # 0.6777…, not the plain mean 0.65
    got = fisher_mean([m1, m2])
    assert got[0, 1] == pytest.approx(expected, rel=1e-12) and got[0, 0] == 1.0
    m3 = np.array([[1.0, np.nan], [np.nan, 1.0]])  # a NaN entry is left out of its mean
    assert fisher_mean([m1, m3])[0, 1] == pytest.approx(0.5, rel=1e-9)


# === a supernet's ops ===

SPACE = SearchSpace(layers=3, init_channels=4, num_classes=3, cell_ops=CELL_OPS)


def identical_separable_convs(net):
    """Every edge's sep_conv_5x5 made the same op as its sep_conv_3x3: the 5×5 depthwise kernels are the 3×3
    ones with a ring of zeros (padding 2 instead of 1 then gives the same output), the 1×1 kernels are copied."""
    for cell in net.cells:
        (dw3, pw3), (dw5, pw5) = cell.kernels["sep_conv_3x3"], cell.kernels["sep_conv_5x5"]
        padded = np.zeros(dw5.shape, np.float32)
        padded[:, :, 1:4, 1:4] = dw3.numpy()
        dw5.assign(padded)
        pw5.assign(pw3.numpy())


def test_two_identical_ops_correlate_one_and_form_one_cluster():
    net = ChainSupernet(SPACE)
    net.build((None, 8, 8, 3))
    identical_separable_convs(net)
    rng = np.random.default_rng(2)
    arch = {name: rng.normal(size=shape).astype(np.float32) for name, shape in SPACE.arch_shapes().items()}
    corr = EdgeOpCorrelation(net)
    assert corr.op_names == CELL_OPS[:-1]
    for _ in range(2):
        corr.update(tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32), arch)
    s3, s5 = corr.op_names.index("sep_conv_3x3"), corr.op_names.index("sep_conv_5x5")
    per_edge = corr.edge_correlations()
    assert len(per_edge) == 3 * 14
    for (i, k), rho in per_edge.items():
        assert rho[s3, s5] == pytest.approx(1.0, abs=1e-5), (i, k)
        side = {0: 8, 1: 4, 2: 2}[i]  # reductions at cells 1 and 2 (L//3, 2L//3 for L = 3)
        assert corr.accumulators[(i, k)].n == 2 * 4 * side * side * net.cells[i].channels
    doc = corr.summary()
    overall = np.array([[np.nan if v is None else v for v in row] for row in doc["overall"]])
    assert overall[s3, s5] == pytest.approx(1.0, abs=1e-5)
    assert set(doc["cell_types"]) == {"normal", "reduce"} and set(doc["groups"]) == {"normal", "reduce"}
    # Nothing else is nearly identical, so a cut at distance 1e-3 joins only the pair.
    others = ~np.eye(7, dtype=bool)
    others[s3, s5] = others[s5, s3] = False
    assert np.abs(overall[others]).max() < 0.999
    proposal = C.propose_clusters(overall, corr.op_names, threshold=1e-3)
    joined = [c for c in proposal if len(c.ops) > 1]
    assert [c.ops for c in joined] == [("sep_conv_3x3", "sep_conv_5x5")] and len(proposal) == 6


def test_op_outputs_are_the_mixed_op_terms():
    """The states the correlation reads are the supernet's own: with one-hot α on an edge the cell's node is the
    edge's op output plus the node's other edges; here on node 0 of a cell with identity ('skip') weight on
    edge (0, 1) and 'none' on edge (0, 0), node 0 equals state 1 (the preprocessed s1)."""
    space = SearchSpace(layers=3, init_channels=4, num_classes=3, cell_ops=("skip_connect", "sep_conv_3x3", "none"))
    net = ChainSupernet(space)
    net.build((None, 8, 8, 3))
    alpha = np.zeros((14, 3), np.float32)
    alpha[0] = [-1e4, -1e4, 1e4]  # edge (0, 0): none
    alpha[1] = [1e4, -1e4, -1e4]  # edge (0, 1): skip
    corr = EdgeOpCorrelation(net)
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 8, 8, 3)), tf.float32)
    (_, states), *_ = corr.cell_states(x, {"alpha_normal": alpha, "alpha_reduce": alpha})
    np.testing.assert_allclose(states[2].numpy(), states[1].numpy(), atol=1e-5)
    assert len(states) == 2 + 4


def test_correlation_needs_the_full_op_set_on_every_edge():
    space = SearchSpace(layers=3, init_channels=4, num_classes=3, cell_ops=("skip_connect", "none"))
    with pytest.raises(ValueError, match="at least two ops"):
        EdgeOpCorrelation(ChainSupernet(space))


def test_heatmap_png_is_a_png():
    png = heatmap_png(np.array([[1.0, 0.3], [0.3, 1.0]]), ["a", "b"], "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert tuple(tf.io.decode_png(png).shape[2:]) in ((3,), (4,))


# === the command and a stage-1 search on its clusters ===

def _run(module, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


TINY = ["--init_channels=2", "--layers=3", "--batch_size=8", "--num_examples=48", "--max_steps=2", "--epochs=1"]


@pytest.mark.slow
def test_clusters_command_writes_a_file_that_drives_stage1(tmp_path):
    run = tmp_path / "cells"
    proc = _run("hdas_tf.search", f"--run_dir={run}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = _run("hdas_tf.clusters", f"--run_dir={run}", "--threshold=0.5", "--num_clusters=3")
    assert bad.returncode != 0 and "not both" in bad.stderr
    proc = _run("hdas_tf.clusters", f"--run_dir={run}", "--num_images=16", "--batch_size=8", "--num_clusters=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((run / "op_correlation.json").read_text())
    assert doc["ops"] == list(CELL_OPS[:-1]) and doc["images"] == 16
    assert len(doc["cells"]) == 3 and all(len(c["edges"]) == 14 for c in doc["cells"])
    proposal = C.load_clusters(run / "clusters.json")
    assert len(proposal) == 3 and sorted(op for c in proposal for op in c.ops) == sorted(CELL_OPS[:-1])
    assert (run / "op_correlation.png").read_bytes()[:4] == b"\x89PNG"
    tags = set()
    for event_file in (run / "tb").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {v.tag for v in event.summary.value}
    assert "diagnostics/op_correlation/overall" in tags

    stage1 = tmp_path / "stage1"
    proc = _run("hdas_tf.search", f"--run_dir={stage1}", *TINY, "--stacnas=clusters",
                f"--clusters={run / 'clusters.json'}", "--update=one_level", "--train_portion=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.load(stage1 / "alphas.npz")["alpha_normal"].shape == (14, 3 + 1)
    hand_off = C.EdgeClusters.load(stage1 / "edge_clusters.json")
    assert hand_off.clusters == proposal

    stage2 = _run("hdas_tf.clusters", f"--run_dir={stage1}", "--num_images=16", "--batch_size=8")
    assert stage2.returncode != 0 and "plain cell search" in stage2.stderr and "Traceback" not in stage2.stderr
    missing = _run("hdas_tf.clusters", f"--run_dir={tmp_path / 'nothing'}")
    assert missing.returncode != 0 and "not a search run directory" in missing.stderr

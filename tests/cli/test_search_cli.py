"""`python -m hdas_tf.search` end to end on the bundled digits: the run directory, the genotype, resume,
and clear errors for bad flags."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hdas_tf.space.genotypes import Genotype

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--init_channels=2", "--layers=3", "--batch_size=8", "--num_examples=48", "--epochs=2", "--log_every=1",
        "--deterministic"]


def _search(run_dir, *extra, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.search", f"--run_dir={run_dir}", *TINY, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    proc = _search(run_dir, "--max_steps=4")
    return run_dir, proc


def test_run_directory_has_every_file(full_run):
    run_dir, proc = full_run
    for name in ("flags.cfg", "genotype.json", "alphas.npz", "run.json", "history.json", "config.json", "search.log"):
        assert (run_dir / name).is_file(), name
    # 48 examples → 24 in the weight half → 3 steps of 8 per epoch; --max_steps=4 ends in epoch 2.
    assert sorted(os.listdir(run_dir / "genotypes")) == ["best_val.json", "epoch_001.json", "epoch_002.json"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run_dir / "tb"))
    assert any(f.startswith("ckpt-4") for f in os.listdir(run_dir / "checkpoints"))
    flags_cfg = (run_dir / "flags.cfg").read_text()
    assert "--init_channels=2" in flags_cfg and "--max_steps=4" in flags_cfg
    assert "--strategy=default" in flags_cfg and "--norecompute" in flags_cfg  # the shared runtime flags too
    # No --augment: the digits default ("none", a mirrored digit is another digit), recorded resolved.
    assert "--augment" not in flags_cfg
    assert json.loads((run_dir / "config.json").read_text())["augment"] == "none"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["steps"] == 4
    assert run["arch_params"] == 224
    assert run["images_per_s"] > 0 and run["first_step_s"] > 0 and run["peak_rss_mib"] > 0
    assert "images/s" in proc.stderr


def test_genotype_validates_and_matches_alphas(full_run):
    run_dir, _ = full_run
    genotype = Genotype.load(run_dir / "genotype.json")
    genotype.validate()
    assert genotype.cell_sharing == "shared"
    alphas = np.load(run_dir / "alphas.npz")
    assert sorted(alphas.files) == ["alpha_normal", "alpha_reduce"]
    assert alphas["alpha_normal"].shape == (14, 8)
    from hdas_tf.space.derive import parse_cell_alphas

    assert genotype.cell_for("normal") == parse_cell_alphas(alphas["alpha_normal"])
    # The final genotype is the last epoch's (the default selection rule).
    assert Genotype.load(run_dir / "genotypes" / "epoch_002.json") == genotype


def test_resume_continues_to_the_same_architecture(full_run, tmp_path):
    """Interrupted after 2 steps and resumed to 4 == 4 steps in one go (deterministic ops)."""
    run_dir, _ = full_run
    split = tmp_path / "split"
    _search(split, "--max_steps=2")
    refused = _search(split, "--max_steps=4", check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    _search(split, "--max_steps=4", "--resume")
    a, b = np.load(run_dir / "alphas.npz"), np.load(split / "alphas.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])
    assert json.loads((split / "run.json").read_text())["steps"] == 4


def _checkpoint_tensors(run_dir):
    """Every tensor of the run's latest checkpoint but the save counter (a resumed run saves more often)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    names = [n for n in reader.get_variable_to_shape_map() if not n.startswith(("save_counter", "_CHECKPOINTABLE"))]
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.slow  # three searches, each in its own process
def test_resume_with_augmentation_is_bit_identical(full_run, tmp_path):
    """--augment=cifar on the digits: stopped after epoch 1 (3 steps) and resumed to 4 == 4 steps in one go, for
    α and every checkpointed weight and optimizer slot; and the augmentation reached the search (α differs from
    the unaugmented run's). The data side of resume (skipping k batches gives step k's images) is checked fast in
    tests/data/test_search_augment.py."""
    plain_dir, _ = full_run
    whole, split = tmp_path / "whole", tmp_path / "split"
    _search(whole, "--max_steps=4", "--augment=cifar")
    _search(split, "--max_steps=3", "--augment=cifar")
    _search(split, "--max_steps=4", "--augment=cifar", "--resume")
    assert json.loads((split / "config.json").read_text())["augment"] == "cifar"
    a, b = np.load(whole / "alphas.npz"), np.load(split / "alphas.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])
    ta, tb = _checkpoint_tensors(whole), _checkpoint_tensors(split)
    assert sorted(ta) == sorted(tb) and len(ta) > 20
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)
    plain = np.load(plain_dir / "alphas.npz")
    assert not np.array_equal(plain["alpha_normal"], a["alpha_normal"])


def test_bad_flags_are_reported_before_any_work(tmp_path):
    proc = _search(tmp_path / "x", "--cells=everything", check=False)
    assert proc.returncode != 0 and "--cells" in proc.stderr
    proc = _search(tmp_path / "y", "--search=stage", check=False)
    assert proc.returncode != 0 and "genotype" in proc.stderr
    assert not (tmp_path / "y" / "checkpoints").exists()


def test_distribution_then_stage_search_through_the_cli(tmp_path):
    """H^s-DAS phases 2 → 3: the distribution search writes the chosen stage lengths, the stage search reads
    them from that genotype file and writes a genotype with cells and three stage DAGs."""
    tiny = ["--init_channels=2", "--batch_size=4", "--num_examples=16", "--max_steps=2", "--epochs=1"]
    dist = tmp_path / "dist"
    _search(dist, "--search=distribution", "--genotype=DARTS_V2", "--min_cells=2", "--max_cells=3", *tiny)
    g = Genotype.load(dist / "genotype.json")
    g.validate(window=3)
    from hdas_tf.space.registry import REGISTRY

    assert g.cells == REGISTRY["DARTS_V2"].cells
    assert len(g.stage_lengths) == 3 and all(2 <= n <= 3 for n in g.stage_lengths)
    assert [len(s.cells) for s in g.stages] == list(g.stage_lengths)
    arch = np.load(dist / "alphas.npz")
    assert sorted(arch.files) == ["alpha_stage1", "alpha_stage2", "alpha_stage3", "beta_stage1", "beta_stage2",
                                  "beta_stage3"]
    assert arch["alpha_stage1"].shape == (2 + 3 + 3, 4) and arch["beta_stage1"].shape == (2,)
    run = json.loads((dist / "run.json").read_text())
    assert run["arch_params"] == 3 * 8 * 4 + 3 * 2

    stage = tmp_path / "stage"
    _search(stage, "--search=stage", f"--genotype={dist / 'genotype.json'}", "--stage=shared", *tiny)
    final = Genotype.load(stage / "genotype.json")
    final.validate(window=3)
    assert final.cells == g.cells  # the fixed cells pass through unchanged
    assert [len(s.cells) for s in final.stages] == list(g.stage_lengths)
    assert sorted(np.load(stage / "alphas.npz").files) == ["alpha_stage"]


def test_stacnas_stage1_then_stage2_through_the_cli(tmp_path):
    """StacNAS (BUILD_NOTES "StacNAS operator clusters"): stage 1 searches one representative per cluster of a
    --clusters file and writes the per-edge winning clusters; stage 2 reads them and each kept edge of its genotype
    uses a member of the cluster that won that edge; bad hand-offs stop before anything is written."""
    from hdas_tf.space.clusters import EdgeClusters

    custom = {"format": "hdas_tf.clusters/1", "clusters": [
        {"name": "pool", "ops": ["max_pool_3x3", "avg_pool_3x3"], "representative": "avg_pool_3x3"},
        {"name": "conv", "ops": ["sep_conv_3x3", "dil_conv_3x3"]},
        {"name": "skip", "ops": ["skip_connect"]}]}
    (tmp_path / "clusters.json").write_text(json.dumps(custom))
    tiny = ["--batch_size=4", "--num_examples=16", "--max_steps=2", "--epochs=1"]
    stage1 = tmp_path / "stage1"
    _search(stage1, "--stacnas=clusters", f"--clusters={tmp_path / 'clusters.json'}", *tiny)
    arch = np.load(stage1 / "alphas.npz")
    assert arch["alpha_normal"].shape == (14, 4)  # avg_pool_3x3, skip_connect, sep_conv_3x3, none
    g1 = Genotype.load(stage1 / "genotype.json")
    assert {op for cell in g1.cells.values() for node in cell.nodes for op, _ in node} <= {
        "avg_pool_3x3", "skip_connect", "sep_conv_3x3"}
    hand_off = EdgeClusters.load(stage1 / "edge_clusters.json")
    assert (stage1 / "genotypes" / "epoch_001.edge_clusters.json").exists()
    rep_cluster = {"avg_pool_3x3": "pool", "sep_conv_3x3": "conv", "skip_connect": "skip"}
    for group, names in hand_off.cells:
        a = arch[f"alpha_{group}"]
        assert list(names) == [rep_cluster[("avg_pool_3x3", "skip_connect", "sep_conv_3x3")[int(np.argmax(r[:3]))]]
                               for r in a]

    stage2 = tmp_path / "stage2"
    _search(stage2, "--stacnas=members", f"--edge_clusters={stage1 / 'edge_clusters.json'}", "--layers=4", *tiny)
    members = {c["name"]: set(c["ops"]) for c in custom["clusters"]}
    g2 = Genotype.load(stage2 / "genotype.json")
    for group, names in hand_off.cells:
        rows = {(i, src): k for k, (i, src) in enumerate((i, j) for i in range(4) for j in range(i + 2))}
        for i, node in enumerate(g2.cells[group].nodes):
            for op, src in node:
                assert op in members[names[rows[i, src]]], (group, i, op, src)
    run = json.loads((stage2 / "run.json").read_text())
    assert run["config"]["stacnas"] == "members"

    missing = _search(tmp_path / "bad", "--stacnas=members", f"--edge_clusters={tmp_path / 'nope.json'}", *tiny,
                      check=False)
    assert missing.returncode != 0 and "nope.json' does not exist" in missing.stderr
    assert not (tmp_path / "bad").exists()
    wrong = _search(tmp_path / "bad", "--stacnas=members", f"--edge_clusters={stage1 / 'edge_clusters.json'}",
                    "--cells=stage_specific", *tiny, check=False)
    assert wrong.returncode != 0 and "run stage 2 with stage 1's --cells" in wrong.stderr
    assert not (tmp_path / "bad").exists()

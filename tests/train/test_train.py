"""Training a genotype from scratch: `python -m hdas_tf.train` on the bundled digits (accuracy far above
chance, every file of the run directory, resume), the `.keras` round trip of the trained model, the
train step's loss and update computed by hand, the drop path ramp, and a
non-finite loss stopping the run before anything of its epoch is written."""

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn.eval_networks import ChainNetwork
from hdas_tf.space.genotypes import Genotype
from hdas_tf.space.registry import REGISTRY
from hdas_tf.run.loop import NonFiniteLossError
from hdas_tf.train.config import TrainConfig
from hdas_tf.train.job import TrainJob, TrainLoop
from hdas_tf.run.strategy import make_strategy
from hdas_tf.train.model import TrainingModel, combine_genotypes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 768 digits → 24 steps of 32 per epoch; C=8, 3 cells. Measured: test accuracy 0.88 after 4 epochs (chance 0.1).
DIGITS = ["--genotype=DARTS_V2", "--init_channels=8", "--layers=3", "--batch_size=32", "--num_examples=768",
          "--auxiliary=false", "--drop_path_rate=0", "--augment=none", "--lr=0.05", "--log_every=8", "--deterministic"]
EPOCHS = 4


def _train(run_dir, *extra, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.train", f"--run_dir={run_dir}", *DIGITS, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    proc = _train(run_dir, f"--epochs={EPOCHS}")
    return run_dir, proc


def _tb_scalars(tb_dir) -> dict:
    """tag → {step: value} of every scalar in the event files of ``tb_dir``."""
    out = {}
    for name in os.listdir(tb_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(tb_dir, name)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    out.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return out


# === the CLI on the digits ===


def test_digits_run_far_above_chance_and_writes_every_file(digits_run):
    run_dir, proc = digits_run
    for name in ("flags.cfg", "config.json", "genotype.json", "history.json", "metrics.json", "run.json",
                 "model.keras", "train.log", "data_info.json"):
        assert (run_dir / name).is_file(), name
    assert not [f for f in os.listdir(run_dir) if f.startswith(".")], "temporary files left behind"
    assert (run_dir / "checkpoints" / f"ckpt-{EPOCHS}.index").is_file()
    assert Genotype.load(run_dir / "genotype.json") == REGISTRY["DARTS_V2"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert metrics["split"] == "test" and metrics["eval_examples"] == 297  # the whole digits test split
    assert metrics["final"] == {"epoch": EPOCHS, "accuracy": history[-1]["eval_acc"], "loss": history[-1]["eval_loss"]}
    best = max(history, key=lambda h: h["eval_acc"])
    assert metrics["best"]["epoch"] == best["epoch"] and metrics["best"]["accuracy"] == best["eval_acc"]
    assert metrics["final"]["accuracy"] > 0.5, metrics  # 10 classes: chance is 0.1

    # Cosine per epoch from 0.05 to 0; no drop path was built (rate 0).
    lrs = [h["lr"] for h in history]
    np.testing.assert_allclose(lrs, [0.025 * (1 + math.cos(math.pi * e / EPOCHS)) for e in range(EPOCHS)], rtol=1e-6)
    assert all(h["drop_path_rate"] == 0.0 for h in history)

    run = json.loads((run_dir / "run.json").read_text())
    # No auxiliary head. 8,234 without BN after pooling, plus the affine pooling BNs: DARTS_V2's reduction cell has
    # 5 max-pool edges, and at C=8, L=3 the two reduction cells work at 16 and 32 channels: 2·5·16 + 2·5·32 = 480.
    assert run["params"] == run["params_with_aux"] == 8234 + 480
    assert run["macs"] > 0 and run["steps"] == EPOCHS * 24 and run["steps_per_epoch"] == 24
    assert run["images_per_s"] > 0 and run["peak_rss_mib"] > 0 and run["wall_s"] > 0 and run["first_step_s"] > 0

    flags_cfg = (run_dir / "flags.cfg").read_text().split("\n")
    assert "--init_channels=8" in flags_cfg and f"--epochs={EPOCHS}" in flags_cfg
    assert not any(line.startswith(("--resume", "--noresume", "--run_dir")) for line in flags_cfg)

    # Progress lines: epoch, step, loss, acc, images/s.
    assert re.search(rf"epoch {EPOCHS}/{EPOCHS} step 24/24 \(global {EPOCHS * 24}\) loss [0-9.]+ acc [0-9.]+ .*"
                     r"[0-9.]+ images/s", proc.stderr)
    assert "epoch 4/4 done" in (run_dir / "train.log").read_text()

    scalars = _tb_scalars(run_dir / "tb")
    for tag in ("epoch/loss", "epoch/accuracy", "epoch/lr", "epoch/drop_path_rate", "epoch/test_accuracy"):
        assert sorted(scalars[tag]) == [24 * e for e in range(1, EPOCHS + 1)], tag
    assert scalars["epoch/test_accuracy"][24 * EPOCHS] == pytest.approx(metrics["final"]["accuracy"])
    assert "step/loss" in scalars


def test_resume_trains_only_the_new_epochs(digits_run, tmp_path, caplog):
    """The CLI run's checkpoint, resumed (in process, with the run's own config.json) with one more epoch."""
    run_dir, _ = digits_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = TrainConfig(**{**json.loads((copy / "config.json").read_text()), "epochs": EPOCHS + 1})
    with pytest.raises(ValueError, match="--resume"):
        TrainJob(cfg, copy).run()  # a fresh run refuses a directory with checkpoints
    with pytest.raises(ValueError, match="same --genotype"):
        TrainJob(dataclasses.replace(cfg, genotype="PDARTS"), copy, resume=True).run()

    caplog.set_level("INFO", logger="absl")
    TrainJob(cfg, copy, resume=True).run()
    assert f"after epoch {EPOCHS} (step {EPOCHS * 24})" in caplog.text
    assert set(re.findall(r"epoch (\d+)/\d+ step", caplog.text)) == {str(EPOCHS + 1)}  # only the new epoch ran
    history = json.loads((copy / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 2))
    assert history[:EPOCHS] == json.loads((run_dir / "history.json").read_text())
    assert history[-1]["lr"] == pytest.approx(0.025 * (1 + math.cos(math.pi * EPOCHS / (EPOCHS + 1))))
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["final"]["epoch"] == EPOCHS + 1
    run = json.loads((copy / "run.json").read_text())
    assert run["start_epoch"] == EPOCHS and run["epochs_this_run"] == 1 and run["steps"] == (EPOCHS + 1) * 24
    assert (copy / "checkpoints" / f"ckpt-{EPOCHS + 1}.index").is_file()


def test_unknown_genotype_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="NO_SUCH_GENOTYPE"):
        TrainJob(TrainConfig(genotype="NO_SUCH_GENOTYPE"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# === in process: the job function on a tiny network ===

TINY = dict(genotype="DARTS_V2", init_channels=4, layers=3, batch_size=16, num_examples=64, epochs=3,
            drop_path_rate=0.3, augment="cifar", cutout=8, log_every=2)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    keras.utils.set_random_seed(0)
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    job = TrainJob(TrainConfig(**TINY), run_dir)
    summary = job.run()  # 4 steps of 16 per epoch
    return job, run_dir, summary


def test_keras_reload_gives_identical_outputs(tiny_job):
    job, run_dir, _ = tiny_job
    loaded = keras.saving.load_model(run_dir / "model.keras")
    assert type(loaded) is ChainNetwork and loaded.auxiliary_head is not None
    x = np.random.RandomState(1).randn(5, 32, 32, 3).astype("float32")
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), job.network(x, training=False).numpy())
    assert loaded.get_config() == job.network.get_config()


def test_drop_path_rate_follows_the_linear_ramp(tiny_job):
    job, run_dir, _ = tiny_job
    history = json.loads((run_dir / "history.json").read_text())
    # Epoch e (0-based) trains at 0.3 · e / 3: 0, 0.1, 0.2; the variable holds the last epoch's.
    np.testing.assert_allclose([h["drop_path_rate"] for h in history], [0.0, 0.1, 0.2], atol=1e-12)
    assert float(job.network.drop_path_rate.numpy()) == pytest.approx(0.2)
    scalars = _tb_scalars(run_dir / "tb")
    np.testing.assert_allclose([scalars["epoch/drop_path_rate"][s] for s in (4, 8, 12)], [0.0, 0.1, 0.2], atol=1e-7)
    # With the auxiliary head the optimised loss is main + 0.4 · aux, averaged per epoch.
    for h in history:
        assert h["loss"] == pytest.approx(h["loss_main"] + 0.4 * h["loss_aux"], rel=1e-5)


@pytest.mark.slow  # ~30 s: two more tiny runs
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_job, tmp_path, monkeypatch):
    """Stopped after epoch 1 and resumed: the same weights and histories as the uninterrupted tiny run (the
    checkpoint holds weights, BN statistics, drop path seeds, optimizer and epoch; the data stream is skipped)."""
    job, run_dir, _ = tiny_job

    class Stop(Exception):
        pass

    original = TrainLoop._end_epoch

    def end_epoch_then_stop(self, record, history):
        original(self, record, history)
        if record["epoch"] == 1:
            raise Stop

    keras.utils.set_random_seed(0)
    with monkeypatch.context() as m:
        m.setattr(TrainLoop, "_end_epoch", end_epoch_then_stop)
        with pytest.raises(Stop):
            TrainJob(TrainConfig(**TINY), tmp_path / "split").run()
    resumed = TrainJob(TrainConfig(**TINY), tmp_path / "split", resume=True)
    resumed.run()
    for a, b in zip(job.network.variables, resumed.network.variables):  # BN statistics and drop path seeds too
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    drop = ("seconds", "train_s", "eval_s", "images_per_s")
    strip = lambda h: [{k: v for k, v in e.items() if k not in drop} for e in h]  # noqa: E731
    assert strip(json.loads((tmp_path / "split" / "history.json").read_text())) == strip(
        json.loads((run_dir / "history.json").read_text()))


def test_non_finite_loss_stops_before_writing_the_epoch(tmp_path):
    cfg = TrainConfig(**{**TINY, "lr": 1e30, "epochs": 2, "drop_path_rate": 0.0, "augment": "none"})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1 step \d+/4"):
        TrainJob(cfg, tmp_path / "nan").run()
    written = set(os.listdir(tmp_path / "nan"))
    assert not written & {"history.json", "metrics.json", "model.keras", "run.json"}
    checkpoints = tmp_path / "nan" / "checkpoints"
    assert not checkpoints.exists() or not os.listdir(checkpoints)


# === the train step by hand ===


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ce(logits, labels, eps=0.0):
    k = logits.shape[1]
    targets = (1 - eps) * np.eye(k)[labels] + eps / k
    return float(np.mean(-(targets * np.log(_softmax(logits))).sum(axis=1))), targets


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_train_step_loss_and_update_by_hand(label_smoothing):
    """loss = CE(logits) + 0.4 · CE(aux); the classifier biases move by −lr · (∂loss/∂b + wd · b)."""
    keras.utils.set_random_seed(0)
    net = ChainNetwork(REGISTRY["DARTS_V2"], 5, 4, 3, drop_path=False, input_shape=(32, 32, 3))
    model = TrainingModel(net, auxiliary_weight=0.4, weight_decay=0.01, grad_clip=0.0, label_smoothing=label_smoothing)
    model.build_all((32, 32, 3), keras.optimizers.SGD(0.1))
    rng = np.random.RandomState(0)
    b_main, b_aux = rng.randn(5).astype("float32"), rng.randn(5).astype("float32")
    net.classifier.bias.assign(b_main)
    net.auxiliary_head.classifier.bias.assign(b_aux)
    x, y = rng.randn(6, 32, 32, 3).astype("float32"), np.array([0, 1, 2, 3, 4, 0], dtype="int32")
    logits, aux = (t.numpy().astype("float64") for t in net(x, training=True))  # BN batch statistics

    out = {k: float(v) for k, v in model.train_step((tf.constant(x), tf.constant(y))).items()}
    main_loss, targets = _ce(logits, y, label_smoothing)
    aux_loss, _ = _ce(aux, y, label_smoothing)
    assert out["loss_main"] == pytest.approx(main_loss, rel=1e-5)
    assert out["loss_aux"] == pytest.approx(aux_loss, rel=1e-5)
    assert out["loss"] == pytest.approx(main_loss + 0.4 * aux_loss, rel=1e-5)
    assert out["acc"] == pytest.approx(np.mean(logits.argmax(1) == y))
    # ∂CE/∂bias = mean(softmax − targets); the aux classifier's gradient carries the 0.4 weight.
    g_main = (_softmax(logits) - targets).mean(axis=0)
    g_aux = 0.4 * (_softmax(aux) - targets).mean(axis=0)
    np.testing.assert_allclose(net.classifier.bias.numpy(), b_main - 0.1 * (g_main + 0.01 * b_main), atol=1e-6)
    np.testing.assert_allclose(net.auxiliary_head.classifier.bias.numpy(), b_aux - 0.1 * (g_aux + 0.01 * b_aux),
                               atol=1e-6)


def test_gradient_clipped_to_global_norm():
    """With clip c, no weight decay and plain SGD, the whole update has global norm lr · c."""
    keras.utils.set_random_seed(0)
    net = ChainNetwork(REGISTRY["DARTS_V2"], 5, 4, 3, auxiliary=False, drop_path=False, input_shape=(32, 32, 3))
    model = TrainingModel(net, weight_decay=0.0, grad_clip=1e-3)
    model.build_all((32, 32, 3), keras.optimizers.SGD(0.5))
    before = [v.numpy().copy() for v in net.trainable_variables]
    x = np.random.RandomState(0).randn(4, 32, 32, 3).astype("float32")
    model.train_step((tf.constant(x), tf.constant([0, 1, 2, 3], tf.int32)))
    delta = math.sqrt(sum(float(np.sum((v.numpy() - b) ** 2)) for v, b in zip(net.trainable_variables, before)))
    assert delta == pytest.approx(0.5 * 1e-3, rel=1e-4)


@pytest.mark.slow  # ~40-60 s: tracing the step for two replicas (synchronized BN) is the cost
def test_mirrored_step_equals_single_device_step():
    """Two replicas (two logical CPUs) give the single-device update: loss averaged over the global batch,
    gradients all-reduced before the clip, coupled L2 added once."""
    x = np.random.RandomState(0).randn(8, 32, 32, 3).astype("float32")
    y = np.arange(8, dtype="int32") % 5
    results = []
    for strategy in (tf.distribute.get_strategy(), make_strategy("mirrored")):  # one mirrored per process
        keras.utils.set_random_seed(0)
        with strategy.scope():
            # No auxiliary head: its BNs see 2×2 and 1×1 maps of 8 images, where the replicas' float32
            # E[x²] − E[x]² statistics drift from the fused single-device kernel's (4e-3 of the update).
            net = ChainNetwork(REGISTRY["DARTS_V2"], 5, 4, 3, auxiliary=False, drop_path=False,
                               input_shape=(32, 32, 3))
            model = TrainingModel(net, weight_decay=0.01, grad_clip=0.05)
            model.build_all((32, 32, 3), keras.optimizers.SGD(0.1, momentum=0.9))
        dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)))

        @tf.function
        def step(batch):
            per_replica = strategy.run(model.train_step, args=(batch,))
            return {k: strategy.reduce("SUM", v, axis=None) for k, v in per_replica.items()}

        before = [v.numpy().copy() for v in net.trainable_variables]
        out = step(next(iter(dataset)))
        deltas = [v.numpy() - b for v, b in zip(net.trainable_variables, before)]
        results.append(({k: float(v) for k, v in out.items()}, deltas))
    (out1, d1), (out2, d2) = results
    for k in out1:
        assert out2[k] == pytest.approx(out1[k], rel=1e-5, abs=1e-6), k
    # The updates agree to 1e-4 of their size (measured 5e-6: BN statistics are summed differently across
    # replicas); clipping each replica's gradient separately would change them by O(1).
    norm = math.sqrt(sum(float(np.sum(a ** 2)) for a in d1))
    diff = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(d1, d2)))
    assert diff < 1e-4 * norm, (diff, norm)


# === genotypes and the config ===


def test_combine_genotypes():
    combined = combine_genotypes("DARTS_V2", "HS_DAS_CIFAR")
    assert combined.cells == REGISTRY["DARTS_V2"].cells and combined.stages == REGISTRY["HS_DAS_CIFAR"].stages
    assert combined.name == "DARTS_V2+HS_DAS_CIFAR"
    assert combine_genotypes("PDARTS") == REGISTRY["PDARTS"]
    with pytest.raises(ValueError, match="no cells"):
        combine_genotypes("HS_DAS_CIFAR")
    with pytest.raises(ValueError, match="no stage DAGs"):
        combine_genotypes("DARTS_V2", "PDARTS")


def test_config_validation():
    with pytest.raises(ValueError, match="genotype is required"):
        TrainConfig()
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(genotype="DARTS_V2", lr_schedule="step")
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(genotype="DARTS_V2", epochs=5, warmup_epochs=5)

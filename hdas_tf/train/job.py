"""A training run assembled from a ``TrainConfig``: a genotype trained from scratch (DESIGN §4, §7).
``python -m hdas_tf.train`` is this plus flag parsing.

The loop is a thin custom one around ``strategy.run(model.train_step)``, like the search loop (``fit`` breaks
under MultiWorkerMirroredStrategy in Keras 3, KERAS_NOTES §0.5). Each epoch: set the drop path rate of the
linear ramp, train ``steps_per_epoch`` steps, evaluate on the test split (or the held-out validation part),
then write ``history.json``, ``metrics.json``, the epoch's TensorBoard scalars and, last, the checkpoint, so
a restart never lacks the files of the epochs it covers. The final trained network is saved as
``model.keras`` at the end (written under a temporary name, then renamed).

Resume is from the end of the last checkpointed epoch and exact: the checkpoint holds the network (weights,
BN statistics, the drop path seeds), the optimizer (momentum slots and iteration counter, hence the
learning-rate position) and the epoch; the training data is a deterministic infinite stream for a given
seed, continued by skipping the batches already consumed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time

import keras
import tensorflow as tf
from absl import logging

from hdas_tf import data
from hdas_tf.search.config import STRATEGIES
from hdas_tf.nn.eval_networks import LAYOUTS, build_eval_network, drop_path_rate_at
from hdas_tf.nn.macs import count_macs, count_params
from hdas_tf.search.job import configure_runtime, json_ready  # noqa: F401  (configure_runtime: re-exported)
from hdas_tf.run.optimizers import FlatSGD
from hdas_tf.train.model import TrainingModel, combine_genotypes, learning_rate_schedule
from hdas_tf.run.loop import (NonFiniteLossError, distributed_step, ensure_fresh_or_resume, make_strategy, peak_rss_mib,
                             write_json_atomic)

LR_SCHEDULES = ("cosine", "exponential")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Defaults are the DARTS CIFAR-10 recipe (DESIGN §4) on the digits.

    Args (the main ones):
      genotype: the cells: a registry name (e.g. DARTS_V2) or a genotype file, which may also carry stage
        DAGs (then the network is a stage network).
      stage_genotype: stage DAGs (registry name or file) that add to or replace the genotype's.
      layout: "cifar" or "imagenet" network layout. init_channels, layers: C and L (layers: chain only).
      auxiliary, auxiliary_weight: auxiliary head and its loss weight.
      drop_path_rate: the drop path rate of the last epoch, ramped linearly from 0 at the first.
      validation_fraction: evaluate on this held-out share of the training split instead of the test split.
      augment, cutout: "cifar" (pad-4 crop, flip, cutout after normalisation), "imagenet" (random-resized
        crop, flip, colour jitter) or "none"; cutout side (CIFAR recipe only, 0 = off).
      lr, lr_min, lr_schedule, lr_decay, warmup_epochs: SGD learning rate: "cosine" per epoch from lr to
        lr_min, or "exponential" ×lr_decay per epoch; optionally after warmup_epochs of linear warm-up.
      weight_decay: coupled L2. grad_clip: global-norm clip after cross-replica aggregation (0 = off).
      recompute: keep only block inputs for the backward pass and recompute the rest (less memory).
      op_tracebacks: keep TensorFlow's per-op Python stack traces (``hdas_tf.op_tracebacks``; off by default).
    """

    genotype: str | None = None
    stage_genotype: str | None = None
    layout: str = "cifar"
    init_channels: int = 36
    layers: int = 20
    pool_bn: bool = True
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_rate: float = 0.2
    dataset: str = "digits"
    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    num_examples: int | None = None
    validation_fraction: float = 0.0
    augment: str = "cifar"
    cutout: int = 16
    batch_size: int = 96
    epochs: int = 600
    lr: float = 0.025
    lr_min: float = 0.0
    lr_schedule: str = "cosine"
    lr_decay: float = 0.97
    warmup_epochs: int = 0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    seed: int = 0
    deterministic: bool = False
    grappler: bool = False
    op_tracebacks: bool = False
    recompute: bool = False
    inter_op_threads: int = 0
    intra_op_threads: int = 0
    strategy: str = "default"
    log_every: int = 50

    def __post_init__(self):
        if not self.genotype:
            raise ValueError("genotype is required: a registry name (e.g. DARTS_V2) or a genotype file")
        for name, value, allowed in (("layout", self.layout, LAYOUTS), ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("augment", self.augment, data.AUGMENTATIONS),
                                     ("strategy", self.strategy, STRATEGIES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, received {value!r}")
        for name, value in dict(batch_size=self.batch_size, epochs=self.epochs, init_channels=self.init_channels,
                                log_every=self.log_every).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, received {value}")
        if self.layers < 3:
            raise ValueError(f"layers must be >= 3, received {self.layers}")
        for name, value in dict(auxiliary_weight=self.auxiliary_weight, weight_decay=self.weight_decay,
                                grad_clip=self.grad_clip, lr=self.lr, lr_min=self.lr_min, momentum=self.momentum,
                                cutout=self.cutout, warmup_epochs=self.warmup_epochs).items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, received {value}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), received {self.drop_path_rate}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), received {self.label_smoothing}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), received {self.validation_fraction}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], received {self.lr_decay}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")


@dataclasses.dataclass
class _EpochSums:
    """Running sums of one epoch's training steps (per-step global means)."""

    steps: int = 0
    sums: dict = dataclasses.field(default_factory=dict)
    timed_images: int = 0  # images of timed steps (the run's first step, which traces the graph, is excluded)
    timed_s: float = 0.0

    def add(self, out: dict):
        self.steps += 1
        for k, v in out.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict:
        return {k: v / self.steps for k, v in self.sums.items()}


class TrainJob:
    """Trains ``cfg``'s genotype in ``run_dir``; ``run()`` returns the run summary (also ``run.json``).

    After ``run()``, ``network`` is the trained evaluation network (the one saved as ``model.keras``) and
    ``model`` its ``TrainingModel``.

    Args:
      cfg: TrainConfig.
      run_dir: the run directory.
      resume: continue from the latest checkpoint in ``run_dir`` (a fresh run refuses a directory that
        holds checkpoints).
    """

    def __init__(self, cfg: TrainConfig, run_dir: str, resume: bool = False):
        self.cfg, self.run_dir, self.resume = cfg, os.fspath(run_dir), bool(resume)
        self.genotype = combine_genotypes(cfg.genotype, cfg.stage_genotype)  # fails before any work
        self.network = self.model = self.strategy = None

    # === assembly ===

    def _datasets(self):
        cfg = self.cfg
        train_ds, eval_ds, info = data.train_test_datasets(
            cfg.dataset, batch_size=cfg.batch_size, seed=cfg.seed, data_dir=cfg.data_dir, image_size=cfg.image_size,
            download=cfg.download, manual_dir=cfg.manual_dir, augment=cfg.augment, cutout=cfg.cutout,
            validation_fraction=cfg.validation_fraction, num_examples=cfg.num_examples, repeat=True)
        num = min(info.num_train, cfg.num_examples or info.num_train)
        if cfg.validation_fraction > 0:
            num = len(data.split_indices(num, 1.0 - cfg.validation_fraction, cfg.seed)[0])
        return train_ds, eval_ds, info, num // cfg.batch_size

    def _build(self, info: data.DataInfo, steps_per_epoch: int):
        with self.strategy.scope():
            self.network, self.model = build_training(self.cfg, info.num_classes, info.image_shape, steps_per_epoch,
                                                      self.genotype)
            optimizer = self.model.w_optimizer
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Every variable of the network by position: a tf.train.Checkpoint of the Keras 3 model itself misses
        # the sublayers held in lists (stem, cells, stages: their BN statistics would not be saved), and the
        # drop path seed-generator states are variables outside the weights (a resumed run would draw other
        # masks). Positions are stable for a given genotype and layout; variable paths are not (Keras
        # numbers layer and seed-generator names per process).
        self.checkpoint = tf.train.Checkpoint(network=list(self.network.variables), optimizer=optimizer,
                                              epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(self.run_dir, "checkpoints"),
                                                  max_to_keep=3)

    def _step_functions(self):
        # Per-replica shares (train) or sums (test): their sum over replicas is the global value.
        return (distributed_step(self.strategy, self.model.train_step),
                distributed_step(self.strategy, self.model.test_step))

    def _restore(self, steps_per_epoch: int) -> int:
        latest = self.manager.latest_checkpoint
        if not self.resume or latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        epoch, step = int(self.epoch.numpy()), int(self.model.w_optimizer.iterations.numpy())
        if step != epoch * steps_per_epoch:
            raise ValueError(f"{latest} was written after {step} steps in {epoch} epochs, but this configuration has "
                             f"{steps_per_epoch} steps per epoch; resume with the run's --batch_size, --num_examples "
                             f"and --validation_fraction (see {os.path.join(self.run_dir, 'flags.cfg')})")
        logging.info("resumed from %s after epoch %d (step %d)", latest, epoch, step)
        return epoch

    # === the run ===

    def run(self) -> dict:
        cfg, run_dir = self.cfg, self.run_dir
        t_start = time.monotonic()
        ensure_fresh_or_resume(run_dir, self.resume)
        os.makedirs(run_dir, exist_ok=True)
        self._check_same_genotype()
        write_json_atomic(os.path.join(run_dir, "config.json"), json_ready(cfg))
        self.genotype.save(os.path.join(run_dir, "genotype.json"))
        self.strategy = make_strategy(cfg.strategy)
        train_ds, eval_ds, info, steps_per_epoch = self._datasets()
        # What an export needs to serve the model (normalisation, input size, class names) without the data.
        from hdas_tf.serving import write_data_info

        write_data_info(os.path.join(run_dir, "data_info.json"), info, cfg.augment)
        if steps_per_epoch < 1:
            raise ValueError(f"the training set has fewer examples than one batch of {cfg.batch_size}")
        self.split = "validation" if cfg.validation_fraction > 0 else "test"
        t_build = time.monotonic()
        self._build(info, steps_per_epoch)
        build_s = time.monotonic() - t_build
        sizes = network_sizes(self.network, info.image_shape)
        logging.info("network: %s %s, %d cells, %d parameters (%d with the auxiliary head), %.1f M MACs; %d steps "
                     "per epoch of %d", type(self.network).__name__, self.genotype.name or "", self._cell_count(),
                     sizes["params"], sizes["params_with_aux"], sizes["macs"] / 1e6, steps_per_epoch, cfg.batch_size)
        start_epoch = self._restore(steps_per_epoch)
        history = self._load_history(start_epoch)

        from hdas_tf.summaries.logger import SummaryLogger  # TensorBoard is a leaf concern of the run

        self.tb = SummaryLogger(os.path.join(run_dir, "tb"))
        if start_epoch == 0:
            self.tb.hparams({k: v for k, v in json_ready(cfg).items() if isinstance(v, (int, float, str, bool))})
            self.tb.genotype(0, self.genotype)
        # Continue the deterministic stream of training batches where the checkpoint left it.
        skip = start_epoch * steps_per_epoch
        iterator = iter(self.strategy.experimental_distribute_dataset(train_ds.skip(skip) if skip else train_ds))
        dist_eval = self.strategy.experimental_distribute_dataset(eval_ds)
        train_fn, test_fn = self._step_functions()
        self._timing = {"first_step_s": None, "train_s": 0.0, "eval_s": 0.0, "timed_images": 0, "timed_s": 0.0}
        t_loop = time.monotonic()
        for epoch in range(start_epoch, cfg.epochs):
            self._train_epoch(epoch, steps_per_epoch, iterator, train_fn, dist_eval, test_fn, history, t_start)
        self.tb.close()
        model_path = self._save_model()
        t = self._timing
        summary = {
            "config": json_ready(cfg),
            "genotype": self.genotype.name,
            "network": type(self.network).__name__,
            **sizes,
            "wall_s": time.monotonic() - t_start,
            "setup_s": t_build - t_start,
            "build_s": build_s,
            "loop_s": time.monotonic() - t_loop,
            "train_s": t["train_s"],
            "eval_s": t["eval_s"],
            # Training images per second of step time, the run's first step (graph tracing) excluded.
            "images_per_s": t["timed_images"] / t["timed_s"] if t["timed_s"] else None,
            "first_step_s": t["first_step_s"],
            "peak_rss_mib": peak_rss_mib(),
            "epochs": cfg.epochs,
            "start_epoch": start_epoch,
            "epochs_this_run": cfg.epochs - min(start_epoch, cfg.epochs),
            "steps": int(self.model.w_optimizer.iterations.numpy()),
            "steps_per_epoch": steps_per_epoch,
            "strategy": cfg.strategy,
            "replicas": self.strategy.num_replicas_in_sync,
            "model": model_path,
        }
        write_json_atomic(os.path.join(run_dir, "run.json"), summary)
        final = history[-1] if history else None
        if final is not None:
            logging.info("training finished: %s accuracy %.4f after epoch %d (best %.4f at epoch %d); model in %s",
                         self.split, final["eval_acc"], final["epoch"], *self._best(history), model_path)
        return summary

    def _check_same_genotype(self):
        path = os.path.join(self.run_dir, "genotype.json")
        if not self.resume or not os.path.exists(path):
            return
        from hdas_tf.space.genotypes import Genotype

        before = Genotype.load(path)
        if (before.cells, before.stages, before.stage_lengths) != (self.genotype.cells, self.genotype.stages,
                                                                   self.genotype.stage_lengths):
            raise ValueError(f"{self.run_dir} trains genotype {before.name!r} ({path}); resume it with the same "
                             f"--genotype/--stage_genotype, not {self.genotype.name!r}")

    def _cell_count(self) -> int:
        if hasattr(self.network, "cells"):
            return len(self.network.cells)
        return sum(len(stage.stage_cells) for stage in self.network.stages) + len(self.network.reductions)

    def _train_epoch(self, epoch, steps_per_epoch, iterator, train_fn, dist_eval, test_fn, history, t_start):
        """Trains and evaluates 0-based ``epoch``; writes its files only when it is complete."""
        cfg, t = self.cfg, self._timing
        rate = drop_path_rate_at(epoch, cfg.epochs, cfg.drop_path_rate)
        self.network.drop_path_rate.assign(rate)
        lr = float(self.model.w_optimizer.learning_rate)  # the epoch's rate (the schedule is per epoch)
        sums, step_scalars = _EpochSums(), []
        t_epoch = time.monotonic()
        for i in range(1, steps_per_epoch + 1):
            batch = next(iterator)
            t0 = time.monotonic()
            out = {k: float(v) for k, v in train_fn(batch).items()}  # float() waits for the step
            dt = time.monotonic() - t0
            if t["first_step_s"] is None:
                t["first_step_s"] = time.monotonic() - t_start
            else:
                sums.timed_images += cfg.batch_size
                sums.timed_s += dt
            step = epoch * steps_per_epoch + i
            if not all(math.isfinite(v) for v in out.values()):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch + 1} step {i}/{steps_per_epoch} (global step {step}): "
                    f"{', '.join(f'{k}={v}' for k, v in sorted(out.items()))}. The run stopped before writing "
                    f"anything for epoch {epoch + 1}; the checkpoint of epoch {epoch} in {self.manager.directory} "
                    "is intact. Lower --lr, or check the input data.")
            sums.add(out)
            if i % cfg.log_every == 0 or i == steps_per_epoch:
                step_lr = float(self.model.w_optimizer.schedule(step - 1))  # the rate this step used
                step_scalars.append((step, {"step/loss": out["loss"], "step/accuracy": out["acc"], "step/lr": step_lr}))
                logging.info("epoch %d/%d step %d/%d (global %d) loss %.4f acc %.3f lr %.4g %.1f images/s", epoch + 1,
                             cfg.epochs, i, steps_per_epoch, step, out["loss"], out["acc"], step_lr,
                             cfg.batch_size / max(dt, 1e-9))
        train_s = time.monotonic() - t_epoch
        t0 = time.monotonic()
        totals = {}
        for batch in dist_eval:
            for k, v in test_fn(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        eval_s = time.monotonic() - t0
        means = sums.means()
        record = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "loss": means["loss"], "loss_main": means["loss_main"], "loss_aux": means["loss_aux"], "acc": means["acc"],
            "eval_loss": totals["loss_sum"] / totals["count"], "eval_acc": totals["correct"] / totals["count"],
            "eval_examples": int(totals["count"]),
            "lr": lr, "drop_path_rate": rate,
            "seconds": time.monotonic() - t_epoch, "train_s": train_s, "eval_s": eval_s,
            "images_per_s": sums.timed_images / sums.timed_s if sums.timed_s else None,
        }
        t["train_s"] += train_s
        t["eval_s"] += eval_s
        t["timed_images"] += sums.timed_images
        t["timed_s"] += sums.timed_s
        history[:] = [h for h in history if h["epoch"] < record["epoch"]] + [record]
        self._end_epoch(record, history, step_scalars)

    def _best(self, history):
        best = max(history, key=lambda h: (h["eval_acc"], -h["epoch"]))  # the earliest epoch of the best accuracy
        return best["eval_acc"], best["epoch"]

    def _end_epoch(self, record, history, step_scalars):
        run_dir = self.run_dir
        write_json_atomic(os.path.join(run_dir, "history.json"), history)
        best_acc, best_epoch = self._best(history)
        best = next(h for h in history if h["epoch"] == best_epoch)
        write_json_atomic(os.path.join(run_dir, "metrics.json"), {
            "split": self.split,
            "eval_examples": record["eval_examples"],
            "epochs": len(history),
            # The number to report: the accuracy after the last epoch.
            "final": {"epoch": record["epoch"], "accuracy": record["eval_acc"], "loss": record["eval_loss"]},
            "best": {"epoch": best_epoch, "accuracy": best_acc, "loss": best["eval_loss"]},
        })
        for step, values in step_scalars:
            self.tb.scalars(step, values)
        split = self.split
        self.tb.scalars(record["step"], {
            "epoch/loss": record["loss"], "epoch/loss_main": record["loss_main"], "epoch/loss_aux": record["loss_aux"],
            "epoch/accuracy": record["acc"], f"epoch/{split}_loss": record["eval_loss"],
            f"epoch/{split}_accuracy": record["eval_acc"], "epoch/lr": record["lr"],
            "epoch/drop_path_rate": record["drop_path_rate"], "epoch/images_per_s": record["images_per_s"] or 0.0})
        self.tb.flush()
        # The checkpoint comes last: a restart from it never lacks the files of the epochs it covers.
        self.epoch.assign(record["epoch"])
        self.manager.save(checkpoint_number=record["epoch"])
        logging.info("epoch %d/%d done in %.1fs: loss %.4f acc %.3f, %s loss %.4f acc %.4f (best %.4f at epoch %d), "
                     "lr %.4g, drop path %.3f, %.1f images/s", record["epoch"], self.cfg.epochs, record["seconds"],
                     record["loss"], record["acc"], split, record["eval_loss"], record["eval_acc"], best_acc,
                     best_epoch, record["lr"], record["drop_path_rate"], record["images_per_s"] or 0.0)

    def _load_history(self, start_epoch: int) -> list:
        path = os.path.join(self.run_dir, "history.json")
        if start_epoch == 0 or not os.path.exists(path):
            return []
        with open(path) as f:
            return [h for h in json.load(f) if h["epoch"] <= start_epoch]

    def _save_model(self) -> str:
        """``model.keras``, written under a temporary name in the run directory and renamed into place."""
        path = os.path.join(self.run_dir, "model.keras")
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=".model-", suffix=".keras")
        os.close(fd)
        try:
            keras.saving.save_model(self.network, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the model is an ordinary shared artefact
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path


def build_training(cfg: TrainConfig, num_classes: int, image_shape, steps_per_epoch: int, genotype=None):
    """The evaluation network and its ``TrainingModel`` with the recipe's optimizer, built (variables and
    optimizer state). Call inside the strategy scope. ``genotype`` defaults to ``cfg``'s (combined)."""
    genotype = combine_genotypes(cfg.genotype, cfg.stage_genotype) if genotype is None else genotype
    network = build_eval_network(genotype, num_classes, cfg.init_channels, cfg.layers, cfg.layout,
                                 auxiliary=cfg.auxiliary, pool_bn=cfg.pool_bn, drop_path=cfg.drop_path_rate > 0)
    model = TrainingModel(network, auxiliary_weight=cfg.auxiliary_weight, weight_decay=cfg.weight_decay,
                          grad_clip=cfg.grad_clip, label_smoothing=cfg.label_smoothing, recompute=cfg.recompute)
    schedule = learning_rate_schedule(cfg.lr_schedule, cfg.lr, cfg.epochs, steps_per_epoch, minimum=cfg.lr_min,
                                      decay=cfg.lr_decay, warmup_epochs=cfg.warmup_epochs)
    # Coupled L2 and post-aggregation clipping are the train step's (apply_weight_gradients).
    model.build_all(image_shape, FlatSGD(schedule, momentum=cfg.momentum))
    return network, model


def run_training(cfg: TrainConfig, run_dir: str, resume: bool = False) -> dict:
    """Runs (or resumes) a training run in ``run_dir`` and returns the summary written to run.json."""
    return TrainJob(cfg, run_dir, resume).run()


def network_sizes(network, image_shape) -> dict:
    """``params`` (auxiliary head excluded), ``params_with_aux`` and ``macs`` (per image, no auxiliary head)."""
    return {"params": count_params(network), "params_with_aux": count_params(network, include_aux=True),
            "macs": count_macs(network, image_shape)}


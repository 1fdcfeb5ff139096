"""A training run assembled from a ``TrainConfig``: a genotype trained from scratch.

BUILD_NOTES "Evaluation networks and training recipes" gives the recipes, "Run directory layout" the files.
``python -m hdas_tf.train`` is this plus flag parsing.

Each epoch of the step loop (``hdas_tf.run.loop``): set the drop path rate of the linear ramp, train
``steps_per_epoch`` steps, evaluate on the test split (or the held-out validation part), then write
``history.json``, ``metrics.json``, the epoch's TensorBoard scalars and, last, the checkpoint. The trained
network is saved as ``model.keras`` at the end (in float32 whatever ``--mixed_precision`` trained it). Resume is
from the last checkpoint — an epoch end, or a step inside an epoch (``--checkpoint_every_steps`` / ``_minutes``,
SIGTERM) — and exact: the checkpoint holds the network (weights, BN statistics, the drop path seeds), the
optimizer and the epoch, and the data stream continues at the step.
"""

from __future__ import annotations

import os
import time

import keras
import tensorflow as tf
from absl import logging

from hdas_tf import data
from hdas_tf.errors import RunDirError
from hdas_tf.files import atomic_path, write_json_atomic
from hdas_tf.nn.eval_networks import build_eval_network, check_auxiliary_fits, drop_path_rate_at
from hdas_tf.nn.macs import count_macs, count_params
from hdas_tf.run.checkpoints import SaveSchedule
from hdas_tf.run.loop import StepLoop
from hdas_tf.run.optimizers import DynamicLossScale, FlatSGD
from hdas_tf.run.precision import policy_scope
from hdas_tf.run.run_dir import check_run_dir, json_ready, load_history, worker_directory, write_config
from hdas_tf.run.runtime import peak_rss_mib
from hdas_tf.run.schedules import learning_rate_schedule
from hdas_tf.run.strategy import distributed_step, make_strategy
from hdas_tf.train.config import TrainConfig
from hdas_tf.train.model import TrainingModel, combine_genotypes


class TrainJob:
    """Trains ``cfg``'s genotype in ``run_dir``; ``run()`` returns the run summary (also ``run.json``).

    After ``run()``, ``network`` is the trained evaluation network (the one saved as ``model.keras``) and
    ``model`` its ``TrainingModel``.

    Args:
      cfg: TrainConfig.
      run_dir: the run directory.
      resume: continue from the latest checkpoint in ``run_dir`` (a fresh run refuses a directory that
        holds checkpoints).
      out_dir: where this process writes (``run_dir.worker_directory``: ``run_dir`` itself except on a
        non-chief worker of a multi-worker run); by default ``run()`` chooses it. A resumed run reads ``run_dir``.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str, resume: bool = False, out_dir: str | None = None):
        self.cfg, self.run_dir, self.resume = cfg, os.fspath(run_dir), bool(resume)
        self.source_dir, self.out_dir = self.run_dir, out_dir
        self.genotype = combine_genotypes(cfg.genotype, cfg.stage_genotype)  # fails before any work
        self.network = self.model = self.strategy = None
        self._inputs = None

    def prepare(self) -> None:
        """Everything the run reads before it writes anything (BUILD_NOTES "Errors and exit codes"): the run
        directory, the genotype a resumed run trains, the data set, opened (a missing set, a corrupt image or
        a training set smaller than the batch raises DataError), and images large enough for the auxiliary head. ``run`` calls it when the caller has not."""
        if self._inputs is not None:
            return
        check_run_dir(self.run_dir, self.resume)
        self._check_same_genotype()
        self._inputs = self._datasets()
        if self._inputs[3] < 1:  # train_test_datasets refuses such sets already; kept as the loop's precondition
            raise data.DataError(f"the training set has fewer examples than one batch of {self.cfg.batch_size}")
        self._check_same_steps_per_epoch(self._inputs[3])
        if self.cfg.auxiliary:
            check_auxiliary_fits(self.cfg.layout, self._inputs[2].image_shape)

    def _check_same_steps_per_epoch(self, steps_per_epoch: int) -> None:
        # A checkpoint is at the end of an epoch of the run's own length; history.json records where each epoch
        # ended, so a resume with another batch or data size is refused before flags.cfg is rewritten.
        history = load_history(self.run_dir, lambda h: True) if self.resume else []
        if history and history[-1]["step"] != history[-1]["epoch"] * steps_per_epoch:
            raise RunDirError(f"{self.run_dir} ran {history[-1]['step'] // history[-1]['epoch']} steps per epoch, "
                              f"this configuration has {steps_per_epoch}; resume with the run's --batch_size, "
                              f"--num_examples and --validation_fraction (see "
                              f"{os.path.join(self.run_dir, 'flags.cfg')})")

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

    def run(self) -> dict:
        if self.out_dir is None:
            with worker_directory(self.source_dir, self.cfg.strategy) as out_dir:
                self.out_dir = out_dir
                try:
                    return self.run()
                finally:
                    self.out_dir = None
        self.run_dir = self.out_dir  # everything below writes here; a resume reads self.source_dir
        cfg, run_dir = self.cfg, self.run_dir
        t_start = time.monotonic()
        self.prepare()
        train_ds, eval_ds, info, steps_per_epoch = self._inputs
        os.makedirs(run_dir, exist_ok=True)
        write_config(run_dir, cfg)
        self.genotype.save(os.path.join(run_dir, "genotype.json"))
        self.strategy = make_strategy(cfg.strategy)
        self.info = info
        # What an export needs to serve the model (normalisation, input size, class names) without the data.
        from hdas_tf.serving import write_data_info

        write_data_info(os.path.join(run_dir, "data_info.json"), info, cfg.augment)
        self.split = "validation" if cfg.validation_fraction > 0 else "test"
        t_build = time.monotonic()
        with self.strategy.scope():
            self.network, self.model = build_training(cfg, info.num_classes, info.image_shape, steps_per_epoch,
                                                      self.genotype)
        build_s = time.monotonic() - t_build
        sizes = network_sizes(self.network, info.image_shape)
        logging.info("network: %s %s, %d cells, %d parameters (%d with the auxiliary head), %.1f M MACs; %d steps "
                     "per epoch of %d", type(self.network).__name__, self.genotype.name or "", self._cell_count(),
                     sizes["params"], sizes["params_with_aux"], sizes["macs"] / 1e6, steps_per_epoch, cfg.batch_size)
        loop = TrainLoop(self, train_ds, eval_ds, steps_per_epoch)
        start_step = loop.restore() if self.resume else 0
        start_epoch = start_step // steps_per_epoch

        from hdas_tf.summaries.logger import SummaryLogger  # TensorBoard is a leaf concern of the run

        self.tb = SummaryLogger(os.path.join(run_dir, "tb"))
        if start_epoch == 0:
            self.tb.hparams({k: v for k, v in json_ready(cfg).items() if isinstance(v, (int, float, str, bool))})
            self.tb.genotype(0, self.genotype)
        t_loop = time.monotonic()
        history = loop.run(start_step, started=t_start)
        self.tb.close()
        model_path = self._save_model()
        summary = {
            "config": json_ready(cfg),
            "genotype": self.genotype.name,
            "network": type(self.network).__name__,
            **sizes,
            "wall_s": time.monotonic() - t_start,
            "setup_s": t_build - t_start,
            "build_s": build_s,
            "loop_s": time.monotonic() - t_loop,
            "train_s": loop.train_s,
            "eval_s": loop.eval_s,
            # Training images per second of step time, the run's first step (graph tracing) excluded.
            "images_per_s": loop.images_per_s,
            "first_step_s": loop.first_step_s,
            "peak_rss_mib": peak_rss_mib(),
            "epochs": cfg.epochs,
            "start_epoch": start_epoch,
            "epochs_this_run": cfg.epochs - min(start_epoch, cfg.epochs),
            "steps": int(self.model.w_optimizer.iterations.numpy()),
            "steps_per_epoch": steps_per_epoch,
            "strategy": cfg.strategy,
            "replicas": self.strategy.num_replicas_in_sync,
            "mixed_precision": cfg.mixed_precision,
            "jit_compile": cfg.jit_compile,
            "model": model_path,
        }
        write_json_atomic(os.path.join(run_dir, "run.json"), summary)
        self._write_report(summary)
        if history:
            logging.info("training finished: %s accuracy %.4f after epoch %d (best %.4f at epoch %d); model in %s",
                         self.split, history[-1]["eval_acc"], history[-1]["epoch"], *_best(history), model_path)
        return summary

    def _write_report(self, summary: dict) -> None:
        """``RUN_DIR/report.md`` (``hdas_tf.summaries.report``)."""
        import json

        from hdas_tf.summaries.report import train_report

        path = os.path.join(self.run_dir, "metrics.json")
        metrics = None
        if os.path.exists(path):
            with open(path) as f:
                metrics = json.load(f)
        train_report(self.run_dir, summary, self.genotype, metrics)

    def _check_same_genotype(self):
        path = os.path.join(self.run_dir, "genotype.json")
        if not self.resume or not os.path.exists(path):
            return
        from hdas_tf.space.genotypes import Genotype

        before = Genotype.load(path)
        if (before.cells, before.stages, before.stage_lengths) != (self.genotype.cells, self.genotype.stages,
                                                                   self.genotype.stage_lengths):
            raise RunDirError(f"{self.run_dir} trains genotype {before.name!r} ({path}); resume it with the same "
                              f"--genotype/--stage_genotype, not {self.genotype.name!r}")

    def _cell_count(self) -> int:
        if hasattr(self.network, "cells"):
            return len(self.network.cells)
        return sum(len(stage.stage_cells) for stage in self.network.stages) + len(self.network.reductions)

    def _save_model(self) -> str:
        """``model.keras``, written under a temporary name in the run directory and renamed into place; always a
        float32 network (a mixed-precision run's weights are float32 already, copied into a float32 build)."""
        path = os.path.join(self.run_dir, "model.keras")
        network = self.network
        if self.cfg.mixed_precision != "off":
            network = float32_network(self.cfg, self.genotype, self.info.num_classes, self.info.image_shape, network)
        with atomic_path(path, suffix=".keras") as tmp:
            keras.saving.save_model(network, tmp)
        return path


class TrainLoop(StepLoop):
    """The step loop of a ``TrainJob`` (built, with its ``tb`` set before ``run``): the drop path ramp, evaluation
    after each epoch, and the epoch's ``metrics.json`` and TensorBoard scalars."""

    def __init__(self, job: TrainJob, train_ds, eval_ds, steps_per_epoch: int):
        self.job, self.cfg = job, job.cfg
        with job.strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Every variable of the network by position: a tf.train.Checkpoint of the Keras 3 model itself misses
        # the sublayers held in lists (stem, cells, stages: their BN statistics would not be saved), and the
        # drop path seed-generator states are variables outside the weights (a resumed run would draw other
        # masks). Positions are stable for a given genotype and layout; variable paths are not (Keras
        # numbers layer and seed-generator names per process).
        checkpoint = dict(network=list(job.network.variables), optimizer=job.model.w_optimizer, epoch=self.epoch)
        # Per-replica shares (train) or sums (test): their sum over replicas is the global value.
        super().__init__(job.strategy, distributed_step(job.strategy, job.model.train_step, self.cfg.jit_compile),
                         train_ds, job.run_dir, steps_per_epoch, self.cfg.epochs * steps_per_epoch, checkpoint,
                         save_schedule=SaveSchedule(self.cfg.checkpoint_every_steps, self.cfg.checkpoint_every_minutes),
                         resume_dir=job.source_dir)
        self.test_fn = distributed_step(job.strategy, job.model.test_step)
        self.eval_ds = job.strategy.experimental_distribute_dataset(eval_ds)
        self.train_s = self.eval_s = 0.0  # of the whole run
        self.rate = self.lr = 0.0  # the current epoch's drop path rate and learning rate
        self.step_scalars = []

    def restored(self, path: str) -> int:
        spe = self.steps_per_epoch
        epoch, step = int(self.epoch.numpy()), int(self.job.model.w_optimizer.iterations.numpy())
        # ``epoch`` counts the completed epochs: step = epoch·spe at an epoch end, inside epoch + 1 otherwise.
        if not epoch * spe <= step < (epoch + 1) * spe:
            raise RunDirError(f"{path} was written after {step} steps in {epoch} epochs, but this configuration has "
                              f"{spe} steps per epoch; resume with the run's --batch_size, --num_examples "
                              f"and --validation_fraction (see {os.path.join(self.resume_dir, 'flags.cfg')})")
        if step == epoch * spe:
            logging.info("resumed from %s after epoch %d (step %d)", path, epoch, step)
        else:
            logging.info("resumed from %s at step %d of epoch %d (global step %d)", path, step - epoch * spe,
                         epoch + 1, step)
        return step

    def begin_epoch(self, epoch: int) -> None:
        self.rate = drop_path_rate_at(epoch, self.cfg.epochs, self.cfg.drop_path_rate)
        self.job.network.drop_path_rate.assign(self.rate)
        self.lr = float(self.job.model.w_optimizer.learning_rate)  # the epoch's rate (the schedule is per epoch)
        self.step_scalars = []  # written with the epoch's files, so a resumed run never repeats them

    def after_step(self, step: int, out: dict, seconds: float) -> None:
        spe, i = self.steps_per_epoch, (step - 1) % self.steps_per_epoch + 1
        if i % self.cfg.log_every == 0 or i == spe:
            step_lr = float(self.job.model.w_optimizer.schedule(step - 1))  # the rate this step used
            self.step_scalars.append((step, {"step/loss": out["loss"], "step/accuracy": out["acc"],
                                             "step/lr": step_lr}))
            logging.info("epoch %d/%d step %d/%d (global %d) loss %.4f acc %.3f lr %.4g %.1f images/s",
                         (step - 1) // spe + 1, self.cfg.epochs, i, spe, step, out["loss"], out["acc"], step_lr,
                         self.global_batch / max(seconds, 1e-9))

    def non_finite_message(self, step: int, out: dict) -> str:
        epoch, i = (step - 1) // self.steps_per_epoch, (step - 1) % self.steps_per_epoch + 1
        return (f"non-finite loss at epoch {epoch + 1} step {i}/{self.steps_per_epoch} (global step {step}): "
                f"{', '.join(f'{k}={v}' for k, v in sorted(out.items()))}. The run stopped before writing "
                f"anything for epoch {epoch + 1}; the checkpoint of epoch {epoch} in {self.manager.directory} "
                "is intact. Lower --lr, or check the input data.")

    def epoch_record(self, stats) -> dict:
        t0 = time.monotonic()
        totals = {}
        for batch in self.eval_ds:
            for k, v in self.test_fn(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        eval_s = time.monotonic() - t0
        self.train_s += stats.seconds
        self.eval_s += eval_s
        means = stats.means
        return {
            "epoch": stats.epoch,
            "step": stats.step,
            "loss": means["loss"], "loss_main": means["loss_main"], "loss_aux": means["loss_aux"], "acc": means["acc"],
            "eval_loss": totals["loss_sum"] / totals["count"], "eval_acc": totals["correct"] / totals["count"],
            "eval_examples": int(totals["count"]),
            "lr": self.lr, "drop_path_rate": self.rate,
            "seconds": time.monotonic() - stats.started, "train_s": stats.seconds, "eval_s": eval_s,
            "images_per_s": stats.images_per_s,
        }

    def write_epoch(self, record: dict, history: list) -> None:
        best_acc, best_epoch = _best(history)
        best = next(h for h in history if h["epoch"] == best_epoch)
        write_json_atomic(os.path.join(self.run_dir, "metrics.json"), {
            "split": self.job.split,
            "eval_examples": record["eval_examples"],
            "epochs": len(history),
            # The number to report: the accuracy after the last epoch.
            "final": {"epoch": record["epoch"], "accuracy": record["eval_acc"], "loss": record["eval_loss"]},
            "best": {"epoch": best_epoch, "accuracy": best_acc, "loss": best["eval_loss"]},
        })
        tb, split = self.job.tb, self.job.split
        for step, values in self.step_scalars:
            tb.scalars(step, values)
        tb.scalars(record["step"], {
            "epoch/loss": record["loss"], "epoch/loss_main": record["loss_main"], "epoch/loss_aux": record["loss_aux"],
            "epoch/accuracy": record["acc"], f"epoch/{split}_loss": record["eval_loss"],
            f"epoch/{split}_accuracy": record["eval_acc"], "epoch/lr": record["lr"],
            "epoch/drop_path_rate": record["drop_path_rate"], "epoch/images_per_s": record["images_per_s"] or 0.0})
        tb.flush()

    def checkpoint_number(self, record: dict) -> int:
        self.epoch.assign(record["epoch"])
        return record["epoch"]

    def mid_epoch_number(self, step: int) -> int:
        # Epoch-end checkpoints are numbered by epoch (ckpt-E), those inside an epoch by global step (ckpt-S);
        # a later checkpoint that takes an earlier one's number replaces it (the newest state is kept).
        self.epoch.assign(step // self.steps_per_epoch)
        return step

    def epoch_done(self, record: dict, history: list) -> None:
        best_acc, best_epoch = _best(history)
        logging.info("epoch %d/%d done in %.1fs: loss %.4f acc %.3f, %s loss %.4f acc %.4f (best %.4f at epoch %d), "
                     "lr %.4g, drop path %.3f, %.1f images/s", record["epoch"], self.cfg.epochs, record["seconds"],
                     record["loss"], record["acc"], self.job.split, record["eval_loss"], record["eval_acc"], best_acc,
                     best_epoch, record["lr"], record["drop_path_rate"], record["images_per_s"] or 0.0)


def _best(history) -> tuple[float, int]:
    """The best accuracy and the earliest epoch that reached it."""
    best = max(history, key=lambda h: (h["eval_acc"], -h["epoch"]))
    return best["eval_acc"], best["epoch"]


def build_training(cfg: TrainConfig, num_classes: int, image_shape, steps_per_epoch: int, genotype=None):
    """The evaluation network and its ``TrainingModel`` with the recipe's optimizer, built (variables and
    optimizer state). Call inside the strategy scope. ``genotype`` defaults to ``cfg``'s (combined)."""
    genotype = combine_genotypes(cfg.genotype, cfg.stage_genotype) if genotype is None else genotype
    with policy_scope(cfg.mixed_precision):  # layers keep the policy they are built with
        network = _eval_network(cfg, genotype, num_classes)
    model = TrainingModel(network, auxiliary_weight=cfg.auxiliary_weight, weight_decay=cfg.weight_decay,
                          grad_clip=cfg.grad_clip, label_smoothing=cfg.label_smoothing, recompute=cfg.recompute)
    schedule = learning_rate_schedule(cfg.lr_schedule, cfg.lr, cfg.epochs, steps_per_epoch, minimum=cfg.lr_min,
                                      decay=cfg.lr_decay, warmup_epochs=cfg.warmup_epochs)
    # Coupled L2 and post-aggregation clipping are the train step's (apply_weight_gradients); float16 adds the
    # dynamic loss scale (BUILD_NOTES "Mixed precision and XLA").
    loss_scale = DynamicLossScale() if cfg.mixed_precision == "fp16" else None
    model.build_all(image_shape, FlatSGD(schedule, momentum=cfg.momentum, loss_scale=loss_scale))
    return network, model


def _eval_network(cfg: TrainConfig, genotype, num_classes: int):
    return build_eval_network(genotype, num_classes, cfg.init_channels, cfg.layers, cfg.layout,
                              auxiliary=cfg.auxiliary, pool_bn=cfg.pool_bn, drop_path=cfg.drop_path_rate > 0)


def float32_network(cfg: TrainConfig, genotype, num_classes: int, image_shape, trained):
    """A float32 build of ``trained`` (a mixed-precision network) holding its variables' values: what
    ``model.keras`` and therefore every export compute with. The variables of a mixed policy are float32
    already, so the copy is exact; they correspond by position (same genotype, same construction)."""
    with policy_scope("off"):
        network = _eval_network(cfg, genotype, num_classes)
    network.build((None, *image_shape))
    target, source = network.variables, trained.variables
    if len(target) != len(source) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(target, source)):
        raise RuntimeError("the float32 copy of the trained network has other variables than the network")
    for a, b in zip(target, source):
        a.assign(b.numpy())
    return network


def network_sizes(network, image_shape) -> dict:
    """``params`` (auxiliary head excluded), ``params_with_aux`` and ``macs`` (per image, no auxiliary head)."""
    return {"params": count_params(network), "params_with_aux": count_params(network, include_aux=True),
            "macs": count_macs(network, image_shape)}


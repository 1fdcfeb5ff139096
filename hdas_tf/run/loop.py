"""The search loop: drives ``train_step`` under a tf.distribute strategy, derives a genotype every epoch,
checkpoints, logs, and writes the run directory (DESIGN §7).

A thin custom loop around ``strategy.run(model.train_step)`` rather than ``Model.fit``: ``fit`` breaks
under MultiWorkerMirroredStrategy in Keras 3 (KERAS_NOTES §0.5), and the loop needs the exact step
count for ``--max_steps`` and deterministic resume anyway.

Resume is exact: the checkpoint holds weights, α/β, both optimizers (slots, iteration counters, hence
the learning-rate schedule position) and the global step; the input pipeline is a deterministic
function of the seed, so the loop continues it by skipping the batches already consumed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import tempfile
import time
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging


class NonFiniteLossError(FloatingPointError):
    """A search or training loss became NaN or infinite."""


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json_atomic(path: str, obj) -> None:
    """Write JSON so a reader never sees a half-written file (temp file in the same folder, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz_atomic(path: str, arrays: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_MIRRORED: dict = {}


def make_strategy(kind: str = "default") -> tf.distribute.Strategy:
    """One strategy object for the whole run (DESIGN §7).

    "mirrored" uses every visible GPU, or every logical CPU when there is no GPU (how the tests and
    CPU machines exercise the multi-replica code path); "multi_worker" reads TF_CONFIG.
    """
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = tuple(d.name for d in (gpus or tf.config.list_logical_devices("CPU")))
        # One per process and device set: a second MirroredStrategy over the same devices starts its collective
        # instance keys where the first did, and the collective runtime then mixes the two (shape mismatches).
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
        return _MIRRORED[devices]
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {kind!r}; choose default, mirrored or multi_worker")


def distributed_step(strategy, fn):
    """A tf.function running ``fn`` per replica and summing its per-replica outputs: the search and training
    steps return per-replica shares (or sums) of global values, so their sum over replicas is the value."""

    @tf.function
    def step(batch):
        per_replica = strategy.run(fn, args=(batch,))
        return tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica)

    return step


@dataclasses.dataclass
class EpochRecord:
    epoch: int
    step: int
    loss_w: float
    acc_w: float
    loss_a: float
    acc_a: float
    seconds: float
    images_per_s: float
    extra: dict


class SearchLoop:
    """Runs a built ``ArchitectureSearchModel`` over a zipped (train, val) dataset.

    Args:
      model: the search model, built with both optimizers inside ``strategy.scope()``.
      strategy: the run's tf.distribute strategy.
      dataset: an infinite ``((x_train, y_train), (x_val, y_val))`` dataset of *global* batches,
        deterministic for a given seed.
      run_dir: the run directory (DESIGN §7).
      steps_per_epoch, epochs, max_steps: the schedule; the run ends at ``epochs·steps_per_epoch`` or
        ``max_steps`` steps, whichever comes first (a checkpoint is written at the end either way).
      derive: ``fn(arch: dict name -> np.ndarray) -> Genotype`` (the epoch's genotype).
      select: "last" (the final epoch's genotype) or "best_val" (the epoch with the best supernet
        accuracy on the architecture batches).
      on_epoch_end: optional ``fn(epoch, record, genotype)``, e.g. TensorBoard logging.
      documents: optional ``fn(arch) -> {name: JSON-ready object}``: more results derived from α each epoch
        (e.g. StacNAS's ``edge_clusters``), written beside the epoch's genotype as
        ``genotypes/epoch_NNN.{name}.json`` and, for the epoch the selection picks, ``RUN_DIR/{name}.json``.
    """

    def __init__(self, model, strategy, dataset, run_dir: str, steps_per_epoch: int, epochs: int,
                 derive: Callable, max_steps: int | None = None, select: str = "last", log_every: int = 10,
                 on_epoch_end: Callable | None = None, on_step: Callable | None = None,
                 documents: Callable | None = None):
        self.model, self.strategy, self.dataset, self.run_dir = model, strategy, dataset, run_dir
        self.steps_per_epoch, self.epochs, self.max_steps = steps_per_epoch, epochs, max_steps
        self.derive, self.select, self.log_every = derive, select, log_every
        self.on_epoch_end, self.on_step, self.documents = on_epoch_end, on_step, documents
        self.total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_acc")
        # Every model variable by position: tf.train.Checkpoint(model=...) skips sublayers a Keras 3 layer
        # holds in Python lists (cells, stages), and paths are numbered per process, so not usable as keys.
        self.checkpoint = tf.train.Checkpoint(variables=list(model.variables), w_optimizer=model.w_optimizer,
                                              a_optimizer=model.a_optimizer, step=self.step,
                                              best_val=self.best_val)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(run_dir, "checkpoints"),
                                                  max_to_keep=3)
        self.timings: dict = {}
        self._step_seconds = 0.0
        self._step_images = 0

    def restore(self) -> int:
        """Restores the latest checkpoint if any; returns the step to continue from."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("resumed from %s at step %d", latest, int(self.step.numpy()))
        return int(self.step.numpy())

    def _step_function(self):
        return distributed_step(self.strategy, self.model.train_step)

    def arch_numpy(self) -> dict:
        return {name: v.numpy() for name, v in self.model.arch_dict().items()}

    def run(self) -> dict:
        start_time = time.monotonic()
        start_step = int(self.step.numpy())
        if start_step >= self.total_steps:
            logging.info("nothing to do: step %d >= %d", start_step, self.total_steps)
        dataset = self.dataset.skip(start_step) if start_step else self.dataset
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        step_fn = self._step_function()
        history = self._load_history()
        epoch_sums: dict = {}
        epoch_start = time.monotonic()
        epoch_images = 0  # images of timed steps (the run's first step, which traces the graph, is excluded)
        epoch_step_s = 0.0
        global_batch = None
        first_step_s = None
        step = start_step
        while step < self.total_steps:
            batch = next(iterator)
            t0 = time.monotonic()
            out = {k: float(v) for k, v in step_fn(batch).items()}  # float() waits for the step
            dt = time.monotonic() - t0
            timed = first_step_s is not None
            if first_step_s is None:
                first_step_s = time.monotonic() - start_time
                self.timings["first_step_s"] = first_step_s
            if not all(math.isfinite(out[k]) for k in ("loss_w", "loss_a")):
                raise NonFiniteLossError(
                    f"non-finite loss at step {step + 1} (epoch {step // self.steps_per_epoch + 1}): "
                    f"loss_w={out['loss_w']}, loss_a={out['loss_a']}. The run stopped before writing anything for "
                    f"this step; the last checkpoint in {self.manager.directory} is intact. Lower --w_lr or --a_lr, "
                    "or check the input data.")
            step += 1
            self.step.assign(step)
            if global_batch is None:
                global_batch = self._batch_size(batch)
            if timed:
                epoch_images += global_batch
                epoch_step_s += dt
            for k, v in out.items():
                epoch_sums[k] = epoch_sums.get(k, 0.0) + v
            n_in_epoch = (step - 1) % self.steps_per_epoch + 1
            if self.on_step is not None:
                self.on_step(step, out)
            if step % self.log_every == 0 or step == self.total_steps:
                logging.info("epoch %d step %d/%d (%d/%d) loss_w %.4f acc_w %.3f loss_a %.4f acc_a %.3f "
                             "%.1f images/s", step // self.steps_per_epoch + (0 if n_in_epoch == self.steps_per_epoch else 1),
                             step, self.total_steps, n_in_epoch, self.steps_per_epoch, out["loss_w"], out["acc_w"],
                             out["loss_a"], out["acc_a"], global_batch / max(dt, 1e-9))
            epoch_done = step % self.steps_per_epoch == 0
            if epoch_done or step == self.total_steps:
                seconds = time.monotonic() - epoch_start
                means = {k: v / n_in_epoch for k, v in epoch_sums.items()}
                epoch = (step - 1) // self.steps_per_epoch + 1
                record = EpochRecord(epoch=epoch, step=step, loss_w=means["loss_w"], acc_w=means["acc_w"],
                                     loss_a=means["loss_a"], acc_a=means["acc_a"], seconds=seconds,
                                     images_per_s=epoch_images / epoch_step_s if epoch_step_s else 0.0,
                                     extra={k: v for k, v in means.items()
                                            if k not in ("loss_w", "acc_w", "loss_a", "acc_a")})
                self._end_epoch(record, history, complete=epoch_done)
                self._step_seconds += epoch_step_s
                self._step_images += epoch_images
                epoch_sums, epoch_images, epoch_step_s, epoch_start = {}, 0, 0.0, time.monotonic()
        summary = self._finish(history, time.monotonic() - start_time, start_step)
        return summary

    @staticmethod
    def _batch_size(batch) -> int:
        (xt, _), _ = batch
        values = xt.values if hasattr(xt, "values") else (xt,)
        return int(sum(v.shape[0] for v in values))

    def _end_epoch(self, record: EpochRecord, history: list, complete: bool):
        arch = self.arch_numpy()
        genotype = self.derive(arch)
        gdir = os.path.join(self.run_dir, "genotypes")
        os.makedirs(gdir, exist_ok=True)
        genotype.save(os.path.join(gdir, f"epoch_{record.epoch:03d}.json"))
        documents = self.documents(arch) if self.documents is not None else {}
        for name, doc in documents.items():
            write_json_atomic(os.path.join(gdir, f"epoch_{record.epoch:03d}.{name}.json"), doc)
        if record.acc_a > float(self.best_val.numpy()):
            self.best_val.assign(record.acc_a)
            genotype.save(os.path.join(gdir, "best_val.json"))
            for name, doc in documents.items():
                write_json_atomic(os.path.join(gdir, f"best_val.{name}.json"), doc)
        entry = dataclasses.asdict(record)
        entry["complete_epoch"] = complete
        history[:] = [h for h in history if h["epoch"] != record.epoch] + [entry]
        write_json_atomic(os.path.join(self.run_dir, "history.json"), history)
        self._write_selected(history, documents)
        save_npz_atomic(os.path.join(self.run_dir, "alphas.npz"), arch)
        # The checkpoint comes last: a restart from it never lacks the files of the epochs it covers.
        self.manager.save(checkpoint_number=int(self.step.numpy()))
        logging.info("epoch %d done in %.1fs: loss_w %.4f acc_w %.3f loss_a %.4f acc_a %.3f, %.1f images/s; "
                     "genotype written to %s", record.epoch, record.seconds, record.loss_w, record.acc_w,
                     record.loss_a, record.acc_a, record.images_per_s,
                     os.path.join(gdir, f"epoch_{record.epoch:03d}.json"))
        if self.on_epoch_end is not None:
            self.on_epoch_end(record.epoch, record, genotype)

    def _write_selected(self, history, document_names=()):
        gdir = os.path.join(self.run_dir, "genotypes")
        if self.select == "best_val" and os.path.exists(os.path.join(gdir, "best_val.json")):
            source = os.path.join(gdir, "best_val.json")
        else:
            source = os.path.join(gdir, f"epoch_{history[-1]['epoch']:03d}.json")
        from hdas_tf.space.genotypes import Genotype  # local: the loop itself is genotype-agnostic

        Genotype.load(source).save(os.path.join(self.run_dir, "genotype.json"))
        for name in document_names:
            with open(f"{source[:-len('.json')]}.{name}.json") as f:
                write_json_atomic(os.path.join(self.run_dir, f"{name}.json"), json.load(f))

    def _load_history(self) -> list:
        path = os.path.join(self.run_dir, "history.json")
        if os.path.exists(path):
            with open(path) as f:
                return [h for h in json.load(f) if h["step"] <= int(self.step.numpy())]
        return []

    def _finish(self, history, wall_s, start_step) -> dict:
        steps_run = int(self.step.numpy()) - start_step
        summary = {
            "wall_s": wall_s,
            "steps": int(self.step.numpy()),
            "steps_this_run": steps_run,
            # Training images per second of the steps after the first (time-to-first-step is separate).
            "images_per_s": self._step_images / self._step_seconds if self._step_seconds else None,
            "peak_rss_mib": peak_rss_mib(),
            "first_step_s": self.timings.get("first_step_s"),
            "epochs": len(history),
            "final": history[-1] if history else None,
        }
        return summary


def ensure_fresh_or_resume(run_dir: str, resume: bool) -> None:
    """Refuses to mix a new run into a directory that holds another run's checkpoints."""
    ckpt = os.path.join(run_dir, "checkpoints")
    has = tf.train.latest_checkpoint(ckpt) is not None if os.path.isdir(ckpt) else False
    if has and not resume:
        raise ValueError(f"{run_dir} already holds a run's checkpoints; pass --resume to continue it, "
                         "or choose a new --run_dir")


"""The step loop shared by search and training: steps under a tf.distribute strategy in epochs, the non-finite
loss and out-of-memory guards, timing, the history and the checkpoints (at epoch ends, on a step or minute
schedule, and on SIGTERM / SIGINT: ``hdas_tf.run.checkpoints``). A job subclasses ``StepLoop`` for what it does
differently.

A custom loop rather than ``Model.fit``: ``fit`` breaks under MultiWorkerMirroredStrategy in Keras 3
(BUILD_NOTES "Synchronized BN and distribution strategies"), and exact resume needs the exact step count: the checkpoint holds the job's state, and the
deterministic input stream is continued by skipping the batches already consumed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import tensorflow as tf
from absl import logging

from hdas_tf.files import write_json_atomic
from hdas_tf.run import run_dir as run_dirs
from hdas_tf.run.checkpoints import Interrupted, SaveSchedule, StopSignals, WorkerAgreement, restore_newest_readable
from hdas_tf.run.strategy import sum_over_workers


class NonFiniteLossError(FloatingPointError):
    """A search or training loss became NaN or infinite."""


class OutOfMemoryError(MemoryError):
    """A step ran out of memory (TensorFlow's ResourceExhaustedError); the message names the flags that help."""


# The flags that lower a run's peak memory, in the order worth trying (BUILD_NOTES "Mixed precision and XLA").
MEMORY_FLAGS = ("--batch_size", "--recompute", "--init_channels", "--layers", "--mixed_precision")


def out_of_memory_message(where: str, error: Exception | None = None) -> str:
    """One line for a run that ran out of memory ``where`` (e.g. "at step 3"), naming the flags that help."""
    detail = ""
    if error is not None and getattr(error, "message", None):
        detail = f" ({error.message.strip().splitlines()[0][:200]})"
    return (f"out of memory {where}{detail}. Lower the memory a step needs: a smaller --batch_size, --recompute "
            "(recompute activations in the backward pass), fewer --init_channels or --layers, or "
            "--mixed_precision=bf16 (fp16 on GPUs); the last checkpoint, if any, is intact (resume with --resume).")


@dataclasses.dataclass
class EpochStats:
    """What the loop measured of an epoch's steps in this process (a resumed run's first epoch may be partial).

    ``epoch`` is 1-based; ``step`` the global step count at its end; ``means`` the step outputs averaged over
    its steps run here; ``seconds`` from the epoch's start (``started``, monotonic) to its last step;
    ``step_images`` / ``step_s`` the images and time of its timed steps (the run's first step, which traces
    the graph, is not timed).
    """

    epoch: int
    step: int
    complete: bool
    means: dict
    started: float
    seconds: float
    step_images: int
    step_s: float

    @property
    def images_per_s(self) -> float | None:
        return self.step_images / self.step_s if self.step_s else None


class StepLoop:
    """Runs ``step_fn`` over ``dataset`` for ``total_steps`` steps in epochs of ``steps_per_epoch``.

    At the end of each epoch, and at the last step, it asks ``epoch_record`` for the epoch's history entry,
    writes ``history.json``, calls ``write_epoch``, saves the checkpoint, then calls ``epoch_done``. The
    checkpoint comes after every file of the epoch, so a restart from it never lacks them; an exception in a
    step or a hook leaves the last checkpoint as it was.

    Between epoch ends it also writes a checkpoint when ``save_schedule`` says one is due, and when SIGTERM or
    SIGINT arrived during the step: then, after the checkpoint, it raises ``checkpoints.Interrupted``. On a
    multi-worker run these decisions are the workers' common ones (``checkpoints.WorkerAgreement``). These
    mid-epoch checkpoints hold the job's state at that step (``mid_epoch_number``) and no epoch files; a run
    resumed from one continues the data stream exactly there.

    Hooks (methods to override): ``begin_epoch``, ``after_step``, ``non_finite_message``, ``epoch_record``
    (required), ``write_epoch``, ``checkpoint_number`` (required), ``mid_epoch_number`` (required for mid-epoch
    checkpoints), ``epoch_done``, ``restored``.

    Args:
      strategy: the run's tf.distribute strategy.
      step_fn: ``fn(distributed batch) -> {name: scalar}`` (e.g. ``strategy.distributed_step``).
      dataset: an infinite dataset of *global* batches, deterministic for a given seed.
      run_dir: the run directory (``history.json``, ``checkpoints/``).
      steps_per_epoch, total_steps: the schedule; the last epoch ends early when ``total_steps`` is not a
        multiple of ``steps_per_epoch``.
      checkpoint: the objects the checkpoint holds, by name; ``tf.train.CheckpointManager`` keeps the last 3.
      finite: the step outputs that must be finite (None: all of them).
      save_schedule: when to checkpoint between epoch ends (``checkpoints.SaveSchedule``; None: never).
      resume_dir: the run directory whose checkpoints and history a resumed run continues (default
        ``run_dir``). A multi-worker run's non-chief workers write to a temporary ``run_dir`` but resume from
        the chief's (BUILD_NOTES "Synchronized BN and distribution strategies").
    """

    def __init__(self, strategy, step_fn, dataset, run_dir: str, steps_per_epoch: int, total_steps: int,
                 checkpoint: dict, finite: tuple | None = None, save_schedule: SaveSchedule | None = None,
                 resume_dir: str | None = None):
        self.strategy, self.step_fn, self.dataset, self.run_dir = strategy, step_fn, dataset, run_dir
        self.resume_dir = run_dir if resume_dir is None else resume_dir
        self.steps_per_epoch, self.total_steps, self.finite = steps_per_epoch, total_steps, finite
        self.save_schedule = save_schedule or SaveSchedule()
        self.checkpoint = tf.train.Checkpoint(**checkpoint)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(run_dir, "checkpoints"),
                                                  max_to_keep=3)
        self.global_batch = None
        self.first_step_s = None
        self.step_images, self.step_s = 0, 0.0  # of the timed steps of the whole run

    # === hooks ===

    def begin_epoch(self, epoch: int) -> None:
        """Before the first step of 0-based ``epoch`` (or of this process's part of it)."""

    def after_step(self, step: int, out: dict, seconds: float) -> None:
        """After global step ``step`` (1-based) with its outputs, which took ``seconds``."""

    def non_finite_message(self, step: int, out: dict) -> str:
        return f"non-finite loss at step {step}: {out}"

    def epoch_record(self, stats: EpochStats) -> dict:
        """The epoch's history entry; it must hold "epoch" and "step" (the global step at its end)."""
        raise NotImplementedError

    def write_epoch(self, record: dict, history: list) -> None:
        """The job's files of the epoch, after ``history.json`` and before the checkpoint."""

    def checkpoint_number(self, record: dict) -> int:
        """Sets the job's counters the checkpoint holds and returns the checkpoint's number."""
        raise NotImplementedError

    def mid_epoch_number(self, step: int) -> int:
        """Sets the job's counters the checkpoint holds for a checkpoint after global step ``step`` inside an
        epoch, and returns the checkpoint's number."""
        raise NotImplementedError(f"{type(self).__name__} does not write checkpoints inside an epoch")

    def epoch_done(self, record: dict, history: list) -> None:
        """After the epoch's checkpoint (e.g. its log line)."""

    def restored(self, path: str) -> int:
        """After the checkpoint ``path`` was restored: the global step it was written at."""
        raise NotImplementedError

    # === the loop ===

    def restore(self) -> int:
        """Restores the newest readable checkpoint of ``resume_dir`` if any (an unreadable newer one is reported
        and skipped: ``checkpoints.restore_newest_readable``); returns the step to continue from (0 without one)."""
        path = restore_newest_readable(self.checkpoint, os.path.join(self.resume_dir, "checkpoints"))
        if path is None:
            return 0
        return self.restored(path)

    def run(self, start_step: int, started: float | None = None) -> list:
        """Runs from global step ``start_step`` to ``total_steps`` and returns the history (the entries of
        ``history.json`` up to ``start_step``, then this run's). ``first_step_s`` counts from ``started``
        (monotonic; default: now)."""
        started = time.monotonic() if started is None else started
        if start_step >= self.total_steps:
            logging.info("nothing to do: step %d >= %d", start_step, self.total_steps)
        _check_same_start(self.strategy, start_step)
        history = run_dirs.load_history(self.resume_dir, lambda h: h["step"] <= start_step)
        dataset = self.dataset.skip(start_step) if start_step else self.dataset
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset.with_options(_shard_by_data())))
        spe = self.steps_per_epoch
        step = start_step
        self.save_schedule.saved()  # the minutes count from the start of this run
        agree = WorkerAgreement(self.strategy)  # multi-worker: every worker stops and saves at the same step
        with StopSignals() as signals:
            while step < self.total_steps:
                self.begin_epoch(step // spe)
                epoch_start, sums, steps, images, step_s = time.monotonic(), {}, 0, 0, 0.0
                while True:
                    batch = next(iterator)
                    t0 = time.monotonic()
                    try:
                        out = {k: float(v) for k, v in self.step_fn(batch).items()}  # float() waits for the step
                    except tf.errors.ResourceExhaustedError as e:
                        raise OutOfMemoryError(out_of_memory_message(f"at step {step + 1}", e)) from None
                    dt = time.monotonic() - t0
                    timed = self.first_step_s is not None
                    if not timed:
                        self.first_step_s = time.monotonic() - started
                    if not all(math.isfinite(out[k]) for k in (self.finite or out)):
                        raise NonFiniteLossError(self.non_finite_message(step + 1, out))
                    step += 1
                    if self.global_batch is None:
                        self.global_batch = _global_batch_size(batch, self.strategy)
                    if timed:
                        images += self.global_batch
                        step_s += dt
                    steps += 1
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + v
                    self.after_step(step, out, dt)
                    stop, due, elsewhere = agree(signals.received, self.save_schedule.due(step))
                    if step % spe == 0 or step == self.total_steps:
                        break
                    if stop is not None or due:
                        self._save(self.mid_epoch_number(step), f"step {step}")
                        if stop is not None:
                            raise Interrupted(stop, step, self.manager.latest_checkpoint, elsewhere)
                stats = EpochStats(epoch=(step - 1) // spe + 1, step=step, complete=step % spe == 0,
                                   means={k: v / steps for k, v in sums.items()}, started=epoch_start,
                                   seconds=time.monotonic() - epoch_start, step_images=images, step_s=step_s)
                self.step_images += images
                self.step_s += step_s
                self._end_epoch(self.epoch_record(stats), history)
                if step < self.total_steps:  # a signal during the step or the epoch's files
                    stop, _, elsewhere = agree(signals.received, False)
                    if stop is not None:
                        raise Interrupted(stop, step, self.manager.latest_checkpoint, elsewhere)
        return history

    @property
    def images_per_s(self) -> float | None:
        """Images per second of the timed steps of this run (time to the first step is ``first_step_s``)."""
        return self.step_images / self.step_s if self.step_s else None

    def _end_epoch(self, record: dict, history: list) -> None:
        history[:] = [h for h in history if h["epoch"] < record["epoch"]] + [record]
        write_json_atomic(os.path.join(self.run_dir, "history.json"), history)
        self.write_epoch(record, history)
        self._save(self.checkpoint_number(record), f"the end of epoch {record['epoch']}")
        self.epoch_done(record, history)

    def _save(self, number: int, when: str) -> None:
        path = self.manager.save(checkpoint_number=number)
        self.save_schedule.saved()
        logging.debug("checkpoint %s written at %s", path, when)


def _check_same_start(strategy, step: int) -> None:
    """On a multi-worker run, refuses to start unless every worker starts at the same step (a worker that could
    not read the chief's checkpoints would otherwise train from scratch beside the resumed ones, silently)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    total = sum_over_workers(strategy)(tf.constant(float(step), tf.float32))  # exact below 2^24 steps
    if float(total) != float(step) * strategy.num_replicas_in_sync:
        raise ValueError(f"the workers start from different steps (this one from {step}): every worker must see "
                         "the chief's RUN_DIR/checkpoints at the same path to resume (a shared file system, or a copy)")


def _shard_by_data() -> tf.data.Options:
    """Multi-worker input: every worker runs the whole (deterministic) pipeline and keeps its replicas' slices
    of each global batch, so the workers together step on exactly the global batches of a one-process run.
    (Sharding by file would give each worker other examples; one-worker strategies ignore the option.)"""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _global_batch_size(batch, strategy) -> int:
    """Examples in a distributed batch: the leading size of its first tensor, summed over replicas (a worker
    of a multi-worker run holds its own replicas' parts only; every replica's part is the same size)."""
    first = batch
    while isinstance(first, (tuple, list)):  # (x, y), or the search's ((x_train, y_train), (x_val, y_val))
        first = first[0]
    values = first.values if hasattr(first, "values") else (first,)
    local = int(sum(v.shape[0] for v in values))
    return local * strategy.num_replicas_in_sync // len(values)

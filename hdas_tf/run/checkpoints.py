"""When the step loop writes a checkpoint besides epoch ends, how it stops on SIGTERM / SIGINT, and how a
resumed run finds the newest checkpoint it can read (BUILD_NOTES "Exact resume").

- ``SaveSchedule``: every N steps and/or every M minutes (the clock is injectable, so tests need not wait).
- ``StopSignals``: SIGTERM / SIGINT only set a flag; the loop finishes the step in flight, writes a checkpoint at
  that step and raises ``Interrupted``, whose ``exit_code`` is the shell's 128 + signal number (143, 130).
- ``WorkerAgreement``: on a multi-worker run, every worker stops and checkpoints at the same step: a signal that
  reached any worker stops them all, and the chief's clock decides the minute-based checkpoints.
- ``restore_newest_readable``: the newest checkpoint first; one that fails to read (truncated, a missing data
  file) is reported and the one before it is tried.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import tensorflow as tf
from absl import logging

from hdas_tf.run.strategy import sum_over_workers


class Interrupted(Exception):
    """The loop stopped on a signal after writing a checkpoint at ``step`` (``path``). ``elsewhere``: the signal
    reached another worker of a multi-worker run, not this process."""

    def __init__(self, signum: int, step: int, path: str | None, elsewhere: bool = False):
        self.signum, self.step, self.path = signum, step, path
        name = signal.Signals(signum).name + (" (sent to another worker)" if elsewhere else "")
        super().__init__(f"stopped by {name} after step {step}; checkpoint {path}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process that a signal ended (SIGTERM 143, SIGINT 130)."""
        return 128 + self.signum


def resume_command(module: str, run_dir: str) -> str:
    """The command that continues the run in ``run_dir`` (its flags.cfg holds every flag it ran with)."""
    return (f"python -m {module} --flagfile={os.path.join(run_dir, 'flags.cfg')} --run_dir={run_dir} --resume")


class SaveSchedule:
    """Whether a checkpoint is due after a step: every ``every_steps`` global steps (0 = never) and/or once
    ``every_minutes`` have passed on ``clock`` (seconds, monotonic) since the last checkpoint (0 = never)."""

    def __init__(self, every_steps: int = 0, every_minutes: float = 0.0, clock=time.monotonic):
        if every_steps < 0 or every_minutes < 0:
            raise ValueError(f"checkpoint intervals must be >= 0, received {every_steps} steps, {every_minutes} min")
        self.every_steps, self.every_minutes, self.clock = int(every_steps), float(every_minutes), clock
        self.last = clock()

    def due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_minutes) and self.clock() - self.last >= 60.0 * self.every_minutes

    def saved(self) -> None:
        """A checkpoint was just written (at an epoch end, on schedule or on a signal): the minutes count anew."""
        self.last = self.clock()


class StopSignals:
    """A context that turns SIGTERM and SIGINT into a flag (``received``: the first signal's number, or None).

    Handlers can only be installed from the main thread; elsewhere (e.g. a loop run from a worker thread) the
    context does nothing. A second signal while the flag is set raises ``KeyboardInterrupt`` at once, so a
    hung step can still be stopped. The previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signum
        logging.warning("%s received: finishing the current step, then writing a checkpoint",
                        signal.Signals(signum).name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False


class WorkerAgreement:
    """What every process of a run does after a step: ``(signum, due) -> (signum, due, elsewhere)``.

    One process decides alone. On a multi-worker run a worker that stopped or checkpointed alone would leave
    the others waiting in their next collective, so the workers agree after every step in one all-reduce of
    three numbers — how many replicas saw SIGTERM, how many SIGINT, and whether the chief's save schedule is
    due (only the chief's clock counts; the step-based schedule is the same on every worker). Every worker
    then gets the same answer at the same step: stop (SIGTERM before SIGINT) and/or checkpoint. The cost is
    one small collective per step, nothing beside a step's gradient all-reduce.
    """

    def __init__(self, strategy):
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if not self.multi_worker:
            return
        self.chief = bool(strategy.extended.should_checkpoint)
        self._total = sum_over_workers(strategy)

    def __call__(self, signum: int | None, due: bool) -> tuple[int | None, bool, bool]:
        if not self.multi_worker:
            return signum, due, False
        local = [signum == signal.SIGTERM, signum == signal.SIGINT, due and self.chief]
        votes = self._total(tf.constant(local, tf.float32)).numpy()
        agreed = signal.SIGTERM if votes[0] > 0 else signal.SIGINT if votes[1] > 0 else None
        return agreed, bool(votes[2] > 0), agreed is not None and signum is None


def checkpoint_paths(directory: str) -> list[str]:
    """The checkpoints the state file in ``directory`` lists, oldest first ([] without one)."""
    state = tf.train.get_checkpoint_state(directory) if os.path.isdir(directory) else None
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return [p if os.path.isabs(p) else os.path.join(directory, p) for p in paths]


def restore_newest_readable(checkpoint: tf.train.Checkpoint, directory: str) -> str | None:
    """Restores the newest checkpoint in ``directory`` that reads completely and returns its path (None when
    there is none). A newer one that fails (truncated or missing files, a corrupt index) is reported with a
    warning and skipped. Every checkpoint holds every variable, so a failed partial restore is overwritten
    by the next one. Raises ValueError when checkpoints exist but none can be read."""
    paths = checkpoint_paths(directory)
    failures = []
    for path in reversed(paths):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        # A truncated data file surfaces as IndexError ("Read less bytes than requested") from TF's reader.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            logging.warning("checkpoint %s cannot be read (%s: %s); trying the one before it", path,
                            type(e).__name__, reason[:300])
            failures.append(path)
            continue
        if failures:
            logging.warning("resumed from %s instead of the newer unreadable %s", path, ", ".join(failures))
        return path
    if failures:
        raise ValueError(f"no checkpoint in {directory} can be read ({', '.join(failures)}); start a new run "
                         "in another --run_dir")
    return None

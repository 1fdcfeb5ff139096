"""The step loop shared by search and training, on a toy step: epochs (the last one partial), the history and
checkpoint written at each epoch's end, exact resume from a checkpoint, the non-finite loss guard; checkpoints
every N steps and every M minutes (a fake clock), SIGTERM / SIGINT in the middle of an epoch, an unreadable
latest checkpoint, and out of memory in a step."""

import json
import logging
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.run.checkpoints import Interrupted, SaveSchedule
from hdas_tf.run.loop import MEMORY_FLAGS, NonFiniteLossError, OutOfMemoryError, StepLoop
from hdas_tf.run.strategy import distributed_step


class ToyLoop(StepLoop):
    """Adds each batch's mean to a variable; batch i holds [2i, 2i + 1] (mean 2i + 0.5), or inf from ``bad_at``."""

    def __init__(self, run_dir, total_steps, steps_per_epoch=2, bad_at=None, save_schedule=None, on_step=None):
        self.total = tf.Variable(0.0, dtype=tf.float64)
        self.step = tf.Variable(0, dtype=tf.int64)
        self.events = []
        self.on_step = on_step
        values = tf.data.Dataset.range(1000).map(lambda i: tf.cast(i, tf.float64))
        if bad_at is not None:
            values = values.map(lambda v: tf.where(v >= 2.0 * (bad_at - 1), tf.constant(np.inf, tf.float64), v))
        strategy = tf.distribute.get_strategy()

        def step(x):
            mean = tf.reduce_mean(x)
            self.total.assign_add(mean)
            return {"loss": mean, "total": self.total.read_value()}

        super().__init__(strategy, distributed_step(strategy, step), values.batch(2), run_dir, steps_per_epoch,
                         total_steps, dict(total=self.total, step=self.step), save_schedule=save_schedule)

    def begin_epoch(self, epoch):
        self.events.append(("begin", epoch))

    def after_step(self, step, out, seconds):
        self.events.append(("step", step, out["loss"]))
        if self.on_step is not None:
            self.on_step(step)

    def epoch_record(self, stats):
        return {"epoch": stats.epoch, "step": stats.step, "complete": stats.complete, **stats.means}

    def write_epoch(self, record, history):
        self.events.append(("write", record["epoch"], [h["epoch"] for h in history]))

    def checkpoint_number(self, record):
        self.step.assign(record["step"])
        return record["step"]

    def mid_epoch_number(self, step):
        self.events.append(("mid", step))
        self.step.assign(step)
        return step

    def epoch_done(self, record, history):
        self.events.append(("done", record["epoch"]))

    def restored(self, path):
        return int(self.step.numpy())


def _history(run_dir):
    with open(os.path.join(run_dir, "history.json")) as f:
        return json.load(f)


def test_epochs_history_and_checkpoints(tmp_path):
    loop = ToyLoop(str(tmp_path), total_steps=5)
    history = loop.run(0)
    assert loop.events == [("begin", 0), ("step", 1, 0.5), ("step", 2, 2.5), ("write", 1, [1]), ("done", 1),
                           ("begin", 1), ("step", 3, 4.5), ("step", 4, 6.5), ("write", 2, [1, 2]), ("done", 2),
                           ("begin", 2), ("step", 5, 8.5), ("write", 3, [1, 2, 3]), ("done", 3)]
    assert history == _history(tmp_path) == [
        {"epoch": 1, "step": 2, "complete": True, "loss": 1.5, "total": 1.75},  # totals 0.5, 3
        {"epoch": 2, "step": 4, "complete": True, "loss": 5.5, "total": 10.75},  # 7.5, 14
        {"epoch": 3, "step": 5, "complete": False, "loss": 8.5, "total": 22.5}]
    assert loop.manager.checkpoints == [str(tmp_path / "checkpoints" / f"ckpt-{n}") for n in (2, 4, 5)]
    assert loop.global_batch == 2 and loop.first_step_s > 0
    assert loop.step_images == 2 * 4  # the run's first step is not timed


def test_resume_continues_the_data_and_the_history(tmp_path):
    ToyLoop(str(tmp_path / "whole"), total_steps=6).run(0)
    ToyLoop(str(tmp_path / "split"), total_steps=4).run(0)
    resumed = ToyLoop(str(tmp_path / "split"), total_steps=6)
    assert resumed.restore() == 4 and float(resumed.total.numpy()) == 14.0
    history = resumed.run(4)
    assert resumed.events[0] == ("begin", 2) and resumed.events[1] == ("step", 5, 8.5)
    assert history == _history(tmp_path / "split") == _history(tmp_path / "whole")
    assert float(resumed.total.numpy()) == 0.5 + 2.5 + 4.5 + 6.5 + 8.5 + 10.5


def test_nothing_to_do_at_the_end(tmp_path):
    ToyLoop(str(tmp_path), total_steps=2).run(0)
    again = ToyLoop(str(tmp_path), total_steps=2)
    assert again.restore() == 2
    assert again.run(2) == _history(tmp_path) and again.events == []


def test_non_finite_loss_stops_before_the_epoch_is_written(tmp_path):
    loop = ToyLoop(str(tmp_path), total_steps=6, bad_at=4)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 4"):
        loop.run(0)
    assert [h["epoch"] for h in _history(tmp_path)] == [1]
    assert loop.manager.checkpoints == [str(tmp_path / "checkpoints" / "ckpt-2")]
    assert loop.events[-1] == ("step", 3, 4.5)


def test_resume_mid_epoch_averages_the_steps_it_ran(tmp_path):
    """A run stopped mid-epoch (--max_steps) and resumed: the epoch's entry is rewritten with the mean of the steps
    the resumed process ran, and the state ends where an uninterrupted run's does."""
    ToyLoop(str(tmp_path), total_steps=3).run(0)
    assert _history(tmp_path)[-1] == {"epoch": 2, "step": 3, "complete": False, "loss": 4.5, "total": 7.5}
    resumed = ToyLoop(str(tmp_path), total_steps=4)
    assert resumed.restore() == 3
    resumed.run(3)
    assert _history(tmp_path)[-1] == {"epoch": 2, "step": 4, "complete": True, "loss": 6.5, "total": 14.0}
    assert float(resumed.total.numpy()) == 14.0


# === checkpoints between epoch ends ===


def _saved_steps(loop):
    return [e[1] for e in loop.events if e[0] == "mid"]


def _ckpt_files(run_dir):
    return sorted(int(f.split("-")[1].split(".")[0]) for f in os.listdir(os.path.join(run_dir, "checkpoints"))
                  if f.startswith("ckpt-") and f.endswith(".index"))


def test_checkpoint_every_steps(tmp_path):
    """Every 2 steps, epochs of 3, 7 steps: mid-epoch checkpoints at steps 2 and 4 (6 is an epoch end, which
    writes its own), epoch-end ones at 3, 6, 7; the last three are kept."""
    loop = ToyLoop(str(tmp_path), total_steps=7, steps_per_epoch=3, save_schedule=SaveSchedule(every_steps=2))
    loop.run(0)
    assert _saved_steps(loop) == [2, 4]
    order = [e[:2] for e in loop.events if e[0] in ("mid", "done")]
    assert order == [("mid", 2), ("done", 1), ("mid", 4), ("done", 2), ("done", 3)]
    assert _ckpt_files(tmp_path) == [4, 6, 7]
    # The step-4 checkpoint holds the state after step 4: 0.5 + 2.5 + 4.5 + 6.5.
    again = ToyLoop(str(tmp_path / "other"), total_steps=7, steps_per_epoch=3)
    again.checkpoint.restore(str(tmp_path / "checkpoints" / "ckpt-4")).assert_existing_objects_matched()
    assert float(again.total.numpy()) == 14.0 and int(again.step.numpy()) == 4


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_save_schedule_minutes_on_a_fake_clock():
    clock = FakeClock()
    schedule = SaveSchedule(every_minutes=2, clock=clock)
    clock.now += 119.0
    assert not schedule.due(1)
    clock.now += 1.0
    assert schedule.due(2)
    schedule.saved()
    clock.now += 60.0
    assert not schedule.due(3)
    assert SaveSchedule(every_steps=3, clock=clock).due(6) and not SaveSchedule(every_steps=3, clock=clock).due(7)
    assert not SaveSchedule(clock=clock).due(1)  # neither interval set: only epoch ends


def test_checkpoint_every_minutes_in_the_loop(tmp_path):
    """Each step takes 40 s on the fake clock, one checkpoint a minute: due after steps 2 (80 s), 4 (160 s −
    80 s = 80 s ≥ 60 s) and so on; the epoch end at step 6 writes its own and restarts the minutes."""
    clock = FakeClock()

    def tick(step):
        clock.now += 40.0

    loop = ToyLoop(str(tmp_path), total_steps=8, steps_per_epoch=6, on_step=tick,
                   save_schedule=SaveSchedule(every_minutes=1, clock=clock))
    loop.run(0)
    assert _saved_steps(loop) == [2, 4]  # step 6 ends epoch 1; 7 is 40 s after it; 8 ends the run
    assert _ckpt_files(tmp_path) == [4, 6, 8]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_checkpoints_the_step_and_resume_is_exact(tmp_path, signum):
    """A signal during step 3 of an epoch of 4: the step finishes, a checkpoint at step 3 is written, the loop
    raises Interrupted (exit code 128 + signal); resumed from it, the run ends where an uninterrupted one does."""
    before = signal.getsignal(signum)
    ToyLoop(str(tmp_path / "whole"), total_steps=8, steps_per_epoch=4).run(0)

    def send(step):
        if step == 3:
            os.kill(os.getpid(), signum)

    loop = ToyLoop(str(tmp_path / "split"), total_steps=8, steps_per_epoch=4, on_step=send)
    with pytest.raises(Interrupted) as info:
        loop.run(0)
    assert info.value.step == 3 and info.value.exit_code == 128 + signum
    assert info.value.path == str(tmp_path / "split" / "checkpoints" / "ckpt-3")
    assert [e for e in loop.events if e[0] == "step"][-1][1] == 3  # no step after the signal
    assert signal.getsignal(signum) is before  # the loop's handler is gone
    resumed = ToyLoop(str(tmp_path / "split"), total_steps=8, steps_per_epoch=4)
    assert resumed.restore() == 3 and float(resumed.total.numpy()) == 0.5 + 2.5 + 4.5
    resumed.run(3)
    assert resumed.events[1] == ("step", 4, 6.5)  # the data stream continues at step 4
    assert float(resumed.total.numpy()) == sum(2 * i + 0.5 for i in range(8))
    assert _history(tmp_path / "split")[-1] == _history(tmp_path / "whole")[-1]


def test_signal_in_the_last_step_of_an_epoch_stops_after_its_checkpoint(tmp_path):
    def send(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    loop = ToyLoop(str(tmp_path), total_steps=6, steps_per_epoch=2, on_step=send)
    with pytest.raises(Interrupted) as info:
        loop.run(0)
    assert info.value.step == 2 and _saved_steps(loop) == []  # the epoch's own checkpoint
    assert loop.events[-1] == ("done", 1) and _ckpt_files(tmp_path) == [2]


def _truncate(path, size=0):
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("damage", ["truncated data", "missing data", "truncated index"])
def test_unreadable_latest_checkpoint_warns_and_uses_the_previous(tmp_path, caplog, damage):
    ToyLoop(str(tmp_path), total_steps=6).run(0)  # checkpoints 2, 4, 6
    ckpt = tmp_path / "checkpoints"
    if damage == "truncated data":
        _truncate(ckpt / "ckpt-6.data-00000-of-00001", 4)
    elif damage == "missing data":
        os.unlink(ckpt / "ckpt-6.data-00000-of-00001")
    else:
        _truncate(ckpt / "ckpt-6.index", 10)
    resumed = ToyLoop(str(tmp_path), total_steps=6)
    with caplog.at_level(logging.WARNING):
        assert resumed.restore() == 4
    assert float(resumed.total.numpy()) == 0.5 + 2.5 + 4.5 + 6.5
    assert any("ckpt-6 cannot be read" in r.getMessage() for r in caplog.records)
    resumed.run(4)  # and the run goes on from there to the end
    assert float(resumed.total.numpy()) == sum(2 * i + 0.5 for i in range(6))


def test_no_readable_checkpoint_is_an_error(tmp_path):
    ToyLoop(str(tmp_path), total_steps=4).run(0)
    for n in (2, 4):
        _truncate(tmp_path / "checkpoints" / f"ckpt-{n}.index", 10)
    with pytest.raises(ValueError, match="no checkpoint in .* can be read"):
        ToyLoop(str(tmp_path), total_steps=4).restore()


def test_out_of_memory_in_a_step_names_the_flags(tmp_path):
    loop = ToyLoop(str(tmp_path), total_steps=6)
    step_fn = loop.step_fn

    def step(batch):
        if int(loop.step.numpy()) == 2:  # the first step after the epoch-1 checkpoint
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,256,32,32]")
        return step_fn(batch)

    loop.step_fn = step
    with pytest.raises(OutOfMemoryError) as info:
        loop.run(0)
    message = str(info.value)
    assert message.startswith("out of memory at step 3 (OOM when allocating tensor")
    assert "\n" not in message
    for flag in MEMORY_FLAGS:
        assert flag in message
    assert _ckpt_files(tmp_path) == [2]  # the last checkpoint is as it was

"""The step loop shared by search and training, on a toy step: epochs (the last one partial), the history and
checkpoint written at each epoch's end, exact resume from a checkpoint, and the non-finite loss guard."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.run.loop import NonFiniteLossError, StepLoop
from hdas_tf.run.strategy import distributed_step


class ToyLoop(StepLoop):
    """Adds each batch's mean to a variable; batch i holds [2i, 2i + 1] (mean 2i + 0.5), or inf from ``bad_at``."""

    def __init__(self, run_dir, total_steps, steps_per_epoch=2, bad_at=None):
        self.total = tf.Variable(0.0, dtype=tf.float64)
        self.step = tf.Variable(0, dtype=tf.int64)
        self.events = []
        values = tf.data.Dataset.range(1000).map(lambda i: tf.cast(i, tf.float64))
        if bad_at is not None:
            values = values.map(lambda v: tf.where(v >= 2.0 * (bad_at - 1), tf.constant(np.inf, tf.float64), v))
        strategy = tf.distribute.get_strategy()

        def step(x):
            mean = tf.reduce_mean(x)
            self.total.assign_add(mean)
            return {"loss": mean, "total": self.total.read_value()}

        super().__init__(strategy, distributed_step(strategy, step), values.batch(2), run_dir, steps_per_epoch,
                         total_steps, dict(total=self.total, step=self.step))

    def begin_epoch(self, epoch):
        self.events.append(("begin", epoch))

    def after_step(self, step, out, seconds):
        self.events.append(("step", step, out["loss"]))

    def epoch_record(self, stats):
        return {"epoch": stats.epoch, "step": stats.step, "complete": stats.complete, **stats.means}

    def write_epoch(self, record, history):
        self.events.append(("write", record["epoch"], [h["epoch"] for h in history]))

    def checkpoint_number(self, record):
        self.step.assign(record["step"])
        return record["step"]

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

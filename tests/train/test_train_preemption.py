"""Training stopped by SIGTERM in the middle of an epoch: a checkpoint at that step (numbered by the global step),
and a resumed run that ends with the weights of an uninterrupted one (the drop path ramp, the learning rate and
the data stream continue at the step)."""

import os
import signal

import keras
import numpy as np
import pytest

from hdas_tf.run.checkpoints import Interrupted
from hdas_tf.train.config import TrainConfig
from hdas_tf.train.job import TrainJob, TrainLoop

# 64 examples → 4 steps of 16 per epoch, 3 epochs; drop path and augmentation on, so their seeds matter.
TINY = dict(genotype="DARTS_V2", init_channels=4, layers=3, batch_size=16, num_examples=64, epochs=3,
            drop_path_rate=0.3, augment="cifar", cutout=8, log_every=2)


def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    whole = TrainJob(TrainConfig(**TINY), tmp_path / "whole")
    whole.run()

    original = TrainLoop.after_step

    def signal_at_step_6(self, step, out, seconds):
        original(self, step, out, seconds)
        if step == 6:  # epoch 2, step 2 of 4
            os.kill(os.getpid(), signal.SIGTERM)

    keras.utils.set_random_seed(0)
    with monkeypatch.context() as m:
        m.setattr(TrainLoop, "after_step", signal_at_step_6)
        with pytest.raises(Interrupted) as info:
            TrainJob(TrainConfig(**TINY), tmp_path / "split").run()
    assert info.value.step == 6 and info.value.path.endswith("ckpt-6")
    resumed = TrainJob(TrainConfig(**TINY), tmp_path / "split", resume=True)
    summary = resumed.run()
    assert summary["start_epoch"] == 1 and summary["steps"] == 12
    for a, b in zip(whole.network.variables, resumed.network.variables):  # BN statistics and drop path seeds too
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

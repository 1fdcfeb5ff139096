"""Learning-rate schedules, constant within an epoch as the reference steps its PyTorch schedulers once per epoch.

Registered for Keras serialization under the package "hdas_tf" with their class names; those names are what a
saved configuration refers to, so they must not change.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

_PACKAGE = "hdas_tf"

LR_SCHEDULES = ("cosine", "exponential")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CosineEpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(e) = lr_min + (lr_max − lr_min)(1 + cos(π e / E)) / 2, constant within epoch e = ⌊step / steps_per_epoch⌋.

    PyTorch's ``CosineAnnealingLR`` stepped once per epoch, as the DARTS family uses it.
    """

    def __init__(self, initial_learning_rate, min_learning_rate, epochs, steps_per_epoch):
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"epochs and steps_per_epoch must be >= 1, received {epochs}, {steps_per_epoch}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.min_learning_rate = float(min_learning_rate)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.float32), float(self.steps_per_epoch))
        epoch = tf.minimum(epoch, float(self.epochs))
        cosine = 0.5 * (1.0 + tf.cos(math.pi * epoch / self.epochs))
        return self.min_learning_rate + (self.initial_learning_rate - self.min_learning_rate) * cosine

    def get_config(self):
        return dict(initial_learning_rate=self.initial_learning_rate, min_learning_rate=self.min_learning_rate,
                    epochs=self.epochs, steps_per_epoch=self.steps_per_epoch)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExponentialEpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(e) = lr_0 · decay^e, constant within epoch e = ⌊step / steps_per_epoch⌋ (PyTorch ``StepLR(1, γ)``,
    the DARTS ImageNet recipe with γ = 0.97)."""

    def __init__(self, initial_learning_rate, decay, steps_per_epoch):
        if not 0.0 < decay <= 1.0 or steps_per_epoch < 1:
            raise ValueError(f"ExponentialEpochSchedule: decay must be in (0, 1] and steps_per_epoch >= 1, "
                             f"received {decay}, {steps_per_epoch}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay = float(decay)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.float32), float(self.steps_per_epoch))
        return self.initial_learning_rate * tf.pow(self.decay, epoch)

    def get_config(self):
        return dict(initial_learning_rate=self.initial_learning_rate, decay=self.decay,
                    steps_per_epoch=self.steps_per_epoch)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up per step into another schedule: lr(t) = base(T) · (t + 1) / T for t < T, then base(t).

    It ends at the value the base schedule has at step T, so the rate is continuous there.
    """

    def __init__(self, schedule, warmup_steps):
        if warmup_steps < 1:
            raise ValueError(f"LinearWarmup: warmup_steps must be >= 1, received {warmup_steps}")
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.schedule(float(self.warmup_steps)) * (step + 1.0) / float(self.warmup_steps)
        return tf.where(step < float(self.warmup_steps), warm, self.schedule(step))

    def get_config(self):
        return dict(schedule=keras.optimizers.schedules.serialize(self.schedule), warmup_steps=self.warmup_steps)


def learning_rate_schedule(kind: str, initial: float, epochs: int, steps_per_epoch: int, minimum: float = 0.0,
                           decay: float = 0.97, warmup_epochs: int = 0):
    """The training schedule: "cosine" (per epoch from ``initial`` to ``minimum``, PyTorch
    ``CosineAnnealingLR``; the CIFAR recipe anneals to 0) or "exponential" (×``decay`` per epoch), each
    optionally after ``warmup_epochs`` of linear per-step warm-up."""
    if kind == "cosine":
        schedule = CosineEpochSchedule(initial, minimum, epochs, steps_per_epoch)
    elif kind == "exponential":
        schedule = ExponentialEpochSchedule(initial, decay, steps_per_epoch)
    else:
        raise ValueError(f"learning-rate schedule must be 'cosine' or 'exponential', received {kind!r}")
    if warmup_epochs:
        schedule = LinearWarmup(schedule, warmup_epochs * steps_per_epoch)
    return schedule

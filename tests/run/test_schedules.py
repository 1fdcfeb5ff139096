"""The per-epoch learning-rate schedules: values by hand, warm-up continuity, the config round trip and the
Keras serialization names saved configurations refer to."""

import math

import keras
import pytest

from hdas_tf.run.schedules import CosineEpochSchedule, ExponentialEpochSchedule, LinearWarmup, learning_rate_schedule


def test_cosine_schedule_is_per_epoch():
    s = CosineEpochSchedule(0.025, 0.001, epochs=50, steps_per_epoch=10)
    assert float(s(0)) == pytest.approx(0.025)
    assert float(s(9)) == pytest.approx(0.025)  # constant within an epoch
    expected = 0.001 + 0.024 * 0.5 * (1 + math.cos(math.pi * 25 / 50))
    assert float(s(250)) == pytest.approx(expected)
    assert float(s(499)) == pytest.approx(0.001 + 0.024 * 0.5 * (1 + math.cos(math.pi * 49 / 50)))


def test_learning_rate_schedules():
    cosine = learning_rate_schedule("cosine", 0.025, 4, 10)
    expected = [0.025, 0.025, 0.0125 * (1 + math.cos(math.pi / 4)), 0.0125 * (1 + math.cos(3 * math.pi / 4))]
    assert [float(cosine(s)) for s in (0, 9, 10, 39)] == pytest.approx(expected)
    exponential = learning_rate_schedule("exponential", 0.1, 250, 10)
    assert isinstance(exponential, ExponentialEpochSchedule)
    assert [float(exponential(s)) for s in (0, 10, 25)] == pytest.approx([0.1, 0.097, 0.1 * 0.97 ** 2])
    warm = learning_rate_schedule("cosine", 0.1, 10, 4, warmup_epochs=2)
    assert isinstance(warm, LinearWarmup)
    after = 0.05 * (1 + math.cos(math.pi * 2 / 10))  # the cosine value at the end of the warm-up (epoch 2)
    assert [float(warm(s)) for s in (0, 3, 7, 8)] == pytest.approx([after / 8, after / 2, after, after])
    clone = LinearWarmup.from_config(warm.get_config())
    assert float(clone(5)) == pytest.approx(float(warm(5)))
    with pytest.raises(ValueError, match="cosine"):
        learning_rate_schedule("step", 0.1, 10, 4)


def test_registered_serialization_names():
    for cls in (CosineEpochSchedule, ExponentialEpochSchedule, LinearWarmup):
        assert keras.saving.get_registered_name(cls) == f"hdas_tf>{cls.__name__}"
    warm = LinearWarmup(CosineEpochSchedule(0.1, 0.0, 10, 4), 8)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(warm))
    assert type(clone) is LinearWarmup and type(clone.schedule) is CosineEpochSchedule
    assert [float(clone(s)) for s in (0, 7, 8, 39)] == pytest.approx([float(warm(s)) for s in (0, 7, 8, 39)])

"""The records of the data package: :class:`DataInfo` (what the model and the loop need to know), :class:`Source`
(an opened data set) and :class:`DataError`; and the helpers the sources share (split lookup, per-channel
statistics, map functions without AutoGraph)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from hdas_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE

# Decoded images held in memory (eager folders) or cached by tf.data (TFDS sets) only below this size.
IN_MEMORY_MAX_BYTES = 512 << 20
# Statistics of sets whose mean/std are not published (tfds:NAME, large folders) use this many examples.
STATS_MAX_EXAMPLES = 10_000


class DataError(UserError):
    """A data set is missing, malformed or inconsistent with the requested configuration."""


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the model and the training loop need to know about a data set."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, 3) of the model input after any resize/crop
    mean: tuple[float, float, float]  # per channel, on the [0, 1] scale
    std: tuple[float, float, float]
    class_names: tuple[str, ...] | None
    num_train: int  # examples in the training split (before the search split)
    num_test: int


@dataclasses.dataclass(frozen=True)
class Source:
    """An opened data set: its facts and a function giving each split as (uint8 image, int32 label)."""

    name: str
    num_classes: int
    class_names: tuple[str, ...] | None
    image_hw: tuple[int, int] | None  # native size when every image has it, else None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_train: int
    num_test: int
    in_memory: bool  # already a tensor in memory: tf.data cache would only duplicate it
    default_size: tuple[int, int] | None  # model input size when images vary and no image_size is given
    examples: Callable[[str], tf.data.Dataset]


def plain(fn):
    # The map functions branch only on static Python values, so AutoGraph conversion is pure overhead.
    return tf.autograph.experimental.do_not_convert(fn)


def split_arrays(splits, split, name):
    """``splits[split]``, or a DataError naming the splits the data set has."""
    if split not in splits:
        raise DataError(f"data set '{name}' has no split {split!r}; it has {sorted(splits)}.")
    return splits[split]


def channel_stats(images_uint8: np.ndarray):
    """Per-channel mean and (population) std on the [0, 1] scale of a uint8 array [..., 3]."""
    x = images_uint8.reshape(-1, 3).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    std = np.sqrt(np.maximum((x * x).mean(axis=0) - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def dataset_stats(ds: tf.data.Dataset):
    """Per-channel mean and std of a (uint8 image, label) dataset, summed in float64 per example."""

    def sums(image, label):
        x = tf.reshape(tf.cast(image, tf.float64) / 255.0, [-1, 3])
        return tf.reduce_sum(x, 0), tf.reduce_sum(x * x, 0), tf.cast(tf.shape(x)[0], tf.float64)

    total, total_sq, count = np.zeros(3), np.zeros(3), 0.0
    for s, sq, n in ds.map(plain(sums), num_parallel_calls=AUTOTUNE).batch(1024).as_numpy_iterator():
        total += s.sum(0)
        total_sq += sq.sum(0)
        count += n.sum()
    if count == 0:
        raise DataError("cannot compute normalisation statistics of an empty training split.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)

"""The ``digits`` source: scikit-learn's bundled handwritten digits (1797 8×8 images, 10 classes) as 32×32×3
uint8, real data with no download (the offline default).

Fixed split: a permutation drawn with ``np.random.default_rng(DIGITS_SPLIT_SEED)``; its first 1500 indices are
the training set, the last 297 the test set. It does not depend on the run's seed, so test accuracies of
different runs are comparable.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from hdas_tf.data.source import Source, channel_stats, split_arrays

DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TRAIN = 1500


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """(train images, train labels, test images, test labels): uint8 [N, 32, 32, 3] and int32 [N]."""
    from sklearn.datasets import load_digits  # imported here: only this source needs scikit-learn

    digits = load_digits()
    # 8×8 values 0..16 → 32×32 by repeating each pixel 4×4, scaled to 0..255, copied to 3 channels.
    big = np.kron(digits.images, np.ones((1, 4, 4)))
    big = np.round(big * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(big[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    train, test = perm[:DIGITS_NUM_TRAIN], perm[DIGITS_NUM_TRAIN:]
    arrays = (images[train], labels[train], images[test], labels[test])
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=1)
def digits_source() -> Source:
    x_train, y_train, x_test, y_test = _digits_arrays()
    mean, std = channel_stats(x_train)
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}

    def examples(split):
        return tf.data.Dataset.from_tensor_slices(split_arrays(splits, split, "digits"))

    return Source(name="digits", num_classes=10, class_names=tuple(str(d) for d in range(10)),
                  image_hw=(32, 32), mean=mean, std=std, num_train=len(y_train), num_test=len(y_test),
                  in_memory=True, default_size=None, examples=examples)

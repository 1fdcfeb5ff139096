"""Augmentation of the search split: with "cifar" every example of both halves is its raw image shifted by up to 4
pixels with zero fill and maybe mirrored; the stream is a function of the seed and the step; "none" gives the raw
images; the per-data-set defaults."""

import numpy as np
import pytest

from hdas_tf import data

NUM, BATCH, SEED = 48, 8, 3


def _raw_halves():
    """The raw digits of the weight and architecture halves (0..1 scale) and their labels."""
    pairs = list(data.raw_examples("digits", "train").take(NUM).as_numpy_iterator())
    images = np.stack([x for x, _ in pairs]).astype(np.float64) / 255.0
    labels = np.array([y for _, y in pairs])
    idx_w, idx_a = data.split_indices(NUM, 0.5, SEED)
    return (images[idx_w], labels[idx_w]), (images[idx_a], labels[idx_a])


def _batches(augment, seed=SEED, count=2, skip=0):
    """``count`` (weight batch, arch batch) pairs, un-normalised to the 0..1 scale."""
    w, a, info = data.search_datasets("digits", batch_size=BATCH, num_examples=NUM, seed=seed, augment=augment)
    mean, std = np.array(info.mean), np.array(info.std)
    out = []
    for (xw, yw), (xa, ya) in zip(w.skip(skip).take(count), a.skip(skip).take(count)):
        out.append(((xw.numpy() * std + mean, yw.numpy()), (xa.numpy() * std + mean, ya.numpy())))
    return out


def _crops_and_flips(raw):
    """Every zero-padded (4 pixels) crop of ``raw``, mirrored or not, by (dy, dx, flipped)."""
    h, w, _ = raw.shape
    padded = np.pad(raw, ((4, 4), (4, 4), (0, 0)))
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            crop = padded[4 + dy:4 + dy + h, 4 + dx:4 + dx + w]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop[:, ::-1]


def _find(image, candidates):
    """Indices of the raw images ``image`` equals (up to float32 normalisation round trips)."""
    return [i for i, raw in enumerate(candidates) if np.allclose(image, raw, atol=1e-5)]


def test_none_gives_the_raw_images_of_each_half():
    halves = _raw_halves()
    for step in _batches("none"):
        for (x, y), (raw, labels) in zip(step, halves):
            for image, label in zip(x, y):
                found = _find(image, raw)
                assert found, "a search example is not a raw image of its half"
                assert label in labels[found]


def test_cifar_crops_and_flips_both_halves_with_zero_fill():
    plain = _batches("none")  # the same shuffle: the augmentation is the only difference
    augmented = _batches("cifar")
    changed = total = 0
    for step_plain, step_aug in zip(plain, augmented):
        for (x_raw, y_raw), (x_aug, y_aug) in zip(step_plain, step_aug):
            np.testing.assert_array_equal(y_raw, y_aug)
            for raw, image in zip(x_raw, x_aug):
                moves = [move for move, crop in _crops_and_flips(raw) if np.allclose(image, crop, atol=1e-5)]
                assert moves, "an augmented example is no zero-padded crop (or its mirror) of its raw image"
                total += 1
                changed += (0, 0, False) not in moves
    # A crop-and-flip is the identity with probability 1/162 per example.
    assert total == 2 * 2 * BATCH and changed >= total - 2


def test_same_seed_and_step_same_batches():
    first = _batches("cifar", count=3)
    again = _batches("cifar", count=3)
    for u, v in zip(first, again):
        for (xu, yu), (xv, yv) in zip(u, v):
            np.testing.assert_array_equal(xu, xv)
            np.testing.assert_array_equal(yu, yv)
    # The stream at step k does not depend on how it was reached: skipping k batches (as a resume does) gives it.
    resumed = _batches("cifar", count=1, skip=2)
    for (xu, _), (xv, _) in zip(first[2], resumed[0]):
        np.testing.assert_array_equal(xu, xv)
    other = _batches("cifar", seed=SEED + 1, count=1)
    assert not np.array_equal(first[0][0][0], other[0][0][0])


@pytest.mark.parametrize("dataset, expected", [
    ("digits", "none"), ("cifar10", "cifar"), ("cifar100", "cifar"), ("folder:/some/images", "cifar"),
    ("tfds:svhn_cropped", "cifar"), ("imagenet2012", "imagenet"),
])
def test_default_search_augment_per_data_set(dataset, expected):
    assert data.default_search_augment(dataset) == expected

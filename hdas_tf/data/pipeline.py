"""Input pipelines: the bundled digits set, TFDS sets, image folders, the search split and augmentation.

Every source yields unbatched ``(uint8 image [H, W, 3], int32 label)`` pairs in a fixed order, and two
pipelines are built on top:

- :func:`search_datasets` splits the training set into a weight half ("train") and an architecture half
  ("val") with a seeded permutation (DESIGN §5: DARTS trains w on one half and α on the other) and returns
  two infinite, shuffled, batched datasets;
- :func:`train_test_datasets` returns the augmented training set and the unaugmented test set (or a
  held-out validation part of the training set) for training a derived network from scratch.

Sources (the ``dataset`` string, see :data:`DATASETS_HELP`):

- ``digits``: scikit-learn's bundled handwritten digits (1797 8×8 images, 10 classes), upsampled to
  32×32×3 uint8 with ``np.kron`` (pixel values 0..16 scaled to 0..255). Real data with no download, the
  offline default. Fixed split: a permutation drawn with ``np.random.default_rng(DIGITS_SPLIT_SEED)``;
  its first 1500 indices are the training set, the last 297 the test set. The split does not depend on
  the run's seed, so test accuracies of different runs are comparable.
- ``cifar10``, ``cifar100``, ``imagenet2012``, ``tfds:NAME``: TensorFlow Datasets. Nothing is downloaded
  unless ``download=True``; an unprepared set fails at once with a message that says which archive to
  put where. Archives placed in ``manual_dir`` are used without network access.
- ``folder:PATH``: one sub-folder per class (every image is training data), or ``PATH/train`` and
  ``PATH/test`` (or ``PATH/val``) with the same class sub-folders. Class labels follow the sorted folder
  names. Folders of up to :data:`FOLDER_EAGER_MAX_FILES` images are decoded once at load time, so a
  corrupt file is reported by name before training starts.

Batches are ``(float32 [B, H, W, 3] normalised images, int32 [B] labels)``. Batch sizes are global unless
an ``input_context`` is given (``strategy.distribute_datasets_from_function``), in which case the data is
sharded per input pipeline and batched with the per-replica batch size (KERAS_NOTES §6).

Normalisation uses the published constants for CIFAR-10/100 and ImageNet; for digits, folders and
``tfds:NAME`` it is computed per channel from the training images on the [0, 1] scale (at most the first
:data:`STATS_MAX_EXAMPLES` of a TFDS set; an evenly spaced sample of :data:`LARGE_FOLDER_SAMPLE` images
of a large folder). Digits and small folders live in memory as tensors; a TFDS set of fixed image size
is cached after decoding when the selected part fits in :data:`IN_MEMORY_MAX_BYTES`.

Randomness is reproducible: the split is a seeded NumPy permutation, shuffling uses tf.data seeds, and
augmentation uses stateless random ops seeded by (seed, element counter), so the same seed gives the same
batches regardless of map parallelism.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

AUTOTUNE = tf.data.AUTOTUNE

DATASETS_HELP = (
    "Data set: 'digits' (scikit-learn's bundled handwritten digits upsampled to 32x32x3, 1500 train / "
    "297 test, no download), 'cifar10', 'cifar100', 'imagenet2012' (TensorFlow Datasets, read from "
    "--data_dir; archives placed in --manual_dir are used offline; --download fetches CIFAR from the "
    "internet; ImageNet needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in --manual_dir), "
    "'tfds:NAME' (any TFDS image classification set with 'image' and 'label' features), or "
    "'folder:PATH' (PATH/<class>/<image> or PATH/train/<class>/<image> + PATH/test/<class>/<image>; "
    "jpg, jpeg, png, bmp, gif)."
)

AUGMENTATIONS = ("none", "cifar", "imagenet")

# The digits train/test split is fixed by this seed, independent of the run's seed (module docstring).
DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TRAIN = 1500

# Normalisation constants on the [0, 1] scale (the values the DARTS-family reference code uses).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ImageNet evaluation: resize so the crop is this fraction of the resized image (224 of 256), centre crop.
IMAGENET_EVAL_CROP_FRACTION = 224 / 256
IMAGENET_DEFAULT_SIZE = 224

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Folders with at most this many images are decoded eagerly (each file once) to validate every file; larger
# folders are checked by file signature only and decoded inside the pipeline.
FOLDER_EAGER_MAX_FILES = 10_000
# Decoded images held in memory (eager folders) or cached by tf.data (TFDS sets) only below this size.
IN_MEMORY_MAX_BYTES = 512 << 20
# Statistics of sets whose mean/std are not published (tfds:NAME, large folders) use this many examples.
STATS_MAX_EXAMPLES = 10_000
LARGE_FOLDER_SAMPLE = 256
SHUFFLE_BUFFER = 10_000

# TFDS sets with known recipes: evaluation split, normalisation, and the archives TFDS reads from manual_dir.
_TFDS_PRESETS = {
    "cifar10": dict(
        test_split="test", mean=CIFAR10_MEAN, std=CIFAR10_STD,
        archives=("cifar-10-binary.tar.gz",), manual_only=False, default_size=None),
    "cifar100": dict(
        test_split="test", mean=CIFAR100_MEAN, std=CIFAR100_STD,
        archives=("cifar-100-binary.tar.gz",), manual_only=False, default_size=None),
    "imagenet2012": dict(
        test_split="validation", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        archives=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"), manual_only=True,
        default_size=IMAGENET_DEFAULT_SIZE),
}

# Distinct streams derived from the run seed, so the two search halves never share a shuffle order.
_STREAM_WEIGHT, _STREAM_ARCH, _STREAM_TRAIN = 1, 2, 3


class DataError(ValueError):
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
class _Source:
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


# --------------------------------------------------------------------------------------------------
# Public API


def dataset_info(dataset: str, data_dir=None, image_size=None, manual_dir=None, download=False) -> DataInfo:
    """Returns the :class:`DataInfo` of ``dataset`` (see :data:`DATASETS_HELP`) without building a pipeline.

    Args:
        dataset: str. The data set string.
        data_dir: str. TFDS data directory. Defaults to TFDS's own (``~/tensorflow_datasets``).
        image_size: int or (height, width). Resize the model input to this size. Defaults to the size of
            the data (224 for imagenet2012, whose images vary).
        manual_dir: str. Where TFDS looks for archives. Defaults to ``<data_dir>/downloads/manual``.
        download: bool. Allow TFDS to download (needs internet). Defaults to False.
    """
    return _make_info(_open(dataset, data_dir, manual_dir, download), image_size)


def check_num_classes(info: DataInfo, num_classes) -> None:
    """Raises ValueError if a configured class count disagrees with the data (before any training)."""
    if num_classes is None:
        return
    if int(num_classes) != info.num_classes:
        raise DataError(
            f"num_classes={num_classes} was requested but data set '{info.name}' has {info.num_classes} "
            f"classes; set num_classes={info.num_classes} (or leave it unset to take it from the data)."
        )


def split_indices(num_examples: int, portion: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(num_examples)`` into two disjoint sorted index arrays that cover it.

    The first part has ``floor(portion * num_examples)`` indices (the DARTS convention); the same seed
    always gives the same split.
    """
    if not 0.0 < portion < 1.0:
        raise DataError(f"the split portion must be strictly between 0 and 1, got {portion}.")
    num_first = int(math.floor(portion * num_examples))
    if num_first == 0 or num_first == num_examples:
        raise DataError(
            f"splitting {num_examples} examples with portion {portion} leaves one part empty "
            f"({num_first} / {num_examples - num_first}); use more examples or a portion nearer 0.5."
        )
    perm = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(perm[:num_first]), np.sort(perm[num_first:])


def search_batches_per_epoch(info: DataInfo, batch_size: int, train_portion: float = 0.5,
                             num_examples=None) -> int:
    """Number of weight batches in one pass over the weight half of the search split."""
    num = _capped(info.num_train, num_examples)
    return int(math.floor(train_portion * num)) // int(batch_size)


def search_datasets(dataset="digits", batch_size=64, train_portion=0.5, seed=0, data_dir=None,
                    image_size=None, download=False, manual_dir=None, augment="none", input_context=None,
                    num_examples=None):
    """Returns ``(weight_ds, arch_ds, info)`` for an architecture search (DESIGN §5).

    The training split (its first ``num_examples`` examples if given) is divided by
    :func:`split_indices` with ``train_portion`` and ``seed``: the first part trains the weights, the
    second the architecture variables. Both datasets are infinite, shuffled (reshuffled every pass) and
    batched with ``drop_remainder=True``; they yield ``(float32 [B, H, W, 3], int32 [B])``.

    Args:
        batch_size: int. The global batch, or, with ``input_context``, the global batch from which the
            per-replica batch is taken (``input_context.get_per_replica_batch_size``).
        augment: str. "none" (the DARTS search default), "cifar" (no cutout in search) or "imagenet".
        input_context: tf.distribute.InputContext. Shard by input pipeline and batch per replica.
        num_examples: int. Use only the first this-many training examples (tiny runs).
        Other arguments as in :func:`dataset_info`.
    """
    _check_augment(augment)
    source = _open(dataset, data_dir, manual_dir, download)
    info = _make_info(source, image_size)
    num = _capped(source.num_train, num_examples)
    weight_idx, arch_idx = split_indices(num, train_portion, seed)
    per_batch = _per_replica_batch(batch_size, input_context)
    for part, idx in (("weight", weight_idx), ("architecture", arch_idx)):
        if len(idx) < batch_size:
            raise DataError(
                f"the {part} half of the search split has {len(idx)} examples (train_portion="
                f"{train_portion} of {num}), fewer than batch_size={batch_size}; lower batch_size or "
                f"use more examples."
            )
    common = dict(source=source, info=info, split="train", num_examples=num, training=True,
                  augment=augment, cutout=0, batch_size=per_batch, input_context=input_context,
                  repeat=True)
    weight_ds = _pipeline(indices=weight_idx, seed=_derive_seed(seed, _STREAM_WEIGHT), **common)
    arch_ds = _pipeline(indices=arch_idx, seed=_derive_seed(seed, _STREAM_ARCH), **common)
    return weight_ds, arch_ds, info


def train_test_datasets(dataset="digits", batch_size=96, seed=0, data_dir=None, image_size=None,
                        download=False, manual_dir=None, augment="cifar", cutout=16, validation_fraction=0.0,
                        input_context=None, num_examples=None, repeat=False,
                        eval_crop_fraction=IMAGENET_EVAL_CROP_FRACTION):
    """Returns ``(train_ds, eval_ds, info)`` for training a derived network from scratch.

    ``train_ds`` is augmented, shuffled and batched with ``drop_remainder=True`` (repeated forever if
    ``repeat``); ``eval_ds`` is unaugmented, in order, and keeps the last partial batch. ``eval_ds`` is the
    test split, or, if ``validation_fraction > 0``, a seeded held-out part of the training split (which
    is then not trained on).

    Args:
        augment: str. "cifar" (pad 4 + random crop, flip, then cutout after normalisation), "imagenet"
            (random-resized crop, flip, colour jitter; eval: resize and centre crop) or "none".
        cutout: int. Side of the cutout square of the CIFAR recipe; 0 disables it. Only "cifar" uses it.
        num_examples: int. Use only the first this-many examples of the training split and of the
            evaluation split (tiny runs).
        eval_crop_fraction: float. ImageNet-style evaluation resizes so that the crop is this fraction of
            the resized image (224 / 256).
        Other arguments as in :func:`search_datasets`.
    """
    _check_augment(augment)
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    source = _open(dataset, data_dir, manual_dir, download)
    info = _make_info(source, image_size)
    per_batch = _per_replica_batch(batch_size, input_context)
    num = _capped(source.num_train, num_examples)
    common = dict(source=source, info=info, augment=augment, cutout=cutout, input_context=input_context,
                  eval_crop_fraction=eval_crop_fraction)
    if validation_fraction > 0:
        train_idx, val_idx = split_indices(num, 1.0 - validation_fraction, seed)
        eval_ds = _pipeline(split="train", num_examples=num, indices=val_idx, training=False,
                            batch_size=per_batch, seed=0, repeat=False, **common)
    else:
        if source.num_test == 0:
            raise DataError(
                f"data set '{source.name}' has no test split; pass validation_fraction > 0 to hold out "
                f"part of the training split, or (for folders) use PATH/train and PATH/test."
            )
        train_idx = None
        eval_ds = _pipeline(split="test", num_examples=_capped(source.num_test, num_examples), indices=None,
                            training=False, batch_size=per_batch, seed=0, repeat=False, **common)
    num_used = num if train_idx is None else len(train_idx)
    if num_used < batch_size:
        raise DataError(
            f"the training set has {num_used} examples, fewer than batch_size={batch_size}, so no full batch "
            f"exists; lower batch_size or use more examples."
        )
    train_ds = _pipeline(split="train", num_examples=num, indices=train_idx, training=True,
                         batch_size=per_batch, seed=_derive_seed(seed, _STREAM_TRAIN), repeat=repeat,
                         **common)
    return train_ds, eval_ds, info


def search_input_fn(**kwargs) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A function for ``strategy.distribute_datasets_from_function`` yielding zipped search batches.

    Each element is ``((x_weight, y_weight), (x_arch, y_arch))`` with the per-replica batch size taken from
    the context; ``kwargs`` are those of :func:`search_datasets` (``batch_size`` is the global batch).
    """

    def input_fn(input_context):
        weight_ds, arch_ds, _ = search_datasets(input_context=input_context, **kwargs)
        return zip_search(weight_ds, arch_ds)

    return input_fn


def train_input_fn(which="train", **kwargs) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A function for ``strategy.distribute_datasets_from_function`` giving the "train" or "eval" dataset
    of :func:`train_test_datasets` (called with ``kwargs``) for the context's input pipeline."""
    if which not in ("train", "eval"):
        raise DataError(f"which must be 'train' or 'eval', got {which!r}.")

    def input_fn(input_context):
        train_ds, eval_ds, _ = train_test_datasets(input_context=input_context, **kwargs)
        return train_ds if which == "train" else eval_ds

    return input_fn


def zip_search(weight_ds: tf.data.Dataset, arch_ds: tf.data.Dataset) -> tf.data.Dataset:
    """Zips the two search halves into ``((x_w, y_w), (x_a, y_a))`` elements, the search step's input."""
    return tf.data.Dataset.zip((weight_ds, arch_ds))


def raw_examples(dataset, split="train", data_dir=None, manual_dir=None, download=False) -> tf.data.Dataset:
    """The unbatched ``(uint8 image [H, W, 3], int32 label)`` examples of a split, in the source's order.

    ``split`` is "train" or "test". Images are at their stored size (grayscale already as 3 channels;
    folder images resized to the folder's common size). No shuffling, resizing or normalisation.
    """
    source = _open(dataset, data_dir, manual_dir, download)
    return source.examples(split)


def normalize(images, info: DataInfo) -> tf.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32. Float inputs are taken on the 0..255 scale."""
    x = tf.cast(images, tf.float32) / 255.0
    mean = tf.constant(info.mean, tf.float32)
    std = tf.constant(info.std, tf.float32)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------------
# Augmentation and preprocessing (single images; the pipeline maps them in parallel)


def preprocess(image, info: DataInfo, *, training: bool, augment="none", cutout=0, seed=None,
               eval_crop_fraction=IMAGENET_EVAL_CROP_FRACTION) -> tf.Tensor:
    """Turns one uint8 image into the normalised float32 model input of shape ``info.image_shape``.

    Training with ``augment="cifar"``: zero-pad 4 + random crop, horizontal flip, normalise, then cutout
    (after normalisation, so the square is exactly 0, as in the DARTS code). Training with
    ``augment="imagenet"``: random-resized crop, flip, colour jitter, normalise. Otherwise (evaluation, or
    ``augment="none"``) the deterministic evaluation transform and normalisation.

    Args:
        seed: int tensor of shape [2]. Seed of the stateless random ops; required when training with an
            augmentation.
    """
    _check_augment(augment)
    target = info.image_shape[:2]
    if not training or augment == "none":
        return normalize(_eval_transform(image, target, augment, eval_crop_fraction), info)
    if seed is None:
        raise ValueError("preprocess(training=True) with an augmentation needs a stateless seed, shape [2].")
    crop_seed, flip_seed, jitter_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4))
    if augment == "cifar":
        # The pad-and-crop recipe works at the model input size; bring the image there first.
        x = _eval_transform(image, target, "cifar", eval_crop_fraction)
        x = pad_and_random_crop(x, crop_seed, padding=4)
        x = tf.image.stateless_random_flip_left_right(x, flip_seed)
        x = normalize(x, info)
        if cutout and cutout > 0:
            x = apply_cutout(x, cutout, cutout_seed)
        return x
    x = random_resized_crop(image, target, crop_seed)
    x = tf.image.stateless_random_flip_left_right(x, flip_seed)
    x = color_jitter(x, jitter_seed)
    return normalize(x, info)


def pad_and_random_crop(image, seed, padding=4) -> tf.Tensor:
    """Zero-pads ``padding`` pixels on every side and takes a random crop of the original size."""
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    out = tf.image.stateless_random_crop(padded, size=shape, seed=seed)
    out.set_shape(image.shape)
    return out


def apply_cutout(image, size: int, seed) -> tf.Tensor:
    """Sets a ``size``×``size`` square (clipped at the border) centred at a random pixel to 0.

    As in the DARTS code the centre is uniform over the whole image, so near the border the square is
    smaller: at most ``size``×``size`` pixels are zeroed.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    cy = tf.random.stateless_uniform([], y_seed, minval=0, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], x_seed, minval=0, maxval=width, dtype=tf.int32)
    half = size // 2
    y0, y1 = tf.clip_by_value(cy - half, 0, height), tf.clip_by_value(cy + half, 0, height)
    x0, x1 = tf.clip_by_value(cx - half, 0, width), tf.clip_by_value(cx + half, 0, width)
    rows = tf.range(height)
    cols = tf.range(width)
    inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    return tf.where(inside[:, :, None], tf.zeros_like(image), image)


def random_resized_crop(image, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
    """Inception-style crop: a random box of ``scale`` area fraction and ``ratio`` aspect, resized to
    ``size`` (float32, 0..255). Falls back to the whole image when no box is found in 10 attempts."""
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, box_size)
    out = tf.image.resize(crop, size, method="bilinear", antialias=True)
    out = tf.clip_by_value(out, 0.0, 255.0)
    out.set_shape((size[0], size[1], 3))
    return out


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2) -> tf.Tensor:
    """Random brightness, contrast, saturation (factors in [1-a, 1+a]) and hue shift (in [-hue, hue]),
    in this fixed order, like torchvision's ColorJitter(0.4, 0.4, 0.4, 0.2) of the DARTS ImageNet recipe.
    Input and output are float32 on the 0..255 scale."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
    x = tf.cast(image, tf.float32) / 255.0

    def factor(s, amount):
        return tf.random.stateless_uniform([], s, minval=1.0 - amount, maxval=1.0 + amount)

    x = tf.clip_by_value(x * factor(seeds[0], brightness), 0.0, 1.0)
    gray_mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
    x = tf.clip_by_value((x - gray_mean) * factor(seeds[1], contrast) + gray_mean, 0.0, 1.0)
    gray = tf.image.rgb_to_grayscale(x)
    x = tf.clip_by_value((x - gray) * factor(seeds[2], saturation) + gray, 0.0, 1.0)
    x = tf.image.adjust_hue(x, tf.random.stateless_uniform([], seeds[3], minval=-hue, maxval=hue))
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def resize_and_center_crop(image, size, crop_fraction=IMAGENET_EVAL_CROP_FRACTION) -> tf.Tensor:
    """Resizes so that ``size`` is ``crop_fraction`` of the image (shorter side 256 for 224) and takes
    the centre ``size`` crop (float32, 0..255)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.maximum(size[0] / height, size[1] / width) / crop_fraction
    # Rounded, not ceiled: 375 × (256 / 375) must give 256 despite float error.
    new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size[0])
    new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size[1])
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top = (new_h - size[0]) // 2
    left = (new_w - size[1]) // 2
    out = tf.clip_by_value(resized[top:top + size[0], left:left + size[1], :], 0.0, 255.0)
    out.set_shape((size[0], size[1], 3))
    return out


def _eval_transform(image, target, augment, crop_fraction) -> tf.Tensor:
    """Deterministic transform to the model input size: resize + centre crop for varying sizes and the
    ImageNet recipe, a plain resize otherwise (a no-op when the size already matches)."""
    static_hw = tuple(image.shape[:2])
    if None in static_hw or augment == "imagenet":
        return resize_and_center_crop(image, target, crop_fraction)
    if static_hw == tuple(target):
        return tf.cast(image, tf.float32)
    out = tf.image.resize(image, target, method="bilinear", antialias=True)
    return tf.clip_by_value(out, 0.0, 255.0)


# --------------------------------------------------------------------------------------------------
# The pipeline


def _pipeline(source, info, split, num_examples, indices, training, augment, cutout, batch_size, seed,
              input_context, repeat, eval_crop_fraction=IMAGENET_EVAL_CROP_FRACTION) -> tf.data.Dataset:
    ds = source.examples(split).take(num_examples)
    count = num_examples
    if indices is not None:
        # Select by position, so any source (in memory, files, TFDS) splits the same way.
        member = np.zeros(num_examples, dtype=bool)
        member[indices] = True
        member = tf.constant(member)

        def selected(i, example):
            return tf.gather(member, i)

        def drop_index(i, example):
            return example

        ds = ds.enumerate().filter(_plain(selected)).map(_plain(drop_index))
        count = len(indices)
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        count = -(-count // input_context.num_input_pipelines)
    hw = source.image_hw
    small = hw is not None and count * hw[0] * hw[1] * 3 <= IN_MEMORY_MAX_BYTES
    if small and not source.in_memory:
        ds = ds.cache()
    if training:
        buffer = count if small else min(count, SHUFFLE_BUFFER)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if training and augment != "none":
        # The element counter seeds the stateless augmentation, so results do not depend on map order.
        base = tf.constant(seed, tf.int64)

        def train_map(i, example):
            image, label = example
            return preprocess(image, info, training=True, augment=augment, cutout=cutout,
                              seed=tf.stack([base, i]), eval_crop_fraction=eval_crop_fraction), label

        ds = ds.enumerate().map(_plain(train_map), num_parallel_calls=AUTOTUNE)
    else:
        def eval_map(image, label):
            return preprocess(image, info, training=False, augment=augment,
                              eval_crop_fraction=eval_crop_fraction), label

        ds = ds.map(_plain(eval_map), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
    options = tf.data.Options()
    # Sharded by hand under an input context; a global-batch dataset is split by element by the strategy.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if input_context is not None
        else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def _plain(fn):
    # The map functions branch only on static Python values, so AutoGraph conversion is pure overhead.
    return tf.autograph.experimental.do_not_convert(fn)


def _make_info(source: _Source, image_size) -> DataInfo:
    size = _parse_image_size(image_size)
    if size is None:
        size = source.image_hw or source.default_size
    if size is None:
        raise DataError(
            f"images of data set '{source.name}' have varying sizes; pass image_size (e.g. 224) to set the "
            f"model input size."
        )
    return DataInfo(name=source.name, num_classes=source.num_classes, image_shape=(size[0], size[1], 3),
                    mean=source.mean, std=source.std, class_names=source.class_names,
                    num_train=source.num_train, num_test=source.num_test)


def _parse_image_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise DataError(f"image_size must be a positive int or (height, width), got {image_size!r}.")
    return size


def _per_replica_batch(batch_size, input_context):
    if int(batch_size) <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}.")
    if input_context is None:
        return int(batch_size)
    return input_context.get_per_replica_batch_size(int(batch_size))


def _capped(num, num_examples):
    if num_examples is None:
        return num
    if int(num_examples) <= 0:
        raise DataError(f"num_examples must be positive, got {num_examples}.")
    return min(int(num), int(num_examples))


def _check_augment(augment):
    if augment not in AUGMENTATIONS:
        raise DataError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}.")


def _derive_seed(seed, stream):
    return (int(seed) * 1_000_003 + stream) % (2**31 - 1)


def _channel_stats(images_uint8: np.ndarray):
    """Per-channel mean and (population) std on the [0, 1] scale of a uint8 array [..., 3]."""
    x = images_uint8.reshape(-1, 3).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    std = np.sqrt(np.maximum((x * x).mean(axis=0) - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _dataset_stats(ds: tf.data.Dataset):
    """Per-channel mean and std of a (uint8 image, label) dataset, summed in float64 per example."""

    def sums(image, label):
        x = tf.reshape(tf.cast(image, tf.float64) / 255.0, [-1, 3])
        return tf.reduce_sum(x, 0), tf.reduce_sum(x * x, 0), tf.cast(tf.shape(x)[0], tf.float64)

    total, total_sq, count = np.zeros(3), np.zeros(3), 0.0
    for s, sq, n in ds.map(_plain(sums), num_parallel_calls=AUTOTUNE).batch(1024).as_numpy_iterator():
        total += s.sum(0)
        total_sq += sq.sum(0)
        count += n.sum()
    if count == 0:
        raise DataError("cannot compute normalisation statistics of an empty training split.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _to_rgb(image):
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:  # drop alpha
        return image[..., :3]
    return image


# --------------------------------------------------------------------------------------------------
# Sources


def _open(dataset, data_dir, manual_dir, download) -> _Source:
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"dataset must be a non-empty string, got {dataset!r}. {DATASETS_HELP}")
    if dataset == "digits":
        return _digits_source()
    if dataset.startswith("folder:"):
        return _folder_source(dataset[len("folder:"):])
    if dataset.startswith("tfds:"):
        return _tfds_source(dataset[len("tfds:"):], data_dir, manual_dir, download)
    if dataset in _TFDS_PRESETS:
        return _tfds_source(dataset, data_dir, manual_dir, download)
    raise DataError(f"unknown dataset {dataset!r}. {DATASETS_HELP}")


# digits ---------------------------------------------------------------------------------------------


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
def _digits_source() -> _Source:
    x_train, y_train, x_test, y_test = _digits_arrays()
    mean, std = _channel_stats(x_train)
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}

    def examples(split):
        return tf.data.Dataset.from_tensor_slices(_split_arrays(splits, split, "digits"))

    return _Source(name="digits", num_classes=10, class_names=tuple(str(d) for d in range(10)),
                   image_hw=(32, 32), mean=mean, std=std, num_train=len(y_train), num_test=len(y_test),
                   in_memory=True, default_size=None, examples=examples)


def _split_arrays(splits, split, name):
    if split not in splits:
        raise DataError(f"data set '{name}' has no split {split!r}; it has {sorted(splits)}.")
    return splits[split]


# TFDS -----------------------------------------------------------------------------------------------


def _tfds_source(name, data_dir, manual_dir, download) -> _Source:
    preset = _TFDS_PRESETS.get(name)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(
            f"TFDS has no data set named {name!r}; see https://www.tensorflow.org/datasets/catalog or "
            f"tfds.list_builders() for the names."
        ) from e
    root = getattr(builder, "_data_dir_root", None) or data_dir or os.path.expanduser("~/tensorflow_datasets")
    manual_dir = manual_dir or os.path.join(root, "downloads", "manual")
    features = builder.info.features
    missing = [k for k in ("image", "label") if k not in features]
    if missing:
        raise DataError(
            f"TFDS data set {name!r} has no {missing} feature(s) (it has {sorted(features.keys())}); only "
            f"image classification sets with 'image' and 'label' features are supported."
        )
    image_feature, label_feature = features["image"], features["label"]
    num_classes = getattr(label_feature, "num_classes", None)
    if not num_classes:
        raise DataError(
            f"the 'label' feature of TFDS data set {name!r} is not a ClassLabel; cannot count classes.")

    train_ds = _tfds_split_or_prepare(builder, name, "train", preset, root, manual_dir, download)
    test_split = preset["test_split"] if preset else _generic_test_split(builder)

    def raw(split):
        return builder.as_dataset(split=split, shuffle_files=False,
                                  read_config=tfds.ReadConfig(try_autocache=False))

    def convert(example):
        return _to_rgb(example["image"]), tf.cast(example["label"], tf.int32)

    def examples(split):
        if split == "train":
            tfds_split = "train"
        elif split == "test" and test_split is not None:
            tfds_split = test_split
        else:
            raise DataError(f"data set '{name}' has no split {split!r}; use 'train' or 'test'.")
        return raw(tfds_split).map(_plain(convert), num_parallel_calls=AUTOTUNE)

    num_train = _num_examples(builder, train_ds, "train")
    num_test = _num_examples(builder, raw(test_split), test_split) if test_split is not None else 0
    shape = tuple(image_feature.shape)
    if len(shape) != 3 or shape[-1] not in (1, 3, 4):
        raise DataError(f"TFDS data set {name!r} has images of shape {shape}; expected (H, W, 1|3|4).")
    image_hw = None if None in shape[:2] else (int(shape[0]), int(shape[1]))
    if preset:
        mean, std = preset["mean"], preset["std"]
        default = preset["default_size"]
    else:
        mean, std = _dataset_stats(examples("train").take(STATS_MAX_EXAMPLES))
        default = None
    class_names = tuple(label_feature.names) if getattr(label_feature, "names", None) else None
    return _Source(name=name, num_classes=int(num_classes), class_names=class_names, image_hw=image_hw,
                   mean=tuple(mean), std=tuple(std), num_train=num_train, num_test=num_test, in_memory=False,
                   default_size=(default, default) if default else None, examples=examples)


def _tfds_split_or_prepare(builder, name, split, preset, root, manual_dir, download):
    """Returns the split's dataset; prepares the set first from manual archives (offline) or, with
    download=True, from the internet. Never touches the network when download is False."""
    try:
        return builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:
        pass  # not prepared in data_dir (TFDS asserts before reading anything)
    archives = preset["archives"] if preset else ()
    present = [a for a in archives if os.path.isfile(os.path.join(manual_dir, a))]
    from_archives = bool(archives) and len(present) == len(archives)
    if not from_archives and not download:
        raise DataError(_not_prepared_message(name, preset, root, manual_dir, present))
    if not from_archives and preset and preset["manual_only"]:
        raise DataError(_not_prepared_message(name, preset, root, manual_dir, present))
    if from_archives:
        logging.info("Preparing %s in %s from %s (no network access).", name, root, manual_dir)
    else:
        logging.warning("Downloading and preparing %s in %s (needs internet).", name, root)
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except NonMatchingChecksumError as e:
        raise DataError(
            f"an archive for '{name}' in {manual_dir} has the wrong size or checksum, so it is not the "
            f"original file ({', '.join(archives)}); replace it with the original. TFDS said: {e}"
        ) from e
    except Exception as e:  # surfaced with the context of what was attempted, original chained
        raise DataError(f"preparing TFDS data set '{name}' in {root} failed: {type(e).__name__}: {e}") from e
    return builder.as_dataset(split=split, shuffle_files=False)


def _not_prepared_message(name, preset, root, manual_dir, present):
    head = f"TFDS data set '{name}' is not prepared in {root}"
    if preset and preset["manual_only"]:
        missing = [a for a in preset["archives"] if a not in present]
        return (
            f"{head}, and it cannot be downloaded automatically. Place {' and '.join(preset['archives'])} "
            f"(from image-net.org) in {manual_dir} (manual_dir; missing: {', '.join(missing)}) and run again "
            f"to build it without network access, or point data_dir at a directory where it is prepared."
        )
    if preset:
        archive = preset["archives"][0]
        return (
            f"{head} and download=False. Place {archive} in {manual_dir} (manual_dir) and run again to "
            f"build it without network access, or pass --download (needs internet), or point data_dir at a "
            f"directory where it is prepared."
        )
    return (
        f"{head} and download=False. Pass --download (needs internet), or build it elsewhere with "
        f"`tfds build {name} --data_dir=DIR` and copy DIR here (or point data_dir at it)."
    )


def _generic_test_split(builder):
    splits = dict(builder.info.splits)
    if not splits:
        return "test"  # split metadata unknown (e.g. mocked data): TFDS's usual name
    for candidate in ("test", "validation"):
        if candidate in splits:
            return candidate
    return None


def _num_examples(builder, ds, split):
    card = int(ds.cardinality())
    if card >= 0:
        return card
    return int(builder.info.splits[split].num_examples)


# Image folders ---------------------------------------------------------------------------------------


_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"), (b"BM", "bmp"))
_FOLDER_CACHE: collections.OrderedDict = collections.OrderedDict()
_FOLDER_CACHE_SIZE = 2


def _folder_source(path) -> _Source:
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise DataError(f"folder data set {root} does not exist or is not a directory.")
    test_dir = next((os.path.join(root, d) for d in ("test", "val")
                     if os.path.isdir(os.path.join(root, d))), None)
    if os.path.isdir(os.path.join(root, "train")) and test_dir is not None:
        train_dir = os.path.join(root, "train")
    else:
        train_dir, test_dir = root, None
    class_names, train_files, train_labels = _scan_classes(train_dir)
    test_files, test_labels = [], []
    if test_dir is not None:
        test_classes, test_files, test_labels = _scan_classes(test_dir)
        unknown = sorted(set(test_classes) - set(class_names))
        if unknown:
            raise DataError(
                f"test folder {test_dir} has class folders {unknown} that {train_dir} does not have; "
                f"use the same class folder names in both."
            )
        # Test labels follow the training class order.
        test_labels = [class_names.index(test_classes[i]) for i in test_labels]
    signature = tuple((f, os.path.getsize(f), os.path.getmtime(f)) for f in train_files + test_files)
    key = (root, signature)
    if key in _FOLDER_CACHE:
        _FOLDER_CACHE.move_to_end(key)
        return _FOLDER_CACHE[key]
    if len(train_files) + len(test_files) <= FOLDER_EAGER_MAX_FILES:
        source = _eager_folder(root, class_names, train_files, train_labels, test_files, test_labels)
    else:
        source = _lazy_folder(root, class_names, train_files, train_labels, test_files, test_labels)
    _FOLDER_CACHE[key] = source
    while len(_FOLDER_CACHE) > _FOLDER_CACHE_SIZE:
        _FOLDER_CACHE.popitem(last=False)
    return source


def _scan_classes(directory):
    """Sorted class folder names, and every image file (sorted, recursively) with its class index."""
    classes = sorted(d for d in os.listdir(directory)
                     if not d.startswith(".") and os.path.isdir(os.path.join(directory, d)))
    if not classes:
        raise DataError(
            f"{directory} has no class sub-folders; expected {directory}/<class>/<image>, or "
            f"PATH/train/<class>/<image> and PATH/test/<class>/<image>."
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        class_dir = os.path.join(directory, name)
        found = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames.sort()
            found += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
        if not found:
            raise DataError(
                f"class folder {class_dir} contains no image files ({', '.join(IMAGE_EXTENSIONS)}); add "
                f"images to it or remove it."
            )
        files += found
        labels += [index] * len(found)
    return classes, files, labels


def _decode_file(path):
    """Decodes one image file to uint8 [H, W, 3]; a file TF cannot decode raises DataError naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, OSError) as e:
        reason = getattr(e, "message", None) or str(e)
        raise DataError(
            f"cannot read image file {path}: {reason.strip()}; replace or delete the file.") from e
    return image.numpy()


def _resize_uint8(image, hw):
    if image.shape[:2] == tuple(hw):
        return image
    out = tf.image.resize(image, hw, method="bilinear", antialias=True)
    return np.clip(np.round(out.numpy()), 0, 255).astype(np.uint8)


def _common_size(shapes):
    """The most frequent (H, W); ties go to the one seen first (sorted file order)."""
    return collections.Counter(tuple(s[:2]) for s in shapes).most_common(1)[0][0]


def _eager_folder(root, class_names, train_files, train_labels, test_files, test_labels) -> _Source:
    # Decode every file once (a bad one raises, named); keep the pixels only while they fit in memory.
    images, shapes, held = [], [], 0
    for f in train_files + test_files:
        image = _decode_file(f)
        shapes.append(image.shape)
        held += image.nbytes
        if held <= IN_MEMORY_MAX_BYTES:
            images.append(image)
        else:
            images.clear()  # too big to hold: go on validating, drop the pixels
    hw = _common_size(shapes[:len(train_files)])
    num = len(shapes)
    if held > IN_MEMORY_MAX_BYTES or num * hw[0] * hw[1] * 3 > IN_MEMORY_MAX_BYTES:
        # Every file decoded fine, but the set is too big to hold: read from disk in the pipeline.
        return _lazy_folder(root, class_names, train_files, train_labels, test_files, test_labels,
                            checked=True)
    train_images, test_images = images[:len(train_files)], images[len(train_files):]
    x_train = np.stack([_resize_uint8(im, hw) for im in train_images])
    x_test = (np.stack([_resize_uint8(im, hw) for im in test_images]) if test_images
              else np.zeros((0, hw[0], hw[1], 3), np.uint8))
    mean, std = _channel_stats(x_train)
    splits = {"train": (x_train, np.asarray(train_labels, np.int32))}
    if test_files:
        splits["test"] = (x_test, np.asarray(test_labels, np.int32))
    name = f"folder:{root}"

    def examples(split):
        return tf.data.Dataset.from_tensor_slices(_split_arrays(splits, split, name))

    return _Source(name=name, num_classes=len(class_names), class_names=tuple(class_names), image_hw=hw,
                   mean=mean, std=std, num_train=len(train_files), num_test=len(test_files), in_memory=True,
                   default_size=None, examples=examples)


def _check_signature(path):
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"cannot read image file {path}: {e}; replace or delete the file.") from e
    if not any(head.startswith(magic) for magic, _ in _MAGIC):
        raise DataError(
            f"cannot read image file {path}: it is not a JPEG, PNG, GIF or BMP file (first bytes "
            f"{head!r}); replace or delete the file."
        )


def _lazy_folder(root, class_names, train_files, train_labels, test_files, test_labels,
                 checked=False) -> _Source:
    if not checked:
        for f in train_files + test_files:
            _check_signature(f)
    # Size and statistics from an evenly spaced sample, decoded (and so validated) eagerly.
    num_picks = min(LARGE_FOLDER_SAMPLE, len(train_files))
    picks = np.unique(np.linspace(0, len(train_files) - 1, num_picks).astype(int))
    sample = [_decode_file(train_files[i]) for i in picks]
    hw = _common_size([im.shape for im in sample])
    mean, std = _channel_stats(np.concatenate([_resize_uint8(im, hw).reshape(-1, 3) for im in sample]))
    splits = {"train": (train_files, train_labels)}
    if test_files:
        splits["test"] = (test_files, test_labels)
    name = f"folder:{root}"

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, hw, method="bilinear", antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        image.set_shape((hw[0], hw[1], 3))
        return image, label

    def examples(split):
        files, labels = _split_arrays(splits, split, name)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(files), tf.constant(labels, tf.int32)))
        return ds.map(_plain(load), num_parallel_calls=AUTOTUNE)

    return _Source(name=name, num_classes=len(class_names), class_names=tuple(class_names), image_hw=hw,
                   mean=mean, std=std, num_train=len(train_files), num_test=len(test_files), in_memory=False,
                   default_size=None, examples=examples)

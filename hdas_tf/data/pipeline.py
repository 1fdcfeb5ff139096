"""The two pipelines on top of the sources: :func:`search_datasets` (the training set split by a seeded permutation
into a weight half and an architecture half, BUILD_NOTES "Data pipelines", as two infinite shuffled batched
datasets) and :func:`train_test_datasets` (augmented training set, unaugmented test or held-out set). Batches are
``(float32 [B, H, W, 3] normalised, int32 [B])``; with an ``input_context`` the data is sharded per input pipeline
and batched per replica (BUILD_NOTES "Synchronized BN and distribution strategies")."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import tensorflow as tf

from hdas_tf.data.augment import check_augment, preprocess
from hdas_tf.data.digits import digits_source
from hdas_tf.data.folders import folder_source
from hdas_tf.data.images import IMAGENET_EVAL_CROP_FRACTION, parse_image_size
from hdas_tf.data.source import AUTOTUNE, IN_MEMORY_MAX_BYTES, DataError, DataInfo, Source, plain
from hdas_tf.data.tfds_sets import TFDS_PRESETS, tfds_source

DATASETS_HELP = (
    "Data set: 'digits' (scikit-learn's bundled handwritten digits upsampled to 32x32x3, 1500 train / "
    "297 test, no download), 'cifar10', 'cifar100', 'imagenet2012' (TensorFlow Datasets, read from "
    "--data_dir; archives placed in --manual_dir are used offline; --download fetches CIFAR from the "
    "internet; ImageNet needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in --manual_dir), "
    "'tfds:NAME' (any TFDS image classification set with 'image' and 'label' features), or "
    "'folder:PATH' (PATH/<class>/<image> or PATH/train/<class>/<image> + PATH/test/<class>/<image>; "
    "jpg, jpeg, png, bmp, gif)."
)

SHUFFLE_BUFFER = 10_000

# Distinct streams derived from the run seed, so the two search halves never share a shuffle order.
_STREAM_WEIGHT, _STREAM_ARCH, _STREAM_TRAIN = 1, 2, 3


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
    return _make_info(_open_source(dataset, data_dir, manual_dir, download), image_size)


def default_search_augment(dataset: str) -> str:
    """The augmentation a search uses on ``dataset`` when none is given (BUILD_NOTES "Data pipelines").

    "none" for the bundled digits (a mirrored digit is another digit, or none); "imagenet" for imagenet2012
    (the training recipe's random-resized crop, flip and colour jitter); "cifar" (zero-pad 4 + random crop,
    flip: DARTS's train_search, the H-DAS reference, StacNAS) for CIFAR, image folders and other TFDS sets.
    """
    if dataset == "digits":
        return "none"
    if dataset == "imagenet2012":
        return "imagenet"
    return "cifar"


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
    """Returns ``(weight_ds, arch_ds, info)`` for an architecture search (BUILD_NOTES "Data pipelines").

    The training split (its first ``num_examples`` examples if given) is divided by
    :func:`split_indices` with ``train_portion`` and ``seed``: the first part trains the weights, the
    second the architecture variables. Both datasets are infinite, shuffled (reshuffled every pass) and
    batched with ``drop_remainder=True``; they yield ``(float32 [B, H, W, 3], int32 [B])``.

    Args:
        batch_size: int. The global batch, or, with ``input_context``, the global batch from which the
            per-replica batch is taken (``input_context.get_per_replica_batch_size``).
        augment: str. One of ``AUGMENTATIONS``; cutout is never used in search. DARTS, the H-DAS reference and
            StacNAS search with "cifar" (pad-4 crop + flip on both halves): see :func:`default_search_augment`.
        input_context: tf.distribute.InputContext. Shard by input pipeline and batch per replica.
        num_examples: int. Use only the first this-many training examples (tiny runs).
        Other arguments as in :func:`dataset_info`.
    """
    check_augment(augment)
    source = _open_source(dataset, data_dir, manual_dir, download)
    info = _make_info(source, image_size)
    num = _capped(source.num_train, num_examples)
    weight_idx, arch_idx = split_indices(num, train_portion, seed)
    per_batch = _per_replica_batch(batch_size, input_context)
    fits = min(len(weight_idx), len(arch_idx))  # the largest batch both halves fill at least once
    for part, idx in (("weight", weight_idx), ("architecture", arch_idx)):
        if len(idx) < batch_size:
            raise DataError(
                f"the {part} half of the search split has {len(idx)} examples (train_portion="
                f"{train_portion} of {num}), fewer than batch_size={batch_size}; the largest batch that fits is "
                f"{fits}: use batch_size={fits} or lower, or more examples."
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
        augment: str. "cifar" (pad 4 + random crop, flip, then cutout after normalisation), "autoaugment"
            (AutoAugment's CIFAR-10 policy, then the cifar recipe), "imagenet" (random-resized crop, flip,
            colour jitter; eval: resize and centre crop) or "none".
        cutout: int. Side of the cutout square of the CIFAR recipe; 0 disables it. Only "cifar" and
            "autoaugment" use it.
        num_examples: int. Use only the first this-many examples of the training split and of the
            evaluation split (tiny runs).
        eval_crop_fraction: float. ImageNet-style evaluation resizes so that the crop is this fraction of
            the resized image (224 / 256).
        Other arguments as in :func:`search_datasets`.
    """
    check_augment(augment)
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    source = _open_source(dataset, data_dir, manual_dir, download)
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
            f"exists; the largest batch that fits is {num_used}: use batch_size={num_used} or lower, or more "
            f"examples."
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
        return tf.data.Dataset.zip((weight_ds, arch_ds))

    return input_fn


def raw_examples(dataset, split="train", data_dir=None, manual_dir=None, download=False) -> tf.data.Dataset:
    """The unbatched ``(uint8 image [H, W, 3], int32 label)`` examples of a split, in the source's order.

    ``split`` is "train" or "test". Images are at their stored size (grayscale already as 3 channels;
    folder images resized to the folder's common size). No shuffling, resizing or normalisation.
    """
    source = _open_source(dataset, data_dir, manual_dir, download)
    return source.examples(split)


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

        ds = ds.enumerate().filter(plain(selected)).map(plain(drop_index))
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

        ds = ds.enumerate().map(plain(train_map), num_parallel_calls=AUTOTUNE)
    else:
        def eval_map(image, label):
            return preprocess(image, info, training=False, augment=augment,
                              eval_crop_fraction=eval_crop_fraction), label

        ds = ds.map(plain(eval_map), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
    options = tf.data.Options()
    # Sharded by hand under an input context; a global-batch dataset is split by element by the strategy.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if input_context is not None
        else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def _make_info(source: Source, image_size) -> DataInfo:
    size = parse_image_size(image_size)
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


def _derive_seed(seed, stream):
    return (int(seed) * 1_000_003 + stream) % (2**31 - 1)


def _open_source(dataset, data_dir, manual_dir, download) -> Source:
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"dataset must be a non-empty string, got {dataset!r}. {DATASETS_HELP}")
    if dataset == "digits":
        return digits_source()
    if dataset.startswith("folder:"):
        return folder_source(dataset[len("folder:"):])
    if dataset.startswith("tfds:"):
        return tfds_source(dataset[len("tfds:"):], data_dir, manual_dir, download)
    if dataset in TFDS_PRESETS:
        return tfds_source(dataset, data_dir, manual_dir, download)
    raise DataError(f"unknown dataset {dataset!r}. {DATASETS_HELP}")

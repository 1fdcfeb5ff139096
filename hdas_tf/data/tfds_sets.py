"""TensorFlow Datasets sources: ``cifar10``, ``cifar100``, ``imagenet2012`` (published normalisation constants)
and ``tfds:NAME`` (any image classification set; statistics computed from its training images).

Nothing is downloaded unless ``download=True``; an unprepared set fails at once with a message that says which
archive to put where. Archives placed in ``manual_dir`` are used without network access.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from hdas_tf.data.images import to_rgb
from hdas_tf.data.source import AUTOTUNE, STATS_MAX_EXAMPLES, DataError, Source, dataset_stats, plain

# Normalisation constants on the [0, 1] scale (the values the DARTS-family reference code uses).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_DEFAULT_SIZE = 224

# TFDS sets with known recipes: evaluation split, normalisation, and the archives TFDS reads from manual_dir.
TFDS_PRESETS = {
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


def tfds_source(name, data_dir, manual_dir, download) -> Source:
    import tensorflow_datasets as tfds  # imported on first use: only these sets need TFDS, and it is slow to load

    preset = TFDS_PRESETS.get(name)
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
        return to_rgb(example["image"]), tf.cast(example["label"], tf.int32)

    def examples(split):
        if split == "train":
            tfds_split = "train"
        elif split == "test" and test_split is not None:
            tfds_split = test_split
        else:
            raise DataError(f"data set '{name}' has no split {split!r}; use 'train' or 'test'.")
        return raw(tfds_split).map(plain(convert), num_parallel_calls=AUTOTUNE)

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
        mean, std = dataset_stats(examples("train").take(STATS_MAX_EXAMPLES))
        default = None
    class_names = tuple(label_feature.names) if getattr(label_feature, "names", None) else None
    return Source(name=name, num_classes=int(num_classes), class_names=class_names, image_hw=image_hw,
                   mean=tuple(mean), std=tuple(std), num_train=num_train, num_test=num_test, in_memory=False,
                   default_size=(default, default) if default else None, examples=examples)


def _tfds_split_or_prepare(builder, name, split, preset, root, manual_dir, download):
    """Returns the split's dataset; prepares the set first from manual archives (offline) or, with
    download=True, from the internet. Never touches the network when download is False."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

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

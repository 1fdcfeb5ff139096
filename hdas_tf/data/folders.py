"""Image-folder sources (``folder:PATH``): one sub-folder per class (every image is training data), or
``PATH/train`` and ``PATH/test`` (or ``PATH/val``) with the same class sub-folders. Class labels follow the sorted
folder names. Folders of up to :data:`FOLDER_EAGER_MAX_FILES` images are decoded once at load time, so a corrupt
file is reported by name before training starts; larger ones are read from disk in the pipeline.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import tensorflow as tf

from hdas_tf.data.images import decode_file, resize_uint8
from hdas_tf.data.source import (AUTOTUNE, IN_MEMORY_MAX_BYTES, DataError, Source, channel_stats, plain,
                                 split_arrays)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Folders with at most this many images are decoded eagerly (each file once) to validate every file; larger
# folders are checked by file signature only and decoded inside the pipeline.
FOLDER_EAGER_MAX_FILES = 10_000
# Size and statistics of a large folder come from an evenly spaced sample of this many images.
LARGE_FOLDER_SAMPLE = 256

_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"), (b"BM", "bmp"))
_FOLDER_CACHE: collections.OrderedDict = collections.OrderedDict()
_FOLDER_CACHE_SIZE = 2


def folder_source(path) -> Source:
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


def _at_size(image: np.ndarray, hw) -> np.ndarray:
    """A decoded image at the folder's common size (untouched when it already has it)."""
    return image if image.shape[:2] == tuple(hw) else resize_uint8(image, hw).numpy()


def _common_size(shapes):
    """The most frequent (H, W); ties go to the one seen first (sorted file order)."""
    return collections.Counter(tuple(s[:2]) for s in shapes).most_common(1)[0][0]


def _eager_folder(root, class_names, train_files, train_labels, test_files, test_labels) -> Source:
    # Decode every file once (a bad one raises, named); keep the pixels only while they fit in memory.
    images, shapes, held = [], [], 0
    for f in train_files + test_files:
        image = decode_file(f)
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
    x_train = np.stack([_at_size(im, hw) for im in train_images])
    x_test = (np.stack([_at_size(im, hw) for im in test_images]) if test_images
              else np.zeros((0, hw[0], hw[1], 3), np.uint8))
    mean, std = channel_stats(x_train)
    splits = {"train": (x_train, np.asarray(train_labels, np.int32))}
    if test_files:
        splits["test"] = (x_test, np.asarray(test_labels, np.int32))
    name = f"folder:{root}"

    def examples(split):
        return tf.data.Dataset.from_tensor_slices(split_arrays(splits, split, name))

    return Source(name=name, num_classes=len(class_names), class_names=tuple(class_names), image_hw=hw,
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
                 checked=False) -> Source:
    if not checked:
        for f in train_files + test_files:
            _check_signature(f)
    # Size and statistics from an evenly spaced sample, decoded (and so validated) eagerly.
    num_picks = min(LARGE_FOLDER_SAMPLE, len(train_files))
    picks = np.unique(np.linspace(0, len(train_files) - 1, num_picks).astype(int))
    sample = [decode_file(train_files[i]) for i in picks]
    hw = _common_size([im.shape for im in sample])
    mean, std = channel_stats(np.concatenate([_at_size(im, hw).reshape(-1, 3) for im in sample]))
    splits = {"train": (train_files, train_labels)}
    if test_files:
        splits["test"] = (test_files, test_labels)
    name = f"folder:{root}"

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = resize_uint8(image, hw)
        image.set_shape((hw[0], hw[1], 3))
        return image, label

    def examples(split):
        files, labels = split_arrays(splits, split, name)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(files), tf.constant(labels, tf.int32)))
        return ds.map(plain(load), num_parallel_calls=AUTOTUNE)

    return Source(name=name, num_classes=len(class_names), class_names=tuple(class_names), image_hw=hw,
                   mean=mean, std=std, num_train=len(train_files), num_test=len(test_files), in_memory=False,
                   default_size=None, examples=examples)

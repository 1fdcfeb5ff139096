"""Input pipelines: the bundled digits, TFDS sets, image folders, the search split and augmentation.

Importers write ``from hdas_tf import data`` and call ``data.X``; the names below are the package's surface.
"""

from hdas_tf.data.augment import (AUGMENTATIONS, apply_cutout, color_jitter, eval_transform, normalize,
                                  pad_and_random_crop, preprocess, random_resized_crop)
from hdas_tf.data.autoaugment import CIFAR10_POLICY, apply_policy
from hdas_tf.data.digits import DIGITS_SPLIT_SEED
from hdas_tf.data.images import IMAGENET_EVAL_CROP_FRACTION, parse_image_size, resize_and_center_crop, resize_to
from hdas_tf.data.pipeline import (DATASETS_HELP, check_num_classes, dataset_info, default_search_augment,
                                   raw_examples, search_batches_per_epoch, search_datasets, search_input_fn,
                                   split_indices, train_test_datasets)
from hdas_tf.data.source import DataError, DataInfo
from hdas_tf.data.tfds_sets import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN,
                                    IMAGENET_STD)

__all__ = [
    "AUGMENTATIONS", "CIFAR10_MEAN", "CIFAR10_POLICY", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
    "DATASETS_HELP", "DIGITS_SPLIT_SEED", "DataError", "DataInfo", "IMAGENET_EVAL_CROP_FRACTION", "IMAGENET_MEAN",
    "IMAGENET_STD", "apply_cutout", "apply_policy", "check_num_classes", "color_jitter", "dataset_info",
    "default_search_augment", "eval_transform", "normalize", "pad_and_random_crop", "parse_image_size",
    "preprocess", "random_resized_crop", "raw_examples", "resize_and_center_crop", "resize_to",
    "search_batches_per_epoch", "search_datasets", "search_input_fn", "split_indices", "train_test_datasets",
]

"""Per-image preprocessing: normalisation, the evaluation transform and the augmentation recipes ("cifar": pad
and random crop, flip, cutout; "autoaugment": AutoAugment's CIFAR-10 policy, then the cifar recipe; "imagenet":
random-resized crop, flip, colour jitter). Random ops are stateless and seeded per element, so the same seed gives
the same images whatever the map parallelism."""

from __future__ import annotations

import tensorflow as tf

from hdas_tf.data.autoaugment import apply_policy
from hdas_tf.data.images import IMAGENET_EVAL_CROP_FRACTION, resize_and_center_crop, resize_to
from hdas_tf.data.source import DataError, DataInfo

AUGMENTATIONS = ("none", "cifar", "imagenet", "autoaugment")


def check_augment(augment):
    if augment not in AUGMENTATIONS:
        raise DataError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}.")


def normalize(images, info: DataInfo) -> tf.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32. Float inputs are taken on the 0..255 scale."""
    x = tf.cast(images, tf.float32) / 255.0
    mean = tf.constant(info.mean, tf.float32)
    std = tf.constant(info.std, tf.float32)
    return (x - mean) / std


def preprocess(image, info: DataInfo, *, training: bool, augment="none", cutout=0, seed=None,
               eval_crop_fraction=IMAGENET_EVAL_CROP_FRACTION) -> tf.Tensor:
    """Turns one uint8 image into the normalised float32 model input of shape ``info.image_shape``.

    Training with ``augment="cifar"``: zero-pad 4 + random crop, horizontal flip, normalise, then cutout
    (after normalisation, so the square is exactly 0, as in the DARTS code). ``augment="autoaugment"``: one
    sub-policy of AutoAugment's CIFAR-10 policy (``data.autoaugment``), then the cifar recipe, as in Cubuk et
    al.'s CIFAR training. Training with ``augment="imagenet"``: random-resized crop, flip, colour jitter,
    normalise. Otherwise (evaluation, or ``augment="none"``) the deterministic evaluation transform and
    normalisation.

    Args:
        seed: int tensor of shape [2]. Seed of the stateless random ops; required when training with an
            augmentation.
    """
    check_augment(augment)
    target = info.image_shape[:2]
    if not training or augment == "none":
        return normalize(eval_transform(image, target, augment, eval_crop_fraction), info)
    if seed is None:
        raise ValueError("preprocess(training=True) with an augmentation needs a stateless seed, shape [2].")
    # The third stream is the colour jitter's (imagenet) or the policy's (autoaugment): for a seed, the cifar and
    # autoaugment recipes draw the same crops, flips and cutouts.
    crop_seed, flip_seed, jitter_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4))
    if augment in ("cifar", "autoaugment"):
        # The pad-and-crop recipe works at the model input size; bring the image there first.
        x = eval_transform(image, target, "cifar", eval_crop_fraction)
        if augment == "autoaugment":
            # The policy's ops are defined on uint8 pixel values: round a resized image to them first.
            x = apply_policy(tf.clip_by_value(tf.round(tf.cast(x, tf.float32)), 0.0, 255.0), jitter_seed)
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


def eval_transform(image, target, augment, crop_fraction=IMAGENET_EVAL_CROP_FRACTION) -> tf.Tensor:
    """Deterministic transform to the model input size: resize + centre crop for varying sizes and the
    ImageNet recipe, a plain resize otherwise (a no-op when the size already matches)."""
    if None in tuple(image.shape[:2]) or augment == "imagenet":
        return resize_and_center_crop(image, target, crop_fraction)
    return resize_to(image, target)

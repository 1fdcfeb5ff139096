"""Single-image and batch transforms shared by the sources, the augmentation recipes and the serving graph:
decoding, conversion to RGB, resizing, centre cropping and parsing an image size."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hdas_tf.data.source import DataError

# ImageNet evaluation: resize so the crop is this fraction of the resized image (224 of 256), centre crop.
IMAGENET_EVAL_CROP_FRACTION = 224 / 256


def parse_image_size(value):
    """``(H, W)`` from ``S``, ``[S]``, ``(H, W)`` or an image shape ``(H, W, 3)`` (ints or numeric strings);
    None stays None. Anything else, or a size below 1, raises DataError."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        size = (int(value), int(value))
    else:
        try:
            size = tuple(int(v) for v in value)
        except (TypeError, ValueError) as e:
            raise DataError(f"image_size must be a positive int or (height, width), got {value!r}.") from e
        if len(size) == 3 and size[2] == 3:  # an image shape, as a data-info file stores it
            size = size[:2]
        if len(size) == 1:
            size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise DataError(f"image_size must be a positive int or (height, width), got {value!r}.")
    return size


def decode_file(path) -> np.ndarray:
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


def to_rgb(image):
    """A uint8 image with 1, 3 or 4 channels as 3 channels (grey copied, alpha dropped)."""
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


def resize_uint8(image, hw) -> tf.Tensor:
    """Bilinear antialiased resize of a uint8 image to ``hw``, rounded back to uint8 (how a source stores
    images of several sizes at one size)."""
    out = tf.image.resize(image, hw, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def resize_to(images, size) -> tf.Tensor:
    """Bilinear antialiased resize of an image ``[H, W, 3]`` or a batch ``[B, H, W, 3]`` (0..255) to ``size``,
    as float32 clipped to 0..255; the images are returned unchanged (as float32) when they already have it.

    The size check is static when H and W are known, else in the graph (serving accepts any size)."""
    static_hw = tuple(images.shape[-3:-1])
    if None not in static_hw:
        return tf.cast(images, tf.float32) if static_hw == tuple(size) else _resize_clipped(images, size)
    x = tf.cast(images, tf.float32)
    shape = tf.shape(x)
    same = tf.logical_and(tf.equal(shape[-3], size[0]), tf.equal(shape[-2], size[1]))
    out = tf.cond(same, lambda: x, lambda: _resize_clipped(x, size))
    return tf.ensure_shape(out, [*x.shape[:-3], size[0], size[1], 3])


def _resize_clipped(images, size):
    return tf.clip_by_value(tf.image.resize(images, size, method="bilinear", antialias=True), 0.0, 255.0)


def resize_and_center_crop(images, size, crop_fraction=IMAGENET_EVAL_CROP_FRACTION) -> tf.Tensor:
    """Resizes an image ``[H, W, 3]`` or a batch ``[B, H, W, 3]`` so that ``size`` is ``crop_fraction`` of it
    (shorter side 256 for 224) and takes the centre ``size`` crop (float32, 0..255)."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = tf.maximum(size[0] / height, size[1] / width) / crop_fraction
    # Rounded, not ceiled: 375 × (256 / 375) must give 256 despite float error.
    new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size[0])
    new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size[1])
    resized = tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top = (new_h - size[0]) // 2
    left = (new_w - size[1]) // 2
    out = tf.clip_by_value(resized[..., top:top + size[0], left:left + size[1], :], 0.0, 255.0)
    out.set_shape([*images.shape[:-3], size[0], size[1], 3])
    return out

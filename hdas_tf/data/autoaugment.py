"""AutoAugment's CIFAR-10 policy (Cubuk et al. 2018): 25 sub-policies of two (op, probability, magnitude) steps;
each image gets one sub-policy drawn uniformly, and each of its steps is applied with its probability.

Ops take and return float32 [H, W, 3] images holding uint8 values (0..255), like the PIL images the policy was
defined on. Random choices are stateless, seeded per element, so the stream is a function of the seed
(BUILD_NOTES "Data pipelines" says why the ops are written here and how magnitudes map to parameters).
"""

from __future__ import annotations

import math

import tensorflow as tf

# The policy found on reduced CIFAR-10 (the paper's appendix table of 25 sub-policies), as (op, p, magnitude).
CIFAR10_POLICY = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

NUM_LEVELS = 10  # magnitudes are 0..9
FILL = 128.0  # grey, for the pixels a geometric op uncovers
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")
SIGNED = GEOMETRIC + ENHANCE  # the paper's ranges are symmetric: the sign is drawn per application
OPS = GEOMETRIC + ENHANCE + ("AutoContrast", "Equalize", "Invert", "Solarize", "Posterize")
# ITU-R 601-2 luma, PIL's "L" conversion.
LUMA = (0.299, 0.587, 0.114)


def magnitude_value(op: str, magnitude: int, width: int = 32):
    """The unsigned parameter of ``op`` at ``magnitude`` (0..9): the paper's range split into 10 levels, level 0
    the identity. Shear: slope up to 0.3; translate: pixels up to 150/331 of ``width``; rotate: degrees up to
    30; enhancements: the factor's distance from 1, up to 0.9; posterize: bits kept, 8 down to 4; solarize:
    the threshold, 256 down to 0. None for ops without a magnitude."""
    if op not in OPS:
        raise ValueError(f"unknown AutoAugment op {op!r}; known: {OPS}")
    if not 0 <= int(magnitude) < NUM_LEVELS:
        raise ValueError(f"magnitude must be in 0..{NUM_LEVELS - 1}, got {magnitude}")
    t = int(magnitude) / (NUM_LEVELS - 1)
    if op in ("ShearX", "ShearY"):
        return 0.3 * t
    if op in ("TranslateX", "TranslateY"):
        return 150.0 / 331.0 * width * t
    if op == "Rotate":
        return 30.0 * t
    if op in ENHANCE:
        return 0.9 * t
    if op == "Posterize":
        return int(8 - round(4 * t))
    if op == "Solarize":
        return 256.0 * (1.0 - t)
    return None


def apply_policy(image, seed, policy=CIFAR10_POLICY, fill=FILL) -> tf.Tensor:
    """One sub-policy of ``policy``, drawn uniformly, applied to ``image`` (float32 0..255 uint8 values).

    Args:
        seed: int tensor of shape [2]: the stateless seed of the choice, the coin flips and the signs.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    steps = max(len(sub) for sub in policy)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=1 + 2 * steps))
    index = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=len(policy), dtype=tf.int32)

    def branch(sub_policy):
        def run():
            x = image
            for k, (op, prob, magnitude) in enumerate(sub_policy):
                coin_seed, sign_seed = seeds[1 + 2 * k], seeds[2 + 2 * k]
                apply = tf.random.stateless_uniform([], coin_seed) < prob
                x = tf.cond(apply, lambda x=x, op=op, m=magnitude, s=sign_seed: apply_op(x, op, m, s, fill),
                            lambda x=x: x)
            return x
        return run

    out = tf.switch_case(index, [branch(sub) for sub in policy])
    out.set_shape(image.shape)
    return out


def apply_op(image, op: str, magnitude: int, sign_seed, fill=FILL) -> tf.Tensor:
    """``op`` at ``magnitude``, with a random sign (from ``sign_seed``) for the ops of symmetric range."""
    value = magnitude_value(op, magnitude, int(image.shape[1]))
    if op in SIGNED:
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        value = sign * value
    functions = {
        "ShearX": lambda: shear_x(image, value, fill), "ShearY": lambda: shear_y(image, value, fill),
        "TranslateX": lambda: translate_x(image, value, fill), "TranslateY": lambda: translate_y(image, value, fill),
        "Rotate": lambda: rotate(image, value, fill),
        "Color": lambda: color(image, 1.0 + value), "Contrast": lambda: contrast(image, 1.0 + value),
        "Brightness": lambda: brightness(image, 1.0 + value), "Sharpness": lambda: sharpness(image, 1.0 + value),
        "AutoContrast": lambda: auto_contrast(image), "Equalize": lambda: equalize(image),
        "Invert": lambda: invert(image), "Solarize": lambda: solarize(image, value),
        "Posterize": lambda: posterize(image, value),
    }
    return functions[op]()


# === geometric ops: nearest neighbour, uncovered pixels get ``fill`` ===

def shear_x(image, slope, fill=FILL) -> tf.Tensor:
    """Output pixel (row y, column x) takes the input at column ``x + slope * y`` (shear about the top-left)."""
    return _transform(image, [1.0, slope, 0.0, 0.0, 1.0, 0.0], fill)


def shear_y(image, slope, fill=FILL) -> tf.Tensor:
    """Output pixel (y, x) takes the input at row ``y + slope * x``."""
    return _transform(image, [1.0, 0.0, 0.0, slope, 1.0, 0.0], fill)


def translate_x(image, pixels, fill=FILL) -> tf.Tensor:
    """Output pixel (y, x) takes the input at column ``x + pixels`` (the content moves left)."""
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], fill)


def translate_y(image, pixels, fill=FILL) -> tf.Tensor:
    """Output pixel (y, x) takes the input at row ``y + pixels`` (the content moves up)."""
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], fill)


def rotate(image, degrees, fill=FILL) -> tf.Tensor:
    """Rotates the content counter-clockwise by ``degrees`` about the image centre ((W-1)/2, (H-1)/2)."""
    height, width = int(image.shape[0]), int(image.shape[1])
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    # Input point = c + R(-θ)(p - c) in x-right, y-down coordinates.
    return _transform(image, [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy], fill)


def _transform(image, affine, fill) -> tf.Tensor:
    # ImageProjectiveTransformV3 maps output (x, y) to input ((a0 x + a1 y + a2), (b0 x + b1 y + b2)) here
    # (no projective part), rounds to the nearest pixel and fills outside the image.
    transform = tf.reshape(tf.stack([tf.cast(v, tf.float32) for v in affine] + [0.0, 0.0]), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=tf.constant(fill, tf.float32), interpolation="NEAREST", fill_mode="CONSTANT")[0]
    return tf.ensure_shape(out, image.shape)


# === tonal ops ===

def invert(image) -> tf.Tensor:
    return 255.0 - image


def solarize(image, threshold) -> tf.Tensor:
    """Inverts the pixels at or above ``threshold``."""
    return tf.where(image >= threshold, 255.0 - image, image)


def posterize(image, bits) -> tf.Tensor:
    """Keeps the ``bits`` high bits of every value."""
    step = tf.cast(2 ** (8 - bits), tf.float32)
    return tf.floor(image / step) * step


def auto_contrast(image) -> tf.Tensor:
    """Stretches each channel linearly so that its minimum becomes 0 and its maximum 255 (constant channels
    stay as they are)."""
    lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = tf.clip_by_value(tf.round((image - lo) * scale), 0.0, 255.0)
    return tf.where(hi > lo, stretched, image)


def equalize(image) -> tf.Tensor:
    """Histogram equalisation per channel, PIL's rule: with ``h`` the histogram, ``step = (Σh − h[max]) // 255``
    and ``lut[i] = min(255, (step // 2 + Σ_{j<i} h[j]) // step)``; a channel with ``step == 0`` is unchanged."""
    channels = []
    for c in range(3):
        values = tf.cast(image[:, :, c], tf.int32)
        hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256, dtype=tf.int32)
        step = (tf.reduce_sum(hist) - tf.gather(hist, tf.reduce_max(values))) // 255
        safe = tf.maximum(step, 1)
        lut = tf.minimum((safe // 2 + tf.cumsum(hist, exclusive=True)) // safe, 255)
        channels.append(tf.where(step > 0, tf.cast(tf.gather(lut, values), tf.float32), image[:, :, c]))
    return tf.stack(channels, axis=-1)


# === enhancements: blend with a degenerate image, factor 1 = identity ===

def blend(degenerate, image, factor) -> tf.Tensor:
    """``degenerate + factor · (image − degenerate)``, rounded and clipped to 0..255 (PIL's ImageEnhance)."""
    return tf.clip_by_value(tf.round(degenerate + factor * (image - degenerate)), 0.0, 255.0)


def grayscale(image) -> tf.Tensor:
    """The rounded luma [H, W, 1] (PIL's "L")."""
    return tf.round(tf.reduce_sum(image * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True))


def color(image, factor) -> tf.Tensor:
    """Saturation: blends with the grayscale image (factor 0 = gray)."""
    return blend(grayscale(image), image, factor)


def contrast(image, factor) -> tf.Tensor:
    """Blends with a constant image at the rounded mean luma."""
    mean = tf.floor(tf.reduce_mean(grayscale(image)) + 0.5)
    return blend(mean, image, factor)


def brightness(image, factor) -> tf.Tensor:
    """Blends with black."""
    return blend(0.0, image, factor)


def sharpness(image, factor) -> tf.Tensor:
    """Blends with the image smoothed by PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded; the
    one-pixel border is left as it is (as PIL's 3×3 filters do)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, cols = tf.range(height), tf.range(width)
    interior = (((rows > 0) & (rows < height - 1))[:, None] & ((cols > 0) & (cols < width - 1))[None, :])
    degenerate = tf.where(interior[:, :, None], smooth, image)
    return blend(degenerate, image, factor)

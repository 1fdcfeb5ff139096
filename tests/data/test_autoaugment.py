"""Tests of hdas_tf.data.autoaugment: every op against a NumPy reference written here from the op's definition,
at a few magnitudes; exact geometric facts (90° rotation, whole-pixel shifts); the magnitude table; the policy
table; the sub-policy mechanics; and `--augment=autoaugment` in the training pipeline."""

import math

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf import data
from hdas_tf.data import autoaugment as aa

LUMA = (0.299, 0.587, 0.114)


def _image(seed=0, size=32):
    """A test image with structure (gradients, a bright square) and noise, uint8 values as float64."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx * 6, yy * 5, (xx + yy) * 3], axis=-1).astype(np.float64) + rng.integers(0, 40, (size, size, 3))
    img[8:14, 18:26] = 250
    return np.clip(img, 0, 255).round()


def _tf(op, img, *args):
    return op(tf.constant(img, tf.float32), *args).numpy().astype(np.float64)


def _round_half_away(v):
    return math.copysign(math.floor(abs(v) + 0.5), v)


def _np_sample(img, source, fill=128.0):
    """Output pixel (y, x) = input at the nearest pixel (half away from zero) of ``source(x, y) -> (x_in, y_in)``,
    else ``fill``. Coordinates are float32, as in TensorFlow's kernel, so that ties such as 0.3 · 5 round alike."""
    h, w, _ = img.shape
    out = np.full_like(img, fill)
    for y in range(h):
        for x in range(w):
            xi, yi = source(np.float32(x), np.float32(y))
            xr, yr = int(_round_half_away(xi)), int(_round_half_away(yi))
            if 0 <= xr < w and 0 <= yr < h:
                out[y, x] = img[yr, xr]
    return out


def _np_blend(degenerate, img, factor):
    return np.clip(np.round(degenerate + factor * (img - degenerate)), 0, 255)


def _np_gray(img):
    return np.round(img[..., 0] * LUMA[0] + img[..., 1] * LUMA[1] + img[..., 2] * LUMA[2])[..., None]


def _np_equalize(img):
    """PIL's ImageOps.equalize rule, per channel, with explicit loops over the histogram."""
    out = img.copy()
    for c in range(3):
        values = img[..., c].astype(int)
        hist = [int((values == i).sum()) for i in range(256)]
        used = [n for n in hist if n]
        step = (sum(used) - used[-1]) // 255
        if step == 0:
            continue
        lut, n = [], step // 2
        for i in range(256):
            lut.append(min(255, n // step))
            n += hist[i]
        out[..., c] = np.array(lut)[values]
    return out


def _np_sharpness(img, factor):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13.0
    degenerate = img.copy()
    h, w, _ = img.shape
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            degenerate[y, x] = np.round(np.tensordot(kernel, img[y - 1:y + 2, x - 1:x + 2], axes=([0, 1], [0, 1])))
    return _np_blend(degenerate, img, factor)


def _assert_close_uint8(actual, expected, max_mismatch=0.02):
    """Equal up to float32-vs-float64 rounding at .5 boundaries: off by at most 1, and on few pixels."""
    diff = np.abs(actual - expected)
    assert diff.max() <= 1.0, diff.max()
    assert (diff > 0).mean() <= max_mismatch, (diff > 0).mean()


# === geometric ops ===

@pytest.mark.parametrize("slope", [0.0, 0.1, -0.2333, 0.3, -0.3])
def test_shear_x_and_y_match_numpy(slope):
    img = _image(1)
    slope32 = np.float32(slope)
    np.testing.assert_array_equal(_tf(aa.shear_x, img, slope), _np_sample(img, lambda x, y: (x + slope32 * y, y)))
    np.testing.assert_array_equal(_tf(aa.shear_y, img, slope), _np_sample(img, lambda x, y: (x, y + slope32 * x)))


@pytest.mark.parametrize("pixels", [3.0, -7.0, 4.35, -14.5])
def test_translate_matches_numpy(pixels):
    img = _image(2)
    pixels32 = np.float32(pixels)
    np.testing.assert_array_equal(_tf(aa.translate_x, img, pixels), _np_sample(img, lambda x, y: (x + pixels32, y)))
    np.testing.assert_array_equal(_tf(aa.translate_y, img, pixels), _np_sample(img, lambda x, y: (x, y + pixels32)))


def test_whole_pixel_translation_is_a_shift_with_grey_fill():
    img = _image(3)
    out = _tf(aa.translate_x, img, 3.0)
    np.testing.assert_array_equal(out[:, :29], img[:, 3:])
    assert (out[:, 29:] == 128).all()
    out = _tf(aa.translate_y, img, -5.0)
    np.testing.assert_array_equal(out[5:], img[:27])
    assert (out[:5] == 128).all()


@pytest.mark.parametrize("degrees", [6.6667, -20.0, 30.0])
def test_rotate_matches_numpy(degrees):
    img = _image(4)
    t = math.radians(degrees)
    c = 15.5

    def source(x, y):  # the output point rotated back (clockwise on screen) about the centre
        dx, dy = x - c, y - c
        return c + math.cos(t) * dx - math.sin(t) * dy, c + math.sin(t) * dx + math.cos(t) * dy

    expected = _np_sample(img, source)
    actual = _tf(aa.rotate, img, degrees)
    # Float32 vs float64 coordinates may round differently for a point within 1e-5 of a pixel boundary.
    assert (actual != expected).any(axis=-1).mean() < 0.01


def test_rotate_90_is_numpys_counter_clockwise_rot90():
    img = _image(5)
    np.testing.assert_array_equal(_tf(aa.rotate, img, 90.0), np.rot90(img))
    np.testing.assert_array_equal(_tf(aa.rotate, img, -90.0), np.rot90(img, k=-1))


# === tonal ops ===

def test_invert_solarize_posterize_match_numpy():
    img = _image(6)
    np.testing.assert_array_equal(_tf(aa.invert, img), 255 - img)
    for threshold in (256.0, 199.1111, 113.7778, 0.0):
        np.testing.assert_array_equal(_tf(aa.solarize, img, threshold), np.where(img >= threshold, 255 - img, img))
    for bits in (8, 7, 5, 4):
        mask = (0xFF << (8 - bits)) & 0xFF
        np.testing.assert_array_equal(_tf(aa.posterize, img, bits), np.bitwise_and(img.astype(np.uint8), mask))


def test_auto_contrast_matches_numpy_and_keeps_constant_channels():
    img = _image(7) * 0.5 + 40  # range about 40..167: stretched to 0..255
    img[..., 2] = 77.0  # a constant channel stays
    img = img.round()
    expected = img.copy()
    for c in range(2):
        lo, hi = img[..., c].min(), img[..., c].max()
        expected[..., c] = np.clip(np.round((img[..., c] - lo) * 255.0 / (hi - lo)), 0, 255)
    _assert_close_uint8(_tf(aa.auto_contrast, img), expected)
    out = _tf(aa.auto_contrast, img)
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255 and (out[..., 2] == 77).all()


@pytest.mark.parametrize("seed", [8, 9])
def test_equalize_matches_numpy(seed):
    img = _image(seed)
    np.testing.assert_array_equal(_tf(aa.equalize, img), _np_equalize(img))
    flat = np.full((32, 32, 3), 90.0)  # one value: step 0, unchanged
    np.testing.assert_array_equal(_tf(aa.equalize, flat), flat)


@pytest.mark.parametrize("factor", [0.1, 0.6, 1.0, 1.5, 1.9])
def test_enhancements_match_numpy(factor):
    img = _image(10)
    gray = _np_gray(img)
    _assert_close_uint8(_tf(aa.color, img, factor), _np_blend(gray, img, factor))
    _assert_close_uint8(_tf(aa.contrast, img, factor), _np_blend(np.floor(gray.mean() + 0.5), img, factor))
    _assert_close_uint8(_tf(aa.brightness, img, factor), _np_blend(0.0, img, factor))
    _assert_close_uint8(_tf(aa.sharpness, img, factor), _np_sharpness(img, factor))


def test_enhancement_factor_one_is_the_identity():
    img = _image(11)
    for op in (aa.color, aa.contrast, aa.brightness, aa.sharpness):
        np.testing.assert_array_equal(_tf(op, img, 1.0), img)


# === magnitudes and the policy table ===

def test_magnitude_values_span_the_papers_ranges():
    assert aa.magnitude_value("ShearX", 0) == 0.0 and aa.magnitude_value("ShearY", 9) == pytest.approx(0.3)
    assert aa.magnitude_value("TranslateX", 9, width=331) == pytest.approx(150.0)
    assert aa.magnitude_value("TranslateY", 9, width=32) == pytest.approx(150.0 / 331.0 * 32)
    assert aa.magnitude_value("Rotate", 3) == pytest.approx(10.0)
    assert aa.magnitude_value("Color", 9) == pytest.approx(0.9)  # factors 0.1 .. 1.9
    assert [aa.magnitude_value("Posterize", m) for m in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert aa.magnitude_value("Solarize", 0) == 256.0 and aa.magnitude_value("Solarize", 9) == 0.0
    assert aa.magnitude_value("Equalize", 5) is None
    with pytest.raises(ValueError, match="magnitude must be in 0..9"):
        aa.magnitude_value("Rotate", 10)
    with pytest.raises(ValueError, match="unknown AutoAugment op"):
        aa.magnitude_value("Cutout", 1)


def test_cifar10_policy_is_the_papers_table():
    policy = data.CIFAR10_POLICY
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    for sub in policy:
        for op, prob, magnitude in sub:
            assert op in aa.OPS and 0.0 <= prob <= 1.0 and 0 <= magnitude <= 9
    # Spot checks typed from the paper's appendix table (sub-policies 0, 5, 14, 24).
    assert policy[0] == (("Invert", 0.1, 7), ("Contrast", 0.2, 6))
    assert policy[5] == (("ShearY", 0.2, 7), ("Posterize", 0.3, 7))
    assert policy[14] == (("Solarize", 0.5, 2), ("Invert", 0.0, 3))
    assert policy[24] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1))


# === the policy mechanics ===

def _seed(i):
    return tf.constant([3, i], tf.int64)


def test_sub_policy_steps_compose_with_probability_one_and_skip_with_zero():
    img = _image(12)
    x = tf.constant(img, tf.float32)
    both = (("Invert", 1.0, 0), ("Posterize", 1.0, 9)),  # posterize to 4 bits after inverting
    out = aa.apply_policy(x, _seed(0), policy=both).numpy()
    np.testing.assert_array_equal(out, np.bitwise_and((255 - img).astype(np.uint8), 0xF0))
    never = (("Invert", 0.0, 0), ("Solarize", 0.0, 9)),
    np.testing.assert_array_equal(aa.apply_policy(x, _seed(0), policy=never).numpy(), img)


def test_signed_ops_draw_both_signs_and_sub_policies_are_drawn_uniformly():
    img = _image(13)
    x = tf.constant(img, tf.float32)
    shift = (("TranslateX", 1.0, 9), ("Invert", 0.0, 0)),
    pixels = aa.magnitude_value("TranslateX", 9)
    left = _np_sample(img, lambda cx, cy: (cx + pixels, cy))
    right = _np_sample(img, lambda cx, cy: (cx - pixels, cy))
    outs = [aa.apply_policy(x, _seed(i), policy=shift).numpy() for i in range(20)]
    signs = [1 if np.array_equal(o, left) else -1 if np.array_equal(o, right) else 0 for o in outs]
    assert 0 not in signs and 1 in signs and -1 in signs
    # Three one-step sub-policies with distinct results: each is drawn about a third of the time.
    three = ((("Invert", 1.0, 0),), (("Posterize", 1.0, 9),), (("Equalize", 1.0, 0),))
    results = {"invert": 255 - img, "posterize": np.floor(img / 16) * 16, "equalize": _np_equalize(img)}
    counts = dict.fromkeys(results, 0)
    for i in range(90):
        out = aa.apply_policy(x, _seed(100 + i), policy=three).numpy()
        matched = [name for name, result in results.items() if np.array_equal(out, result)]
        assert len(matched) == 1, matched
        counts[matched[0]] += 1
    assert all(15 <= n <= 45 for n in counts.values()), counts  # 30 expected each (binomial sd 4.5)


def test_policy_is_a_function_of_the_seed():
    x = tf.constant(_image(14), tf.float32)
    a = [aa.apply_policy(x, _seed(i)).numpy() for i in range(12)]
    b = [aa.apply_policy(x, _seed(i)).numpy() for i in range(12)]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert len({u.tobytes() for u in a}) > 3  # different seeds, different sub-policies and coin flips


def test_training_pipeline_with_autoaugment():
    def first(seed):
        train, _, info = data.train_test_datasets("digits", batch_size=16, num_examples=64, seed=seed,
                                                  augment="autoaugment", cutout=8)
        return next(iter(train))[0].numpy(), info

    x, info = first(0)
    assert x.shape == (16, 32, 32, 3) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, first(0)[0])
    assert not np.array_equal(x, first(1)[0])
    # The pipeline's images differ from the cifar recipe's with the same seed (same crops, flips, cutouts).
    train, _, _ = data.train_test_datasets("digits", batch_size=16, num_examples=64, seed=0, augment="cifar",
                                           cutout=8)
    assert not np.array_equal(x, next(iter(train))[0].numpy())


def test_training_config_accepts_autoaugment():
    from hdas_tf.train.config import TrainConfig

    assert TrainConfig(genotype="DARTS_V2", augment="autoaugment").augment == "autoaugment"
    with pytest.raises(ValueError, match="augment must be one of"):
        TrainConfig(genotype="DARTS_V2", augment="randaugment")

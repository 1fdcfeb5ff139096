"""Tests of hdas_tf.primitives: the hand-written backward passes against TF's autodiff of the same math.

The op layers and the search cell are built from ``primitives.block``; tests/test_ops.py and test_cells.py
compare their outputs with numpy references and with each other. Here each block's gradients (input, BN
scale and offset, the op weight, every kernel) are checked against autodiff of plain ops, which share no
code with the hand-written pass.
"""

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf import primitives as P


def rand(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def reference_block(x, pw, scale, offset, dw=None, stride=1, padding="SAME", conv=None, conv_stride=1, weight=None):
    """The block with plain ops only (autodiff): depthwise, 1×1 matmul or conv, biased-variance batch norm."""
    a = x if dw is None else tf.nn.depthwise_conv2d(x, dw, [1, stride, stride, 1], padding)
    if conv is None:
        z = tf.einsum("bhwc,cd->bhwd", a, pw)
    else:
        z = tf.nn.conv2d(a, conv, conv_stride, "VALID")
    mean, var = tf.nn.moments(z, axes=[0, 1, 2])
    y = (z - mean) / tf.sqrt(var + 1e-5)
    if scale is not None:
        y = y * scale + offset
    return y if weight is None else weight * y


CONFIGS = {
    "dw3": dict(k=3),
    "dw5_fast_filter_grad": dict(k=5),
    "dw3_stride2_valid": dict(k=3, stride=2, padding="VALID"),
    "dw5_stride2_valid": dict(k=5, stride=2, padding="VALID"),
    "pointwise_only": dict(k=None),
    "factorized_reduce_conv": dict(k=None, conv=True),
}


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_block_gradients_equal_autodiff(name, recompute, weighted, affine):
    cfg = CONFIGS[name]
    c, c_out = 3, 4
    x = rand(4, 6, 6, c, seed=1)
    k, stride, padding = cfg["k"], cfg.get("stride", 1), cfg.get("padding", "SAME")
    dw = None if k is None else rand(k, k, c, 1, seed=2)
    conv = rand(2, 2, c, c_out, seed=3) if cfg.get("conv") else None
    pw = None if conv is not None else rand(c, c_out, seed=4)
    scale, offset = (rand(c_out, seed=5) + 2.0, rand(c_out, seed=6)) if affine else (None, None)
    weight = tf.constant(0.7) if weighted else None
    probe = None
    sources = [t for t in (x, scale, offset, dw, pw, conv, weight) if t is not None]

    def loss(fn):
        nonlocal probe
        with tf.GradientTape() as tape:
            tape.watch(sources)
            y = fn()
            if probe is None:
                probe = rand(*y.shape, seed=7)
            value = tf.reduce_sum(y * probe)
        return value, tape.gradient(value, sources)

    kwargs = dict(depthwise_kernel=dw, stride=stride, padding=padding, conv_kernel=conv, conv_stride=2)
    with P.options(recompute=recompute):
        got, got_grads = loss(lambda: P.block(x, pw, scale, offset, weight=weight, **kwargs))
    want, want_grads = loss(lambda: reference_block(x, pw, scale, offset, dw, stride, padding, conv, 2, weight))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)
    for g, w, t in zip(got_grads, want_grads, sources):
        assert g is not None, t.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=2e-3, atol=2e-4)


def test_block_statistics_are_batch_mean_and_unbiased_variance():
    x, pw = rand(2, 3, 3, 2, seed=8), rand(2, 3, seed=9)
    _, mean, var = P.block(x, pw, statistics=True)
    z = tf.einsum("bhwc,cd->bhwd", x, pw).numpy().reshape(-1, 3)
    np.testing.assert_allclose(mean.numpy(), z.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), z.var(axis=0, ddof=1), rtol=1e-4)


def test_block_without_weight_gradients_gives_input_and_weight_gradients_only():
    x, dw, pw = rand(2, 6, 6, 3, seed=10), rand(5, 5, 3, 1, seed=11), rand(3, 3, seed=12)
    weight = tf.constant(0.3)
    probe = rand(2, 6, 6, 3, seed=13)

    def grads(weight_gradients):
        with tf.GradientTape() as tape:
            tape.watch([x, weight, dw, pw])
            with P.options(weight_gradients=weight_gradients):
                y = P.block(x, pw, depthwise_kernel=dw, weight=weight)
            loss = tf.reduce_sum(y * probe)
        return tape.gradient(loss, [x, weight, dw, pw])

    full, partial = grads(True), grads(False)
    assert partial[2] is None and partial[3] is None  # not even in the graph
    for a, b in zip(full[:2], partial[:2]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_options_are_scoped():
    with P.options(recompute=True, weight_gradients=False):
        assert P._option("recompute", False) and not P._option("weight_gradients", True)
        with P.options(recompute=False):
            assert not P._option("recompute", True)
        assert P._option("recompute", False)
    assert not P._option("recompute", False) and P._option("weight_gradients", True)


@pytest.mark.parametrize("size", [6, 7])
def test_fast_depthwise_filter_gradient_equals_native_and_has_a_second_derivative(size):
    x, kernel = rand(3, size, size, 4, seed=14), rand(5, 5, 4, 1, seed=15)
    probe = rand(3, size, size, 4, seed=16)
    results = []
    for fn in (P.depthwise, lambda a, k: tf.nn.depthwise_conv2d(a, k, [1, 1, 1, 1], "SAME")):
        with tf.GradientTape() as outer:
            outer.watch([x, kernel])
            with tf.GradientTape() as inner:
                inner.watch([x, kernel])
                loss = tf.reduce_sum(fn(x, kernel) * probe)
            gx, gk = inner.gradient(loss, [x, kernel])
            second = tf.reduce_sum(gk * gk) + tf.reduce_sum(gx * gx)
        results.append([gx, gk, *outer.gradient(second, [x, kernel])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4)


def test_polyphase_round_trip_and_dilated_conv():
    x = rand(2, 8, 6, 3, seed=17)
    np.testing.assert_array_equal(P.from_polyphase(P.to_polyphase(x)).numpy(), x.numpy())
    kernel = rand(3, 3, 3, 1, seed=18)
    via_polyphase = P.from_polyphase(P.depthwise_same(P.to_polyphase(x), kernel))
    dilated = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[2, 2])
    np.testing.assert_allclose(via_polyphase.numpy(), dilated.numpy(), rtol=1e-5, atol=1e-5)
    assert not P.polyphase_ok((2, 7, 8, 3)) and P.polyphase_ok((2, 8, 8, 3))


def test_subsample_is_the_even_sub_grid():
    x = rand(2, 7, 7, 3, seed=19)
    np.testing.assert_array_equal(P.subsample(x).numpy(), x.numpy()[:, ::2, ::2, :])

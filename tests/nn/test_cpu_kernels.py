"""hdas_tf's CPU kernels (hdas_tf/csrc, loaded by hdas_tf.cpu_kernels) against TF's own kernels, the adjoint
identities that make them each other's gradients, finite differences, and the search step computed both ways;
and the loader's modes and failures."""

import os

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn import cpu_kernels
from hdas_tf.nn import tracing

LIB = cpu_kernels.library()
pytestmark = pytest.mark.skipif(LIB is None, reason="hdas_tf's CPU kernels are not in use in this process")

# (N, H, W, C, k, stride): the supernets' shapes at small sizes, channel counts with and without a remainder
# of 8 and of 4, even and odd sizes, both strides.
DW_CASES = [(2, 8, 8, 16, 3, 1), (2, 8, 8, 16, 5, 1), (1, 7, 9, 36, 3, 1), (2, 6, 5, 3, 5, 1), (2, 5, 5, 13, 3, 1),
            (2, 9, 9, 16, 3, 2), (2, 11, 11, 40, 5, 2), (1, 8, 7, 5, 3, 2), (3, 4, 4, 72, 3, 1)]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def _tf_padding(k, stride):
    """TF's padding and our symmetric pad for the cases the library supports: 'SAME' at stride 1 (odd k),
    'VALID' otherwise (callers pad first)."""
    return ("SAME", (k - 1) // 2) if stride == 1 else ("VALID", 0)


@pytest.mark.parametrize("n,h,w,c,k,s", DW_CASES)
def test_depthwise_forward_and_gradients_equal_tensorflows(n, h, w, c, k, s):
    rng = np.random.default_rng(k * 100 + c)
    x = tf.constant(rng.normal(size=(n, h, w, c)), tf.float32)
    f = tf.constant(rng.normal(size=(k, k, c, 1)), tf.float32)
    padding, pad = _tf_padding(k, s)
    strides = [1, s, s, 1]
    y_ref = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=f, strides=strides, padding=padding)
    y = LIB.hdas_depthwise_conv2d(x, f, stride=s, pad=pad)
    assert y.shape == y_ref.shape
    assert _rel(y, y_ref) < 1e-5
    dy = tf.constant(rng.normal(size=y.shape), tf.float32)
    dx_ref = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(input_sizes=x.shape, filter=f, out_backprop=dy,
                                                           strides=strides, padding=padding)
    df_ref = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(input=x, filter_sizes=f.shape, out_backprop=dy,
                                                            strides=strides, padding=padding)
    assert _rel(LIB.hdas_depthwise_conv2d_backprop_input(x.shape, f, dy, stride=s, pad=pad), dx_ref) < 1e-5
    assert _rel(LIB.hdas_depthwise_conv2d_backprop_filter(x, dy, k=k, stride=s, pad=pad), df_ref) < 1e-5


def test_depthwise_ops_are_adjoint_in_float64_sums():
    """<F(x, f), dy> = <x, B_in(f, dy)> = <f, B_f(x, dy)>: the identities the registered gradients rest on."""
    rng = np.random.default_rng(3)
    for n, h, w, c, k, s in DW_CASES:
        _, pad = _tf_padding(k, s)
        x = rng.normal(size=(n, h, w, c)).astype(np.float32)
        f = rng.normal(size=(k, k, c, 1)).astype(np.float32)
        y = LIB.hdas_depthwise_conv2d(x, f, stride=s, pad=pad).numpy()
        dy = rng.normal(size=y.shape).astype(np.float32)
        dx = LIB.hdas_depthwise_conv2d_backprop_input(x.shape, f, dy, stride=s, pad=pad).numpy()
        df = LIB.hdas_depthwise_conv2d_backprop_filter(x, dy, k=k, stride=s, pad=pad).numpy()
        forward = np.sum(y.astype(np.float64) * dy)
        assert np.sum(x.astype(np.float64) * dx) == pytest.approx(forward, rel=1e-5)
        assert np.sum(f.astype(np.float64) * df) == pytest.approx(forward, rel=1e-5)


def test_depthwise_gradient_against_finite_differences():
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(1, 5, 6, 9)), tf.float32)
    f = tf.constant(rng.normal(size=(3, 3, 9, 1)), tf.float32)
    for s, pad in ((1, 1), (2, 0)):
        theoretical, numerical = tf.test.compute_gradient(
            lambda a, b: LIB.hdas_depthwise_conv2d(a, b, stride=s, pad=pad), [x, f], delta=1e-2)
        for t, m in zip(theoretical, numerical):
            assert np.abs(t - m).max() < 2e-3 * max(1.0, np.abs(m).max())


def test_second_derivatives_equal_tensorflows():
    """The gradients registered for the two gradient ops (double backprop through a depthwise conv)."""
    rng = np.random.default_rng(5)
    x = tf.Variable(rng.normal(size=(2, 6, 6, 8)), dtype=tf.float32)
    f = tf.Variable(rng.normal(size=(3, 3, 8, 1)), dtype=tf.float32)
    v = tf.constant(rng.normal(size=(2, 6, 6, 8)), tf.float32)

    def grad_norm(conv):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                y = tf.reduce_sum(tf.square(conv(x, f)) * v)
            gx, gf = inner.gradient(y, [x, f])
            z = tf.reduce_sum(tf.square(gx)) + tf.reduce_sum(tf.square(gf))
        return outer.gradient(z, [x, f])

    ours = grad_norm(lambda a, b: LIB.hdas_depthwise_conv2d(a, b, stride=1, pad=1))
    theirs = grad_norm(lambda a, b: tf.nn.depthwise_conv2d(a, b, [1, 1, 1, 1], "SAME"))
    for a, b in zip(ours, theirs):
        assert _rel(a, b) < 1e-4


@pytest.mark.parametrize("shape", [(4, 8, 8, 16), (2, 5, 7, 36), (3, 3, 3, 5), (64, 1, 1, 3)])
def test_batch_norm_equals_fused_batch_norm_and_shares_its_reserve_spaces(shape):
    rng = np.random.default_rng(sum(shape))
    x = tf.constant(rng.normal(size=shape) * 3 + 5, tf.float32)  # a mean far from 0: the shifted sums matter
    c = shape[-1]
    scale = tf.constant(rng.normal(size=c), tf.float32)
    offset = tf.constant(rng.normal(size=c), tf.float32)
    empty = tf.zeros((0,))
    ref = tf.raw_ops.FusedBatchNormV3(x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=1e-5,
                                      is_training=True)
    ours = LIB.hdas_batch_norm(x, scale, offset, epsilon=1e-5)
    for i in range(5):  # y, mean, unbiased variance, reserve 1 (mean), reserve 2 (biased variance)
        assert _rel(ours[i], ref[i]) < 2e-5, i
    dy = tf.constant(rng.normal(size=shape), tf.float32)
    grad_ref = tf.raw_ops.FusedBatchNormGradV3(y_backprop=dy, x=x, scale=scale, reserve_space_1=ref[3],
                                               reserve_space_2=ref[4], reserve_space_3=ref[5], epsilon=1e-5,
                                               is_training=True)
    for reserve in ((ours[3], ours[4]), (ref[3], ref[4])):
        grads = LIB.hdas_batch_norm_grad(dy, x, scale, *reserve, epsilon=1e-5)
        for i in range(3):
            assert _rel(grads[i], grad_ref[i]) < 2e-5, i


def test_batch_norm_against_hand_computed_values_and_finite_differences():
    x = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]], np.float32).reshape(3, 1, 1, 2)
    y, mean, unbiased, _, var = LIB.hdas_batch_norm(x, [1.0, 2.0], [0.0, 1.0], epsilon=0.0)
    np.testing.assert_allclose(mean, [3.0, 20.0], rtol=1e-6)
    np.testing.assert_allclose(var, [14 / 3, 200 / 3], rtol=1e-6)
    np.testing.assert_allclose(unbiased, [7.0, 100.0], rtol=1e-6)
    np.testing.assert_allclose(y[:, 0, 0, 0], (np.array([1, 2, 6]) - 3) / np.sqrt(14 / 3), rtol=1e-5)
    np.testing.assert_allclose(y[:, 0, 0, 1], 2 * (np.array([10, 20, 30]) - 20) / np.sqrt(200 / 3) + 1, rtol=1e-5)
    rng = np.random.default_rng(6)
    xs = tf.constant(rng.normal(size=(3, 2, 2, 4)), tf.float32)
    s = tf.constant(rng.normal(size=4), tf.float32)
    o = tf.constant(rng.normal(size=4), tf.float32)
    w = tf.constant(rng.normal(size=(3, 2, 2, 4)), tf.float32)
    theoretical, numerical = tf.test.compute_gradient(
        lambda a, b, c: tf.reduce_sum(LIB.hdas_batch_norm(a, b, c, epsilon=1e-3)[0] * w), [xs, s, o], delta=1e-2)
    for t, m in zip(theoretical, numerical):
        assert np.abs(t - m).max() < 5e-3 * max(1.0, np.abs(m).max())


@pytest.mark.parametrize("shape,stride", [((2, 8, 8, 16), 1), ((2, 8, 8, 16), 2), ((1, 7, 9, 13), 1),
                                          ((3, 7, 5, 5), 2), ((1, 6, 6, 72), 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_grad_equals_tensorflows_including_ties(shape, stride, ties):
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape)
    x = tf.constant(np.round(x) if ties else x, tf.float32)  # rounding makes many windows tie
    ksize, strides = [1, 3, 3, 1], [1, stride, stride, 1]
    if stride == 1:
        x_in, padding, pad = x, "SAME", 1
    else:
        x_in, padding, pad = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=float("-inf")), "VALID", 0
    y = tf.raw_ops.MaxPool(input=x_in, ksize=ksize, strides=strides, padding=padding)
    dy = tf.constant(rng.normal(size=y.shape), tf.float32)
    ref = tf.raw_ops.MaxPoolGrad(orig_input=x_in, orig_output=y, grad=dy, ksize=ksize, strides=strides,
                                 padding=padding)
    np.testing.assert_array_equal(LIB.hdas_max_pool_grad(x_in, y, dy, ksize=3, stride=stride, pad=pad), ref)


def test_malformed_inputs_are_clear_errors():
    x = tf.zeros((1, 4, 4, 8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="filter must be"):
        LIB.hdas_depthwise_conv2d(x, tf.zeros((3, 3, 4, 1)), stride=1, pad=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not fit"):
        LIB.hdas_depthwise_conv2d(x, tf.zeros((7, 7, 8, 1)), stride=1, pad=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="output gradient must be"):
        LIB.hdas_depthwise_conv2d_backprop_filter(x, tf.zeros((1, 3, 3, 8)), k=3, stride=1, pad=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="scale must be"):
        LIB.hdas_batch_norm(x, tf.ones((4,)), tf.zeros((8,)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be"):
        LIB.hdas_max_pool_grad(x, tf.zeros((1, 2, 2, 8)), tf.zeros((1, 2, 2, 8)), ksize=3, stride=1, pad=1)


def _search_gradients(native: bool):
    """Loss, every gradient and the op types of one forward + backward pass of a small cell supernet (every op
    kind, normal and reduction cells), traced with TF's kernels or hdas_tf's."""
    import keras

    from hdas_tf.nn.supernets import ChainSupernet
    from hdas_tf.space.search_space import SearchSpace

    space = SearchSpace(layers=3, init_channels=8, num_classes=4)
    keras.utils.set_random_seed(0)
    net = ChainSupernet(space)
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32)
    labels = tf.constant([0, 1, 2, 3])
    arch = {name: tf.Variable(rng.normal(size=shape) * 0.1, dtype=tf.float32)
            for name, shape in space.arch_shapes().items()}
    net.build(x.shape)
    variables = [v.value for v in net.trainable_variables] + list(arch.values())

    @tf.function
    def step(images):
        with tracing.options(native_kernels=native):  # the backward pass too: it is traced by tape.gradient
            with tf.GradientTape() as tape:
                logits = net(images, arch, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            return loss, tape.gradient(loss, variables)

    loss, grads = step(x)
    ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    return loss.numpy(), [g.numpy() for g in grads], ops


def test_search_step_equals_tensorflows_kernels():
    loss_n, grads_n, ops_n = _search_gradients(native=True)
    loss_c, grads_c, ops_c = _search_gradients(native=False)
    ours = {"HdasDepthwiseConv2d", "HdasDepthwiseConv2dBackpropInput", "HdasDepthwiseConv2dBackpropFilter",
            "HdasBatchNorm", "HdasBatchNormGrad", "HdasMaxPoolGrad"}
    assert ours <= ops_c
    assert not ours & ops_n
    assert loss_c == pytest.approx(loss_n, rel=1e-5)
    assert len(grads_c) == len(grads_n) > 10
    for a, b in zip(grads_c, grads_n):
        assert _rel(a, b) < 1e-3


def test_mode_is_checked(monkeypatch):
    monkeypatch.setenv(cpu_kernels.MODE_ENV, "fast")
    with pytest.raises(ValueError, match="HDAS_TF_KERNELS='fast': expected one of auto, custom, native"):
        cpu_kernels.mode()
    monkeypatch.setenv(cpu_kernels.MODE_ENV, "native")
    assert cpu_kernels.library() is None and cpu_kernels.in_use() == "native"


def test_a_failed_build_falls_back_or_fails_and_leaves_nothing(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv(cpu_kernels.CACHE_ENV, str(cache))
    monkeypatch.setenv("CXX", "no-such-compiler-hdas")
    monkeypatch.setattr(cpu_kernels, "_STATE", {})
    monkeypatch.setenv(cpu_kernels.MODE_ENV, "auto")
    assert cpu_kernels.library() is None  # TF's kernels, with a warning
    monkeypatch.setattr(cpu_kernels, "_STATE", {})
    monkeypatch.setenv(cpu_kernels.MODE_ENV, "custom")
    with pytest.raises(cpu_kernels.KernelBuildError, match="no C\\+\\+ compiler 'no-such-compiler-hdas'"):
        cpu_kernels.library()
    # A compiler that fails: the error carries its message, and no partial library is left in the cache.
    script = tmp_path / "cxx"
    script.write_text("#!/bin/sh\necho 'broken compiler' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    with pytest.raises(cpu_kernels.KernelBuildError, match="exit 3"):
        cpu_kernels.build()
    assert os.listdir(cache) == []

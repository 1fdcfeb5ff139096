"""Tests of hdas_tf.ops against facts computed independently in numpy (PyTorch conventions,
BUILD_NOTES "Mixed ops and the PyTorch grid")."""

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn import convolutions
from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS

EPS = 1e-5


# === numpy references (PyTorch semantics) ===


def np_conv(x, kernel, stride=1, padding=0, dilation=1):
    """Cross-correlation, NHWC, kernel [k, k, C_in, C_out], symmetric zero padding (torch.nn.Conv2d)."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    xp = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((n, ho, wo, kernel.shape[3]))
    for i in range(ho):
        for j in range(wo):
            for a in range(k):
                for b in range(k):
                    pix = xp[:, i * stride + a * dilation, j * stride + b * dilation, :]  # [n, C_in]
                    out[:, i, j, :] += pix @ kernel[a, b]
    return out


def np_depthwise(x, kernel, stride=1, padding=0, dilation=1):
    """Depthwise cross-correlation, kernel [k, k, C, 1] (torch Conv2d with groups=C)."""
    c = x.shape[-1]
    out = [np_conv(x[..., i:i + 1], kernel[:, :, i:i + 1, :], stride, padding, dilation) for i in range(c)]
    return np.concatenate(out, axis=-1)


def np_pool(x, kind, stride):
    """3×3 pooling, padding 1: max pads with -inf; avg divides by the real pixels (count_include_pad=False)."""
    n, h, w, c = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * stride - 1, j * stride - 1
            window = x[:, max(r0, 0):min(r0 + 3, h), max(c0, 0):min(c0 + 3, w), :]
            if kind == "max":
                out[:, i, j] = window.max(axis=(1, 2))
            else:
                out[:, i, j] = window.sum(axis=(1, 2)) / (window.shape[1] * window.shape[2])
    return out


def np_bn(x, gamma=None, beta=None):
    """Training-mode BN: batch mean and the BIASED batch variance normalise."""
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    y = (x - mean) / np.sqrt(var + EPS)
    if gamma is not None:
        y = y * gamma + beta
    return y


def relu(x):
    return np.maximum(x, 0.0)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def n_params(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def out_size(n, stride):
    return (n - 1) // stride + 1


# === shapes ===


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", CELL_OPS)
def test_op_output_shapes(name, stride, size):
    c = 4
    op = ops.make_op(name, c, stride, affine=False)
    y = op(tf.constant(rand(2, size, size, c)), training=True)
    expected = (2, out_size(size, stride), out_size(size, stride), c)
    assert tuple(y.shape) == expected
    assert tuple(op.compute_output_shape((2, size, size, c))) == expected
    assert tuple(op.compute_output_shape((None, None, None, c))) == (None, None, None, c)


def test_stage_ops_are_cell_ops():
    assert set(STAGE_OPS) <= set(CELL_OPS)
    assert CELL_OPS[-1] == "none"
    # No stage op has kernels: a search stage edge (non-affine) has no parameters; in an evaluation network a
    # pooling edge's BN is affine, γ and β: 2 per channel.
    for name in STAGE_OPS:
        for affine in (False, True):
            op = ops.make_op(name, 4, 1, affine=affine)
            op.build((1, 8, 8, 4))
            pooling = name in ("max_pool_3x3", "avg_pool_3x3")
            assert n_params(op) == (2 * 4 if affine and pooling else 0), (name, affine)


def test_none_is_zeros_of_strided_shape():
    y = ops.make_op("none", 3, 2)(tf.constant(rand(2, 7, 7, 3)))
    assert y.shape == (2, 4, 4, 3)
    assert not np.any(y.numpy())


# === pooling ===


@pytest.mark.parametrize("size", [6, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pool_matches_pytorch_reference(kind, stride, size):
    x = rand(2, size, size, 3, seed=size) - 1.0  # mostly negative: zero padding would win a max
    pool = ops.Pool(kind, stride, bn=False)
    np.testing.assert_allclose(pool(tf.constant(x)).numpy(), np_pool(x, kind, stride), rtol=1e-5, atol=1e-6)


def test_avg_pool_corner_excludes_padding():
    x = np.ones((1, 4, 4, 1), np.float32)
    y = ops.Pool("avg", 2, bn=False)(tf.constant(x)).numpy()
    np.testing.assert_allclose(y, np.ones((1, 2, 2, 1)))  # with padding counted the corner would be 4/9


def test_pool_bn_is_batch_norm_after_pooling():
    x = rand(4, 6, 6, 3, seed=3)
    pool = ops.Pool("avg", 1, bn=True, affine=False, running_stats=False)
    np.testing.assert_allclose(pool(tf.constant(x), training=True).numpy(), np_bn(np_pool(x, "avg", 1)),
                               rtol=1e-4, atol=1e-4)
    assert pool.trainable_weights == [] and pool.weights == []


# === convolution helpers: symmetric padding, PyTorch sampling grid ===


@pytest.mark.parametrize("size", [6, 7])
@pytest.mark.parametrize("k,stride,padding", [(3, 2, 1), (3, 1, 1), (1, 2, 0), (5, 2, 2)])
def test_conv_helper_matches_reference(k, stride, padding, size):
    x, kernel = rand(2, size, size, 3, seed=1), rand(k, k, 3, 5, seed=2)
    y = convolutions.torch_conv2d(tf.constant(x), tf.constant(kernel), stride, padding).numpy()
    np.testing.assert_allclose(y, np_conv(x, kernel, stride, padding), rtol=1e-4, atol=1e-4)


def test_conv_stride2_samples_pytorch_grid_not_keras_same():
    # On a 6×6 input, PyTorch (pad 1 each side) samples centres 0, 2, 4; Keras 'same' would sample 1, 3, 5.
    x, kernel = rand(1, 6, 6, 2, seed=4), rand(3, 3, 2, 2, seed=5)
    y = convolutions.torch_conv2d(tf.constant(x), tf.constant(kernel), 2, 1).numpy()
    np.testing.assert_allclose(y, np_conv(x, kernel, 2, 1), rtol=1e-4, atol=1e-4)
    same = tf.nn.conv2d(x, kernel, 2, "SAME").numpy()
    assert not np.allclose(y, same, atol=1e-3)


@pytest.mark.parametrize("size", [6, 7, 8])
@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 2), (3, 2, 2), (5, 2, 2)])
def test_depthwise_helper_matches_reference(k, stride, dilation, size):
    padding = dilation * (k - 1) // 2
    x, kernel = rand(2, size, size, 3, seed=6), rand(k, k, 3, 1, seed=7)
    y = convolutions.torch_depthwise_conv2d(tf.constant(x), tf.constant(kernel), stride, dilation, padding).numpy()
    np.testing.assert_allclose(y, np_depthwise(x, kernel, stride, padding, dilation), rtol=1e-4, atol=1e-4)


def test_dilated_stride2_equals_subsampled_stride1():
    x, kernel = rand(1, 9, 9, 2, seed=8), rand(3, 3, 2, 1, seed=9)
    s1 = convolutions.torch_depthwise_conv2d(tf.constant(x), tf.constant(kernel), 1, 2, 2).numpy()
    s2 = convolutions.torch_depthwise_conv2d(tf.constant(x), tf.constant(kernel), 2, 2, 2).numpy()
    np.testing.assert_allclose(s2, s1[:, ::2, ::2, :], rtol=1e-6)


def _non_affine_input(c=3, size=6, seed=10):
    return rand(8, size, size, c, seed=seed)


@pytest.mark.parametrize("stride", [1, 2])
def test_relu_conv_bn_matches_reference(stride):
    x = _non_affine_input()
    layer = ops.ReLUConvBN(4, 3, stride, affine=False, running_stats=False)
    y = layer(tf.constant(x), training=True).numpy()
    ref = np_bn(np_conv(relu(x), layer.kernel.numpy(), stride, 1))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_dil_conv_matches_reference(k, stride):
    x = _non_affine_input(size=7)
    op = ops.make_op(f"dil_conv_{k}x{k}", 3, stride, affine=False, running_stats=False)
    y = op(tf.constant(x), training=True).numpy()
    h = np_depthwise(relu(x), op.depthwise_kernel.numpy(), stride, 2 * (k - 1) // 2, 2)
    ref = np_bn(np_conv(h, op.pointwise_kernel.numpy()))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_sep_conv_matches_reference(stride):
    x = _non_affine_input(size=7)
    op = ops.make_op("sep_conv_3x3", 3, stride, affine=False, running_stats=False)
    y = op(tf.constant(x), training=True).numpy()
    h = x
    for block, s in ((op.block_1, stride), (op.block_2, 1)):  # stride only in the first block
        h = np_depthwise(relu(h), block.depthwise_kernel.numpy(), s, 1)
        h = np_bn(np_conv(h, block.pointwise_kernel.numpy()))
    np.testing.assert_allclose(y, h, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_sep_conv_training_updates_both_running_statistics(stride):
    """In training a SepConv runs as one chain (chains.chain); each BN still gets its own running averages."""
    x = _non_affine_input(size=7)
    op = ops.SepConv(3, 3, stride, affine=True, running_stats=True)
    op.build(x.shape)
    for v in op.trainable_weights:
        if "gamma" in v.path or "beta" in v.path:
            v.assign(rand(*v.shape, seed=len(v.path)) + (2.0 if "gamma" in v.path else 0.0))
    y = op(tf.constant(x), training=True).numpy()
    h, means, variances = x, [], []
    for block, s in ((op.block_1, stride), (op.block_2, 1)):
        z = np_conv(np_depthwise(relu(h), block.depthwise_kernel.numpy(), s, 1), block.pointwise_kernel.numpy())
        means.append(z.mean(axis=(0, 1, 2)))
        variances.append(z.var(axis=(0, 1, 2)) * z[..., 0].size / (z[..., 0].size - 1))
        h = np_bn(z, block.bn.gamma.numpy(), block.bn.beta.numpy())
    np.testing.assert_allclose(y, h, rtol=1e-4, atol=1e-4)
    for block, mean, var in zip((op.block_1, op.block_2), means, variances):
        np.testing.assert_allclose(block.bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(block.bn.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("affine,running_stats", [(True, True), (False, False)])
def test_relu_conv_bn_on_one_input_equals_separate_layers(affine, running_stats):
    """Two 1×1 preprocessings of the same tensor as one block: same outputs, gradients and running statistics."""
    x = tf.constant(_non_affine_input(c=5))
    layers = [ops.ReLUConvBN(3, 1, 1, affine=affine, running_stats=running_stats) for _ in range(2)]
    twins = [ops.ReLUConvBN(3, 1, 1, affine=affine, running_stats=running_stats) for _ in range(2)]
    for a, b in zip(layers, twins):
        a.build(x.shape)
        b.build(x.shape)
        for va, vb in zip(a.weights, b.weights):
            vb.assign(va + (rand(*va.shape, seed=3) if "gamma" in va.path else 0.0))
            va.assign(vb)
    probe = [tf.constant(rand(8, 6, 6, 3, seed=4 + i)) for i in range(2)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        joint = ops.relu_conv_bn_same_input(layers, x, training=True)
        apart = [layer(x, training=True) for layer in twins]
        loss_joint = tf.add_n([tf.reduce_sum(y * p) for y, p in zip(joint, probe)])
        loss_apart = tf.add_n([tf.reduce_sum(y * p) for y, p in zip(apart, probe)])
    for a, b in zip(joint, apart):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    got = tape.gradient(loss_joint, [x] + [w for layer in layers for w in layer.trainable_weights])
    want = tape.gradient(loss_apart, [x] + [w for layer in twins for w in layer.trainable_weights])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(layers, twins):
        for va, vb in zip(a.non_trainable_weights, b.non_trainable_weights, strict=True):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


# === BatchNorm ===


def test_batch_norm_training_output_and_moving_stats():
    x = rand(4, 3, 3, 5, seed=11) * 3.0 + 1.0
    bn = ops.BatchNorm(affine=True, running_stats=True)
    bn.build(x.shape)
    gamma, beta = rand(5, seed=12), rand(5, seed=13)
    old_mean, old_var = rand(5, seed=14), np.abs(rand(5, seed=15)) + 0.5
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    bn.moving_mean.assign(old_mean)
    bn.moving_variance.assign(old_var)
    y = bn(tf.constant(x), training=True).numpy()
    np.testing.assert_allclose(y, np_bn(x, gamma, beta), rtol=1e-4, atol=1e-4)
    n = 4 * 3 * 3
    batch_mean = x.mean(axis=(0, 1, 2))
    unbiased = x.var(axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.9 * old_mean + 0.1 * batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 * old_var + 0.1 * unbiased, rtol=1e-5, atol=1e-6)
    # Inference normalises with the moving statistics and leaves them alone.
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    y = bn(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + EPS) * gamma + beta, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)


def test_batch_norm_defaults_are_pytorch():
    bn = ops.batch_norm(affine=True)
    assert (bn.epsilon, bn.momentum) == (1e-5, 0.9)
    bn.build((None, 4, 4, 3))
    assert np.all(bn.gamma.numpy() == 1) and np.all(bn.beta.numpy() == 0)
    assert np.all(bn.moving_mean.numpy() == 0) and np.all(bn.moving_variance.numpy() == 1)


def test_batch_norm_without_running_stats_uses_batch_stats():
    x = rand(4, 3, 3, 2, seed=16) + 2.0
    bn = ops.BatchNorm(affine=False, running_stats=False)
    for training in (True, False, None):
        np.testing.assert_allclose(bn(tf.constant(x), training=training).numpy(), np_bn(x), rtol=1e-4, atol=1e-4)
    assert bn.weights == []
    assert not hasattr(bn, "moving_mean")


def test_batch_norm_non_affine_has_no_trainable_weights():
    bn = ops.BatchNorm(affine=False, running_stats=True)
    bn(tf.constant(rand(2, 3, 3, 4)), training=True)
    assert bn.trainable_weights == []
    assert sorted(w.name for w in bn.non_trainable_weights) == ["moving_mean", "moving_variance"]
    affine = ops.BatchNorm(affine=True, running_stats=False)
    affine(tf.constant(rand(2, 3, 3, 4)))
    assert sorted(w.name for w in affine.trainable_weights) == ["beta", "gamma"]
    assert affine.non_trainable_weights == []


def test_batch_norm_in_tf_function():
    bn = ops.BatchNorm(affine=False, running_stats=True)
    x = tf.constant(rand(4, 3, 3, 2, seed=17))
    bn.build(x.shape)
    f = tf.function(lambda t: bn(t, training=True))
    np.testing.assert_allclose(f(x).numpy(), np_bn(x.numpy()), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * x.numpy().mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)


# === FactorizedReduce ===


def test_factorized_reduce_params_and_odd_size():
    fr = ops.FactorizedReduce(6, affine=True, running_stats=True)
    y = fr(tf.constant(rand(2, 7, 7, 5)), training=True)
    assert y.shape == (2, 4, 4, 6)
    assert n_params(fr) == 2 * (5 * 3) + 2 * 6  # two 1×1 convs to 3 channels each, then γ and β
    assert len(fr.non_trainable_weights) == 2
    assert n_params(ops.FactorizedReduce(6, affine=False)) == 0  # not built yet
    with pytest.raises(ValueError, match="even"):
        ops.FactorizedReduce(5)


@pytest.mark.parametrize("size", [6, 7])
def test_factorized_reduce_matches_reference(size):
    x = rand(4, size, size, 3, seed=18)
    fr = ops.FactorizedReduce(4, affine=False, running_stats=False)
    y = fr(tf.constant(x), training=True).numpy()
    r = relu(x)
    # The second branch reads the input shifted by one pixel: drop row/col 0, zero-pad bottom/right.
    shifted = np.pad(r[:, 1:, 1:, :], [(0, 0), (0, 1), (0, 1), (0, 0)])
    ref = np.concatenate([np_conv(r, fr.kernel_1.numpy(), 2), np_conv(shifted, fr.kernel_2.numpy(), 2)], axis=-1)
    np.testing.assert_allclose(y, np_bn(ref), rtol=1e-4, atol=1e-4)


def _copy_weights(dst, src):
    for a, b in zip(dst.weights, src.weights, strict=True):
        assert a.shape == b.shape
        a.assign(b)


# === config round trips, errors, parameter counts ===


CONFIG_LAYERS = [
    lambda: ops.BatchNorm(affine=False, running_stats=False, epsilon=1e-3, momentum=0.8, name="bn"),
    lambda: ops.Zero(2),
    lambda: ops.Identity(),
    lambda: ops.ReLUConvBN(8, 3, 2, affine=False, running_stats=False),
    lambda: ops.FactorizedReduce(8, affine=False, running_stats=True, relu=False),
    lambda: ops.DilConv(8, 5, 2, 2, affine=True, running_stats=False, relu=False),
    lambda: ops.SepConv(8, 3, 2, affine=False, running_stats=True, relu=False),
    lambda: ops.Pool("avg", 2, bn=False, affine=False, running_stats=False),
    lambda: ops.DropPath(seed=3),
]


@pytest.mark.parametrize("make", CONFIG_LAYERS, ids=lambda m: type(m()).__name__)
def test_config_round_trip(make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Also through the registered Keras serialization.
    import keras

    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is type(layer) and again.get_config() == config


@pytest.mark.parametrize("name", CELL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_make_op_config_round_trip_keeps_behaviour(name, stride):
    op = ops.make_op(name, 4, stride, affine=False, running_stats=False)
    x = tf.constant(rand(2, 7, 7, 4, seed=21))
    y = op(x, training=True).numpy()
    clone = type(op).from_config(op.get_config())
    clone(x, training=True)
    _copy_weights(clone, op)
    np.testing.assert_allclose(clone(x, training=True).numpy(), y, rtol=1e-5, atol=1e-6)


def test_make_op_unknown_name():
    with pytest.raises(ValueError, match="bogus"):
        ops.make_op("bogus", 4)
    with pytest.raises(ValueError, match="stride"):
        ops.make_op("sep_conv_3x3", 4, 3)
    with pytest.raises(ValueError, match="kind"):
        ops.Pool("min")


@pytest.mark.parametrize("name,stride,expected", [
    ("sep_conv_3x3", 1, 2 * (9 * 16 + 16 * 16)),
    ("sep_conv_5x5", 2, 2 * (25 * 16 + 16 * 16)),
    ("dil_conv_3x3", 1, 9 * 16 + 16 * 16),
    ("dil_conv_5x5", 2, 25 * 16 + 16 * 16),
    ("skip_connect", 2, 2 * 16 * 8),
    ("skip_connect", 1, 0),
    ("max_pool_3x3", 2, 0),
    ("avg_pool_3x3", 1, 0),
    ("none", 2, 0),
])
def test_param_counts_non_affine(name, stride, expected):
    op = ops.make_op(name, 16, stride, affine=False, running_stats=False)
    op(tf.zeros((1, 8, 8, 16)), training=True)
    assert n_params(op) == expected
    assert op.non_trainable_weights == []


@pytest.mark.parametrize("name,bns", [("sep_conv_3x3", 2), ("dil_conv_5x5", 1), ("skip_connect", 1)])
def test_param_counts_affine_add_gamma_beta(name, bns):
    op = ops.make_op(name, 16, 2, affine=True)
    plain = ops.make_op(name, 16, 2, affine=False)
    for layer in (op, plain):
        layer(tf.zeros((1, 8, 8, 16)), training=True)
    assert n_params(op) == n_params(plain) + bns * 2 * 16
    assert len(op.non_trainable_weights) == 2 * bns  # moving mean/variance per BN


def test_convs_have_no_bias_and_pool_bn_follows_affine():
    for name in ("sep_conv_3x3", "dil_conv_3x3", "skip_connect"):
        op = ops.make_op(name, 4, 2, affine=True)
        op(tf.zeros((1, 8, 8, 4)), training=True)
        assert not any("bias" in w.name for w in op.weights)
    # Evaluation networks (affine): the pooling BN learns γ and β like every other BN (the H-DAS reference);
    # search networks (non-affine): none.
    for stride in (1, 2):
        pool = ops.make_op("max_pool_3x3", 4, stride, affine=True)
        pool(tf.zeros((1, 8, 8, 4)), training=True)
        assert sorted(w.name for w in pool.trainable_weights) == ["beta", "gamma"]
        assert all(tuple(w.shape) == (4,) for w in pool.trainable_weights)
        plain = ops.make_op("avg_pool_3x3", 4, stride, affine=False, running_stats=False)
        plain(tf.zeros((1, 8, 8, 4)), training=True)
        assert plain.weights == []
    assert ops.make_op("avg_pool_3x3", 4, 1, pool_bn=False).bn is None


def test_affine_pool_bn_scales_and_shifts_the_normalised_pool():
    # y = γ·(pool(x) − μ)/√(σ² + ε) + β with batch statistics per channel (training mode).
    x = rand(3, 6, 6, 2)
    op = ops.make_op("avg_pool_3x3", 2, 1, affine=True)
    op.build(x.shape)
    op.bn.gamma.assign([2.0, -0.5])
    op.bn.beta.assign([0.25, 1.0])
    y = op(tf.constant(x), training=True).numpy()
    pooled = ops.Pool("avg", 1, bn=False)(tf.constant(x)).numpy().astype(np.float64)
    mean, var = pooled.mean(axis=(0, 1, 2)), pooled.var(axis=(0, 1, 2))
    expected = np.array([2.0, -0.5]) * (pooled - mean) / np.sqrt(var + 1e-5) + np.array([0.25, 1.0])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_drop_path():
    x = tf.ones((64, 2, 2, 1))
    dp = ops.DropPath(seed=0)
    # The rate is a tensor (the network ramps it without retracing).
    np.testing.assert_array_equal(dp(x, tf.constant(0.5), training=False).numpy(), x.numpy())
    y = dp(x, tf.constant(0.25), training=True).numpy()
    per_example = y.reshape(64, -1)
    assert np.all((per_example == 0).all(axis=1) | np.isclose(per_example, 1 / 0.75).all(axis=1))
    assert 0 < (per_example[:, 0] == 0).sum() < 64
    np.testing.assert_array_equal(dp(x, tf.constant(0.0), training=True).numpy(), x.numpy())


def test_batch_norm_synchronized_across_two_replicas():
    """Under MirroredStrategy the statistics are global: two replicas of half a batch equal one device."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    x = rand(8, 3, 3, 2, seed=22) * 2.0 + 0.5
    with strategy.scope():
        bn = ops.BatchNorm(affine=False, running_stats=True)
        bn.build(x.shape)
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[4 * ctx.replica_id_in_sync_group:4 * (ctx.replica_id_in_sync_group + 1)]))
    y = strategy.run(tf.function(lambda t: bn(t, training=True)), args=(halves,))
    y = np.concatenate([t.numpy() for t in strategy.experimental_local_results(y)], axis=0)
    np.testing.assert_allclose(y, np_bn(x), rtol=1e-4, atol=1e-4)
    n = x.size // x.shape[-1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * x.var(axis=(0, 1, 2)) * n / (n - 1),
                               rtol=1e-5, atol=1e-5)

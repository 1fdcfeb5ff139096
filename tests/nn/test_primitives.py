"""Tests of the tensor-level building blocks (hdas_tf.nn.tracing, batch_stats, convolutions, chains,
parameter_free): the hand-written backward passes against TF's autodiff of the same math.

The op layers and the search cell are built from ``chains.block``; test_ops.py and test_cells.py compare their
outputs with numpy references and with each other. Here each block's gradients (input, BN scale and offset, the
op weight, every kernel) are checked against autodiff of plain ops, which share no code with the hand-written
pass.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn import chains
from hdas_tf.nn import convolutions
from hdas_tf.nn import parameter_free
from hdas_tf.nn import tracing


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
    with tracing.options(recompute=recompute):
        got, got_grads = loss(lambda: chains.block(x, pw, scale, offset, weight=weight, **kwargs))
    want, want_grads = loss(lambda: reference_block(x, pw, scale, offset, dw, stride, padding, conv, 2, weight))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)
    for g, w, t in zip(got_grads, want_grads, sources):
        assert g is not None, t.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_two_stage_chain_gradients_equal_autodiff(stride, recompute, affine):
    """A separable conv: stage 1 (strided), ReLU, stage 2, with the op weight on the last BN."""
    x = rand(4, 7, 7, 3, seed=30)
    dw1, pw1, dw2, pw2 = rand(5, 5, 3, 1, seed=31), rand(3, 3, seed=32), rand(5, 5, 3, 1, seed=33), rand(3, 3, seed=34)
    gb = [rand(3, seed=35) + 2.0, rand(3, seed=36), rand(3, seed=37) + 2.0, rand(3, seed=38)] if affine else [None] * 4
    weight = tf.constant(0.6)
    padding = "SAME" if stride == 1 else "VALID"
    x_in = x if stride == 1 else tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])
    sources = [t for t in [x_in, dw1, pw1, dw2, pw2, weight, *gb] if t is not None]
    probe = rand(4, 4 if stride == 2 else 7, 4 if stride == 2 else 7, 3, seed=39)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(sources)
            loss = tf.reduce_sum(fn() * probe)
        return loss, tape.gradient(loss, sources)

    with tracing.options(recompute=recompute):
        steps = [chains.ConvBNStep(pw1, dw1, stride, padding, scale=gb[0], offset=gb[1]),
                 chains.ConvBNStep(pw2, dw2, scale=gb[2], offset=gb[3])]
        got, got_g = grads(lambda: chains.chain(x_in, steps, weight=weight))
    want, want_g = grads(lambda: reference_block(tf.nn.relu(reference_block(x_in, pw1, gb[0], gb[1], dw1, stride,
                                                                            padding)),
                                                 pw2, gb[2], gb[3], dw2, weight=weight))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)
    for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("pad", [0, 1])
def test_chain_with_a_relu_source_differentiates_through_the_relu(pad, recompute):
    """source=(h, pad): x = pad(relu(h)); the gradient reaches h (and only h is kept with recompute)."""
    h = rand(4, 6, 6, 3, seed=40)
    dw, pw = rand(3, 3, 3, 1, seed=41), rand(3, 3, seed=42)
    stride, padding = (1, "SAME") if pad == 0 else (2, "VALID")
    probe = rand(4, 6 // stride, 6 // stride, 3, seed=43)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([h, dw, pw])
            loss = tf.reduce_sum(fn() * probe)
        return tape.gradient(loss, [h, dw, pw])

    x = tf.pad(tf.nn.relu(h), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    with tracing.options(recompute=recompute):
        got = grads(lambda: chains.chain(x, [chains.ConvBNStep(pw, dw, stride, padding)], source=(h, pad)))
    want = grads(lambda: reference_block(tf.pad(tf.nn.relu(h), [[0, 0], [pad, pad], [pad, pad], [0, 0]]), pw, None,
                                         None, dw, stride, padding))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=2e-4)


def test_block_statistics_are_batch_mean_and_unbiased_variance():
    x, pw = rand(2, 3, 3, 2, seed=8), rand(2, 3, seed=9)
    _, mean, var = chains.block(x, pw, statistics=True)
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
            with tracing.options(weight_gradients=weight_gradients):
                y = chains.block(x, pw, depthwise_kernel=dw, weight=weight)
            loss = tf.reduce_sum(y * probe)
        return tape.gradient(loss, [x, weight, dw, pw])

    full, partial = grads(True), grads(False)
    assert partial[2] is None and partial[3] is None  # not even in the graph
    for a, b in zip(full[:2], partial[:2]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_options_are_scoped():
    with tracing.options(recompute=True, weight_gradients=False):
        assert tracing.option("recompute", False) and not tracing.option("weight_gradients", True)
        with tracing.options(recompute=False):
            assert not tracing.option("recompute", True)
        assert tracing.option("recompute", False)
    assert not tracing.option("recompute", False) and tracing.option("weight_gradients", True)


@pytest.mark.parametrize("size", [6, 7])
def test_fast_depthwise_filter_gradient_equals_native_and_has_a_second_derivative(size):
    x, kernel = rand(3, size, size, 4, seed=14), rand(5, 5, 4, 1, seed=15)
    probe = rand(3, size, size, 4, seed=16)
    results = []
    for fn in (convolutions.depthwise, lambda a, k: tf.nn.depthwise_conv2d(a, k, [1, 1, 1, 1], "SAME")):
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
    np.testing.assert_array_equal(convolutions.from_polyphase(convolutions.to_polyphase(x)).numpy(), x.numpy())
    kernel = rand(3, 3, 3, 1, seed=18)
    via_polyphase = convolutions.from_polyphase(convolutions.depthwise_same(convolutions.to_polyphase(x), kernel))
    dilated = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[2, 2])
    np.testing.assert_allclose(via_polyphase.numpy(), dilated.numpy(), rtol=1e-5, atol=1e-5)
    assert not convolutions.polyphase_ok((2, 7, 8, 3)) and convolutions.polyphase_ok((2, 8, 8, 3))


@pytest.mark.parametrize("direction", ["to", "from"])
def test_polyphase_gradients_are_the_inverse_rearrangement(direction):
    x, probe = rand(2, 8, 6, 3, seed=30), rand(2, 8, 6, 3, seed=31)
    if direction == "from":  # a polyphase tensor: 4 sub-grids of 2 images
        x, probe = convolutions.to_polyphase(x), convolutions.to_polyphase(probe)
    if direction == "to":
        taped, plain = convolutions.to_polyphase, convolutions._to_polyphase
    else:
        taped, plain = convolutions.from_polyphase, convolutions._from_polyphase
    grads = []
    for fn in (taped, plain):  # the hand-written gradient against autodiff of the reshapes and transpose
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * tf.reshape(probe, fn(x).shape))
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


def test_block_gradients_do_not_need_the_weight_watched():
    x, pw, probe = rand(2, 5, 5, 3, seed=32), rand(3, 4, seed=33), rand(2, 5, 5, 4, seed=34)
    weight = tf.constant(0.7)

    def grads(watch_weight):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([x, pw] + ([weight] if watch_weight else []))
            loss = tf.reduce_sum(chains.block(x, pw, weight=weight) * probe)
        return tape.gradient(loss, [x, pw])

    for a, b in zip(grads(True), grads(False)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_graph_constants_live_and_die_with_their_graph():
    import gc
    import weakref

    graph = tf.Graph()
    with graph.as_default():
        first, second = tracing.constant([1, 2]), tracing.constant([1, 2])
    assert first is second and tracing.constant([1, 2]) is not first  # one per graph (eager here: a new tensor)
    ref = weakref.ref(graph)
    del graph, first, second
    gc.collect()
    assert ref() is None  # the cache is the graph's own: no module-level map keeps the graph alive


def test_subsample_is_the_even_sub_grid():
    x = rand(2, 7, 7, 3, seed=19)
    np.testing.assert_array_equal(convolutions.subsample(x).numpy(), x.numpy()[:, ::2, ::2, :])


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [6, 7])
def test_shared_ops_gradients_equal_autodiff(size, stride, bn, recompute):
    """Σ_o w[e][o]·o(h) per edge, for the pools (+ BN) and skip: values and gradients w.r.t. h and every w."""
    from hdas_tf.nn import ops

    h = rand(4, size, size, 3, seed=50) - 0.5
    names = ["max_pool_3x3", "avg_pool_3x3"] + (["skip_connect"] if stride == 1 else [])
    weights = [[tf.constant(0.1 * (e + 1) + 0.3 * o) for o in range(len(names))] for e in range(3)]
    flat = [w for row in weights for w in row]
    probes = [rand(4, (size - 1) // stride + 1, (size - 1) // stride + 1, 3, seed=51 + e) for e in range(3)]

    def reference():
        maps = []
        for name in names:
            if name == "skip_connect":
                maps.append(h)
            else:  # the op layers' forward (checked against numpy in test_ops) under TF's autodiff
                maps.append(ops.Pool(name[:3], stride, bn=bn, affine=False, running_stats=False)(h, training=True))
        return [tf.add_n([w * t for w, t in zip(row, maps)]) for row in weights]

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([h] + flat)
            outs = fn()
            loss = tf.add_n([tf.reduce_sum(o * p) for o, p in zip(outs, probes)])
        return loss, tape.gradient(loss, [h] + flat)

    with tracing.options(recompute=recompute):
        got, got_g = grads(lambda: parameter_free.shared_ops(h, names, weights, stride, bn))
    want, want_g = grads(reference)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)
    for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=2e-4)


def test_shared_ops_take_only_parameter_free_ops():
    h, w = rand(1, 4, 4, 2, seed=3), [[tf.constant(1.0)]]
    with pytest.raises(ValueError, match=re.escape("shared_ops: only pooling and skip_connect are shared, received "
                                                   "['sep_conv_3x3']")):
        parameter_free.shared_ops(h, ["sep_conv_3x3"], w)
    with pytest.raises(ValueError, match=re.escape("unknown op 'max_pool_5x5'; known ops: max_pool_3x3, ")):
        parameter_free.shared_ops(h, ["max_pool_5x5"], w)
    with pytest.raises(ValueError, match="a strided skip_connect has weights"):
        parameter_free.shared_ops(h, ["skip_connect"], w, stride=2)

"""The bi-level search step: architecture gradient at the current weights, one device = two replicas,
coupled weight decay and clipping semantics, and the second-order gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn.supernets import ChainSupernet
from hdas_tf.run.optimizers import FlatSGD
from hdas_tf.run.schedules import CosineEpochSchedule
from hdas_tf.search.model import ArchitectureSearchModel
from hdas_tf.space.search_space import SearchSpace
from hdas_tf.run.strategy import make_strategy

SPACE = SearchSpace(layers=3, init_channels=2, num_classes=4,
                    cell_ops=("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none"))
IMAGE = (8, 8, 3)


def _model(unrolled=False, seed=0, grad_clip=5.0, space=None):
    space = space or SPACE
    keras.utils.set_random_seed(seed)
    model = ArchitectureSearchModel(ChainSupernet(space), space.arch_shapes(), unrolled=unrolled, grad_clip=grad_clip,
                                    seed=seed)
    w_opt = FlatSGD(CosineEpochSchedule(0.05, 0.001, 4, 10), momentum=0.9)
    a_opt = keras.optimizers.Adam(3e-3, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
    model.build_all(IMAGE, w_opt, a_opt)
    return model


def _copy_variables(src, dst):
    assert len(src.variables) == len(dst.variables)
    for a, b in zip(src.variables, dst.variables):
        assert a.path.split("/", 1)[-1] == b.path.split("/", 1)[-1]
        b.assign(a.numpy())


def test_variable_partition_and_optimizer_slots():
    model = _model()
    arch_ids = {id(v) for v in model.arch_variables}
    assert [v.path.split("/")[-1] for v in model.arch_variables] == ["alpha_normal", "alpha_reduce"]
    assert not any(id(v) in arch_ids for v in model.weight_variables)
    assert len(model.weight_variables) + 2 == len(model.trainable_variables)
    # FlatSGD keeps one momentum buffer for every weight and none for α (a lazily built optimizer would grow one for
    # α: BUILD_NOTES "Keras 3 specifics"), plus its step counter (the schedule needs no learning-rate variable);
    # Adam: iteration, lr, 2 slots per α.
    assert len(model.w_optimizer.variables) == 2
    assert model.w_optimizer.buffer.shape == (sum(int(np.prod(v.shape)) for v in model.weight_variables),)
    assert len(model.a_optimizer.variables) == 2 + 2 * 2


def test_every_kernel_gets_its_own_initial_values():
    """A shared Keras initializer instance has one fixed seed: kernels of one shape would start equal."""
    model = _model()
    by_shape = {}
    for v in model.weight_variables:
        value = v.numpy()
        if "kernel" in v.path:
            by_shape.setdefault(tuple(v.shape), []).append(value.ravel())
        elif v.path.split("/")[-1].startswith(("sep_conv", "dil_conv", "skip_connect")):
            # A search cell stacks one op kind's kernels of all its edges (and blocks) in one variable.
            per_edge = value.reshape(-1, *value.shape[-4:]) if "depthwise" in v.path else value.reshape(
                -1, *value.shape[-2:])
            by_shape.setdefault((v.path.split("/")[-1], tuple(v.shape)), []).extend(k.ravel() for k in per_edge)
    pairs = [(a, b) for vs in by_shape.values() for a, b in zip(vs, vs[1:])]
    assert len(pairs) > 50
    assert all(not np.allclose(a, b) for a, b in pairs)
    # Bound of PyTorch's default init: U(±1/√fan_in).
    stem = next(v for v in model.weight_variables if "stem_conv" in v.path).numpy()
    assert np.abs(stem).max() <= 1 / np.sqrt(3 * 3 * 3) and np.abs(stem).max() > 0.5 / np.sqrt(27)


def test_arch_gradient_is_taken_at_the_current_weights(search_batch):
    model = _model()
    _, (xv, yv) = search_batch()
    g_before = [g.numpy() for g in model.arch_gradients(xv, yv)[0]]
    # Change the weights (as a weight step would): the architecture gradient must change with them.
    # A network frozen at start-up (the official H-DAS code) would return g_before again.
    for v in model.weight_variables:
        v.assign(v.numpy() * 1.5 + 0.01)
    g_after = [g.numpy() for g in model.arch_gradients(xv, yv)[0]]
    assert max(np.abs(a - b).max() for a, b in zip(g_before, g_after)) > 1e-4
    # ... and it equals a fresh computation at those weights (no stale state anywhere).
    g_again = [g.numpy() for g in model.arch_gradients(xv, yv)[0]]
    for a, b in zip(g_after, g_again):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_train_step_arch_update_uses_gradient_at_current_weights(search_batch):
    """The α update of one step equals Adam's first step on ∇_A L_val computed at the weights before it."""
    model = _model()
    batch = search_batch()
    a0 = [v.numpy() for v in model.arch_variables]
    g = [gi.numpy() + 1e-3 * a for gi, a in zip(model.arch_gradients(*batch[1])[0], a0)]  # + coupled L2
    tf.function(model.train_step)(batch)
    for a_before, gi, v in zip(a0, g, model.arch_variables):
        # Keras Adam's first step: lr·g/(|g| + ε/√(1−β2)) — Keras adds ε before the bias correction of
        # v, PyTorch after it (BUILD_NOTES "Optimiser parity"); the difference only shows for |g| ≲ 1e-6.
        expected = a_before - 3e-3 * gi / (np.abs(gi) + 1e-8 / np.sqrt(1 - 0.999))
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_weight_step_is_sgd_with_coupled_decay_after_clipping(search_batch):
    model = _model(grad_clip=0.01)  # a clip that binds
    batch = search_batch()
    (xt, yt), _ = batch
    step = tf.function(model.train_step)
    w0 = [v.numpy() for v in model.weight_variables]
    # Run the architecture half by hand to know the α the weight step sees: do the whole step, then
    # recompute the weight gradient at the old weights with the new α.
    step(batch)
    w1 = [v.numpy() for v in model.weight_variables]
    new_weights = [v.numpy() for v in model.weight_variables]
    for v, w in zip(model.weight_variables, w0):
        v.assign(w)
    with tf.GradientTape() as tape:
        logits = model(xt, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yt, logits, from_logits=True))
    g = tape.gradient(loss, [v.value for v in model.weight_variables])
    g, _ = tf.clip_by_global_norm(g, 0.01)
    lr = 0.05  # epoch 0 of the cosine schedule
    for w, gi, got in zip(w0, g, w1):
        # torch.optim.SGD from an empty momentum buffer: w -= lr·(g + wd·w) on the first step.
        np.testing.assert_allclose(got, w - lr * (gi.numpy() + 3e-4 * w), rtol=1e-4, atol=1e-6)
    assert new_weights  # the step changed something measurable
    assert max(np.abs(a - b).max() for a, b in zip(w0, w1)) > 1e-5


def test_flat_sgd_is_torch_sgd_with_momentum_decay_and_clipping():
    """Three steps with a rate that changes between them (where Keras' SGD, which folds the rate into its
    momentum slot, would differ): d = clip(g) + λw; v = μv + d; w -= lr·v."""
    a = tf.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], np.float32))
    b = tf.Variable(np.array([0.25, -1.0, 2.0], np.float32))
    rates = [0.1, 0.05, 0.02]
    opt = FlatSGD(lambda step: tf.gather(tf.constant(rates), step), momentum=0.9)
    opt.build([a, b])
    grads = [[np.array([[0.3, -0.1], [0.2, 0.4]], np.float32), np.array([1.0, 0.5, -2.0], np.float32)],
             [np.array([[-0.2, 0.1], [0.0, 0.3]], np.float32), np.array([0.1, 0.2, 0.3], np.float32)],
             [np.array([[0.05, 0.05], [0.1, -0.1]], np.float32), np.array([-0.4, 0.0, 0.4], np.float32)]]
    w = [a.numpy().astype(np.float64), b.numpy().astype(np.float64)]
    v = [np.zeros_like(w[0]), np.zeros_like(w[1])]
    for step, g in enumerate(grads):
        assert float(opt.learning_rate) == pytest.approx(rates[step])
        opt.apply([tf.constant(x) for x in g], [a, b], grad_clip=1.0, weight_decay=0.1)
        norm = np.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in g))
        scale = min(1.0, 1.0 / norm)
        for i in range(2):
            d = g[i] * scale + 0.1 * w[i]
            v[i] = 0.9 * v[i] + d
            w[i] = w[i] - rates[step] * v[i]
        np.testing.assert_allclose(a.numpy(), w[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.numpy(), w[1], rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 3
    with pytest.raises(ValueError, match="built for"):
        opt.apply([tf.zeros((3,))], [b])


# Tracing a search step on two replicas takes minutes here (every synchronized BN is a cross-replica
# reduction at trace time): run with --run-slow. ops' BN parity test covers the replica path by default.
@pytest.mark.slow
@pytest.mark.parametrize("unrolled", [False, True])
def test_one_device_equals_two_replicas(unrolled, search_batch):
    batch = search_batch(8)
    single = _model(unrolled)
    strategy = make_strategy("mirrored")  # one per process (collective keys), over conftest's two logical CPUs
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = _model(unrolled)
    _copy_variables(single, mirrored)

    tf.function(single.train_step)(batch)
    dataset = tf.data.Dataset.from_tensors(batch)
    dist_batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def mirrored_step(b):
        out = strategy.run(mirrored.train_step, args=(b,))
        return {k: strategy.reduce("SUM", v, axis=None) for k, v in out.items()}

    out = mirrored_step(dist_batch)
    assert np.isfinite(float(out["loss_w"]))
    for a, b in zip(single.trainable_variables, mirrored.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    # The step changed α at all (the comparison above is not vacuous).
    assert max(np.abs(v.numpy()).max() for v in single.arch_variables) > 1e-3


class SmoothSupernet(keras.layers.Layer):
    """A tiny smooth supernet: logits = Σ_o softmax(α)_o · tanh(x W_o) V.

    The DARTS supernet is full of ReLU kinks and batch statistics over a few values: on a tiny one, central
    differences of the gradient do not converge (measured), which would test the kinks, not the formula.
    ``ArchitectureSearchModel`` takes any supernet, so the second-order formula is checked on a smooth one.
    """

    def __init__(self, ops=3, hidden=5, classes=4, **kwargs):
        super().__init__(**kwargs)
        self.n_ops, self.hidden, self.classes = ops, hidden, classes

    def build(self, images_shape, arch_shape=None):
        d = int(np.prod(images_shape[1:]))
        self.w = self.add_weight(shape=(self.n_ops, d, self.hidden), initializer="glorot_uniform", name="w")
        self.v = self.add_weight(shape=(self.hidden, self.classes), initializer="glorot_uniform", name="v")

    def call(self, images, arch, training=None):
        x = tf.reshape(images, [tf.shape(images)[0], -1])
        p = tf.nn.softmax(arch["alpha"])
        h = tf.add_n([p[o] * tf.tanh(x @ self.w[o]) for o in range(self.n_ops)])
        return h @ self.v


def test_second_order_gradient_matches_exact_unrolled_derivative(search_batch):
    """DARTS Eq. 7–8: the finite-difference arch gradient ≈ d/dA L_val(w − ξ∇_w L_train(w, A), A), exactly
    differentiated here with nested tapes (a Hessian-vector product)."""
    keras.utils.set_random_seed(3)
    model = ArchitectureSearchModel(SmoothSupernet(), {"alpha": (3,)}, unrolled=True, seed=3)
    model.build_all(IMAGE, keras.optimizers.SGD(0.5, momentum=0.9), keras.optimizers.Adam(3e-3))
    model.arch_variables[0].assign([0.3, -0.2, 0.1])
    (xt, yt), (xv, yv) = search_batch(16)
    xi = float(model.w_optimizer.learning_rate)
    got, _, _ = model._unrolled_arch_grads(xt, yt, xv, yv)

    tv = list(model.trainable_variables)
    arch_ids = {id(v) for v in model.arch_variables}
    is_arch = [id(v) in arch_ids for v in tv]
    values = [tf.convert_to_tensor(v.value) for v in tv]

    def loss(vals, x, y):
        logits, _ = model.stateless_call(vals, [], x, training=True)
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    with tf.GradientTape() as outer:
        outer.watch(values)
        with tf.GradientTape() as inner:
            inner.watch(values)
            l_train = loss(values, xt, yt)
        g = inner.gradient(l_train, values)
        unrolled = [v if a else v - xi * gi for v, gi, a in zip(values, g, is_arch)]
        l_val = loss(unrolled, xv, yv)
    exact = [e for e, a in zip(outer.gradient(l_val, values), is_arch) if a][0].numpy()
    np.testing.assert_allclose(got[0].numpy(), exact, rtol=2e-3, atol=1e-6)
    # The second-order term is a sizeable part of it, so the check above is about that term too.
    first = model.arch_gradients(xv, yv)[0][0].numpy()
    assert np.abs(first - exact).max() > 0.05 * np.abs(exact).max()


def test_second_order_gradient_of_a_conv_supernet_equals_the_formula_with_every_gradient(search_batch):
    """On the DARTS supernet (conv blocks with hand-written backward passes), the step takes ∇_A alone in the
    w± passes (filter gradients left out) and ∇_w alone in the first: the same Eq. 7–8 gradient as every
    gradient of every pass by plain autodiff."""
    model = _model(unrolled=True)
    rng = np.random.default_rng(4)
    for v in model.arch_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    (xt, yt), (xv, yv) = search_batch(8)
    got = [g.numpy() for g in model._unrolled_arch_grads(xt, yt, xv, yv)[0]]

    tv = list(model.trainable_variables)
    arch_ids = {id(v) for v in model.arch_variables}
    is_arch = [id(v) in arch_ids for v in tv]
    ntv = [v.value for v in model.non_trainable_variables]
    xi = float(model.w_optimizer.learning_rate)

    def grads(vals, x, y):
        with tf.GradientTape() as tape:
            tape.watch(vals)
            logits, _ = model.stateless_call(vals, ntv, x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return tape.gradient(loss, vals, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    w0 = [tf.convert_to_tensor(v.value) for v in tv]
    g_train = grads(w0, xt, yt)
    w_prime = [w if a else w - xi * g for w, g, a in zip(w0, g_train, is_arch)]
    g_val = grads(w_prime, xv, yv)
    d_w = [g for g, a in zip(g_val, is_arch) if not a]
    eps = 0.01 / float(tf.linalg.global_norm(d_w))

    def at(sign):
        it = iter(d_w)
        return grads([w if a else w + sign * eps * next(it) for w, a in zip(w0, is_arch)], xt, yt)

    plus, minus = at(1.0), at(-1.0)
    expected = {id(v): (gv - xi * (p - m) / (2 * eps)).numpy()
                for v, gv, p, m, a in zip(tv, g_val, plus, minus, is_arch) if a}
    first = {id(v): gv.numpy() for v, gv, a in zip(tv, g_val, is_arch) if a}
    for v, g in zip(model.arch_variables, got):
        np.testing.assert_allclose(g, expected[id(v)], rtol=1e-4, atol=1e-6, err_msg=v.path)
    # The second-order term is not negligible here, so the comparison covers the w± passes.
    second = max(np.abs(expected[k] - first[k]).max() for k in expected)
    assert second > 1e-3 * max(np.abs(e).max() for e in expected.values())

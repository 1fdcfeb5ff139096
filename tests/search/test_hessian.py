"""hdas_tf.search.hessian: Hessian-vector products and the dominant eigenvalue by power iteration, against
Hessians known in closed form, and on a tiny search model against its Hessian assembled column by column."""

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.search import hessian as H


def _quadratic(a):
    """f(x) = ½ xᵀAx over x split into a [2, 2] and a [2] tensor (6 parameters in all): its Hessian is A."""
    a = tf.constant(a, tf.float64)

    def loss(params):
        x = tf.concat([tf.reshape(p, [-1]) for p in params], axis=0)
        return 0.5 * tf.tensordot(x, tf.linalg.matvec(a, x), 1)

    return loss


def _split(x):
    return [tf.constant(x[:4].reshape(2, 2)), tf.constant(x[4:])]


def _known_matrix(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T


def test_hessian_vector_product_of_a_quadratic_is_a_times_v():
    a = _known_matrix([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    rng = np.random.default_rng(1)
    x, v = rng.normal(size=6), rng.normal(size=6)
    hv = H.hessian_vector_product(_quadratic(a), _split(x), _split(v))
    np.testing.assert_allclose(np.concatenate([t.numpy().ravel() for t in hv]), a @ v, rtol=1e-10)


def test_hessian_vector_product_of_a_cubic():
    """f(x) = Σ x³/3: H = diag(2x), so Hv = 2·x·v elementwise."""
    x, v = tf.constant([1.0, -2.0, 0.5], tf.float64), tf.constant([3.0, 1.0, -4.0], tf.float64)
    (hv,) = H.hessian_vector_product(lambda p: tf.reduce_sum(p[0] ** 3) / 3.0, [x], [v])
    np.testing.assert_allclose(hv.numpy(), [6.0, -4.0, -4.0])


def test_dominant_eigenvalue_equals_numpy_eigvalsh():
    a = _known_matrix([5.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=3)
    x0 = _split(np.zeros(6))
    hvp = lambda v: H.hessian_vector_product(_quadratic(a), x0, v)  # noqa: E731
    value = H.dominant_eigenvalue(hvp, [(2, 2), (2,)], iterations=60, dtype=tf.float64)
    assert value == pytest.approx(np.linalg.eigvalsh(a)[-1], rel=1e-8)
    assert value == pytest.approx(5.0, rel=1e-8)


def test_dominant_eigenvalue_is_the_largest_in_magnitude():
    a = _known_matrix([-4.0, 1.0, 2.0, 0.5, 0.1, 0.0], seed=4)
    hvp = lambda v: H.hessian_vector_product(_quadratic(a), _split(np.ones(6)), v)  # noqa: E731
    assert H.dominant_eigenvalue(hvp, [(2, 2), (2,)], iterations=80, dtype=tf.float64) == pytest.approx(-4.0, rel=1e-6)
    with pytest.raises(ValueError, match="iterations"):
        H.dominant_eigenvalue(hvp, [(2, 2), (2,)], iterations=0)


def test_finite_difference_hvp_matches_double_backward_on_a_smooth_function():
    """On f(x) = Σ sin(x)·x²: the central difference of the exact gradient agrees with the exact Hv."""
    loss = lambda p: tf.reduce_sum(tf.sin(p[0]) * p[0] ** 2)  # noqa: E731
    x = [tf.constant([0.3, -1.2, 2.0, 0.7], tf.float64)]
    v = [tf.constant([0.5, 0.5, -0.5, 0.5], tf.float64)]

    def grad_fn(params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            value = loss(params)
        return tape.gradient(value, params)

    exact = H.hessian_vector_product(loss, x, v)[0].numpy()
    np.testing.assert_allclose(H.finite_difference_hvp(grad_fn, x, v, epsilon=1e-4)[0].numpy(), exact, rtol=1e-6)


def test_arch_hessian_on_a_tiny_search_model():
    """On a tiny supernet (32 α scalars): the loss differentiated is the search's validation loss (its gradient
    equals the architecture step's), the eigenvalue is finite, and no variable of the model changes (BN
    statistics included). Not checked against an exact Hessian: the supernet has no second-order gradients
    (BUILD_NOTES "TensorBoard and inspection"), and its central differences cross ReLU kinks at some points."""
    import keras

    from hdas_tf.nn.supernets import ChainSupernet
    from hdas_tf.run.optimizers import FlatSGD
    from hdas_tf.search.model import ArchitectureSearchModel
    from hdas_tf.space.search_space import SearchSpace

    space = SearchSpace(steps=1, layers=3, init_channels=2, num_classes=3)
    model = ArchitectureSearchModel(ChainSupernet(space), space.arch_shapes(), seed=0)
    model.build_all((8, 8, 3), FlatSGD(0.1), keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    for v in model.arch_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape))
    x = tf.constant(rng.normal(size=(6, 8, 8, 3)), tf.float32)
    y = tf.constant([0, 1, 2, 1, 0, 2])
    before = [v.numpy().copy() for v in model.variables]
    value = H.arch_hessian_eigenvalue(model, x, y, iterations=5)
    assert np.isfinite(value)
    for b, v in zip(before, model.variables):
        np.testing.assert_array_equal(b, v.numpy())

    loss_fn, arch = H.arch_loss_fn(model, x, y)

    @tf.function
    def grad_fn(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_fn(values)
        return tape.gradient(loss, values)

    step_grads = model.arch_gradients(x, y)[0]
    for g, s in zip(grad_fn(arch), step_grads):
        np.testing.assert_allclose(g.numpy(), s.numpy(), rtol=1e-4, atol=1e-6)


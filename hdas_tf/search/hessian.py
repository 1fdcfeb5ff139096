"""The dominant eigenvalue of the architecture Hessian ∇²_A L_val (Zela et al., "Understanding and Robustifying
Differentiable Architecture Search", ICLR 2020: its growth precedes DARTS's collapse to skip connections).

Power iteration on Hessian-vector products: v ← Hv / ‖Hv‖, λ = vᵀHv (the Rayleigh quotient of the unit v), for
a fixed number of iterations from a seeded random start; it converges to the eigenvalue of largest magnitude.

Two Hessian-vector products: ``hessian_vector_product`` differentiates twice with ``tf.GradientTape`` (exact for
functions of plain TensorFlow ops). The search model uses ``finite_difference_hvp``, the central difference of
its exact first-order α-gradient, because its conv chains and shared parameter-free ops record one hand-written
backward function each, with activations saved off the tape (BUILD_NOTES "Conv → BN chains and
recomputation"): a second differentiation through them would silently miss terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

# Step of the central difference along a unit vector. The supernet's loss is smooth only piecewise in A (ReLU,
# max-pool): steps of 1e-2 and more cross kinks and give a non-symmetric, step-dependent "Hessian"; at 1e-4..3e-4
# the central difference is symmetric and stable, and float32 rounding (~1e-7·‖g‖/ε) stays far below it.
FD_EPSILON = 3e-4


def hessian_vector_product(loss_fn: Callable, params: Sequence[tf.Tensor], vector: Sequence[tf.Tensor]) -> list:
    """Hv of ``loss_fn(params)`` at ``params`` (a list of tensors) for ``vector`` (same shapes), by double
    backward: Hv = ∇(∇L · v) with v held constant. Parameters the loss does not reach get zeros."""
    params = [tf.convert_to_tensor(p) for p in params]
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(params)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(params)
            loss = loss_fn(params)
        grads = inner.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        dot = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(tf.cast(v, g.dtype))) for g, v in zip(grads, vector)])
    return outer.gradient(dot, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def finite_difference_hvp(grad_fn: Callable, params: Sequence[tf.Tensor], vector: Sequence[tf.Tensor],
                          epsilon: float = FD_EPSILON) -> list:
    """Hv ≈ [∇L(p + εv) − ∇L(p − εv)] / 2ε from ``grad_fn(params) -> gradients``; ``vector`` of unit norm."""
    plus = grad_fn([p + epsilon * tf.cast(v, p.dtype) for p, v in zip(params, vector)])
    minus = grad_fn([p - epsilon * tf.cast(v, p.dtype) for p, v in zip(params, vector)])
    return [(a - b) / (2.0 * epsilon) for a, b in zip(plus, minus)]


def dominant_eigenvalue(hvp: Callable, shapes: Sequence[tuple], iterations: int = 20, seed: int = 0,
                        dtype=tf.float32) -> float:
    """The eigenvalue of largest magnitude of the symmetric operator ``hvp`` (list of tensors of ``shapes`` →
    list of tensors) by ``iterations`` steps of power iteration from a seeded random unit vector.

    Returns the Rayleigh quotient vᵀHv of the last unit iterate (0.0 when Hv vanishes).
    """
    if iterations < 1:
        raise ValueError(f"dominant_eigenvalue: iterations must be >= 1, received {iterations}")
    rng = np.random.default_rng(seed)
    v = [tf.constant(rng.normal(size=s), dtype) for s in shapes]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(t * t) for t in v]))
        if float(norm) == 0.0:
            return 0.0
        v = [t / norm for t in v]
        hv = [tf.cast(h, dtype) for h in hvp(v)]
        eigenvalue = float(tf.add_n([tf.reduce_sum(a * b) for a, b in zip(v, hv)]))
        v = hv
    return eigenvalue


def arch_loss_fn(model, x_val, y_val) -> tuple[Callable, list]:
    """(``fn(arch values) -> L_val``, the current arch values) of an ``ArchitectureSearchModel``: the mean
    cross-entropy on (``x_val``, ``y_val``) at the current weights, through ``stateless_call`` so that nothing
    of the model (BN statistics included) changes."""
    trainable = list(model.trainable_variables)
    non_trainable = [v.value for v in model.non_trainable_variables]
    arch_ids = {id(v) for v in model.arch_variables}
    # trainable_variables lists α/β in arch_variables order (both follow add_weight order).
    positions = [i for i, v in enumerate(trainable) if id(v) in arch_ids]
    base = [tf.convert_to_tensor(v.value) for v in trainable]

    def loss_fn(arch_values):
        values = list(base)
        for i, a in zip(positions, arch_values):
            values[i] = a
        logits, _ = model.stateless_call(values, non_trainable, x_val, training=True)
        per_example = keras.losses.sparse_categorical_crossentropy(y_val, tf.cast(logits, tf.float32),
                                                                   from_logits=True)
        return tf.reduce_mean(per_example)

    return loss_fn, [base[i] for i in positions]


def arch_hessian_eigenvalue(model, x_val, y_val, iterations: int = 20, seed: int = 0) -> float:
    """The dominant eigenvalue of ∇²_A L_val(w, A) of an ``ArchitectureSearchModel`` on the batch
    (``x_val``, ``y_val``) at its current weights w and architecture A (α and β together).

    Runs outside any replica context; nothing of the model changes.
    """
    loss_fn, arch = arch_loss_fn(model, x_val, y_val)

    @tf.function(reduce_retracing=True)
    def grad_fn(values):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(values)
            loss = loss_fn(values)
        return tape.gradient(loss, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    hvp = lambda v: finite_difference_hvp(grad_fn, arch, v)  # noqa: E731
    return dominant_eigenvalue(hvp, [tuple(a.shape) for a in arch], iterations, seed)

"""The weight optimizer: PyTorch's SGD (momentum, coupled L2) for all weights at once, on one flat vector.

Why not ``keras.optimizers.SGD``: it updates variable by variable, a dozen graph nodes each, and a supernet
with fixed cells has ~1,000 weight variables, so the update alone was ~13,000 nodes of a step graph that
costs ~0.5 ms per node to build (BUILD_NOTES "Optimiser parity"). Here the gradients are concatenated once, all-reduced
once, clipped, decayed and pushed through the momentum buffer as one vector, then split back; per variable
only a reshape and an assignment remain. It also follows ``torch.optim.SGD`` exactly (Keras folds the
learning rate into the momentum buffer, v = m·v − lr·g, which differs whenever the rate changes):

    d = clip(g) + λ·w;   v = μ·v + d;   w = w − lr·v        (v = 0 before the first step, so v₁ = d₁)

with clip = global-norm clipping of the *aggregated* gradient (``tf.clip_by_global_norm``), as DARTS calls
``clip_grad_norm_`` before ``optimizer.step``.

Under ``--mixed_precision=fp16`` it carries a ``DynamicLossScale`` (BUILD_NOTES "Mixed precision and XLA"):
the step's loss is multiplied by the scale, the aggregated gradient divided by it, and a step whose gradient
is not finite changes no weight, momentum or step count — Keras' ``LossScaleOptimizer`` rule, applied to the
one flat vector without a branch.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


class DynamicLossScale(tf.Module):
    """The dynamic loss scale of float16 training (Keras ``LossScaleOptimizer`` semantics): starts at
    ``initial``; halved after a step with a non-finite gradient (that step is skipped), doubled after
    ``growth_steps`` finite steps in a row. ``build()`` inside the strategy scope creates its variables."""

    def __init__(self, initial: float = 2.0 ** 15, growth_steps: int = 2000, name: str = "loss_scale"):
        super().__init__(name=name)
        self.initial, self.growth_steps = float(initial), int(growth_steps)
        self.scale = self.good_steps = None

    def build(self):
        self.scale = tf.Variable(self.initial, dtype=tf.float32, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def update(self, strategy, finite) -> None:
        """After a step, in a cross-replica context (a merge_call); ``finite`` is the same on every replica."""

        def new_scale(var, f):  # reads good_steps before new_good writes it (program order in the graph)
            grow = tf.logical_and(f, self.good_steps.read_value() + 1 >= self.growth_steps)
            factor = tf.where(f, tf.where(grow, 2.0, 1.0), 0.5)
            return var.assign(tf.maximum(var * factor, 1.0))

        def new_good(var, f):
            after = var + 1
            return var.assign(tf.where(tf.logical_and(f, after < self.growth_steps), after, tf.zeros_like(after)))

        strategy.extended.update(self.scale, new_scale, args=(finite,), group=False)
        strategy.extended.update(self.good_steps, new_good, args=(finite,), group=False)


class FlatSGD(tf.Module):
    """SGD with momentum and coupled weight decay over a fixed list of variables, updated as one vector.

    Args:
      learning_rate: float, or a ``keras.optimizers.schedules.LearningRateSchedule`` (any function of the step
        count).
      momentum: float. μ. Defaults to 0.9.
      loss_scale: optional ``DynamicLossScale`` (float16 training): the caller multiplies its loss by
        ``loss_scale.scale``; ``apply`` divides the aggregated gradient by it and skips non-finite steps.

    ``build(variables)`` must be called inside the strategy scope (it creates the momentum buffer and the
    step counter); ``apply(grads, variables, grad_clip, weight_decay)`` runs per replica with each replica's
    share of the global-batch gradient and applies the same update everywhere.
    """

    def __init__(self, learning_rate, momentum: float = 0.9, loss_scale: DynamicLossScale | None = None,
                 name: str = "flat_sgd"):
        super().__init__(name=name)
        if momentum < 0:
            raise ValueError(f"FlatSGD: momentum must be >= 0, received {momentum}")
        self._schedule = learning_rate
        self.momentum = float(momentum)
        self.loss_scale = loss_scale  # an attribute of a tf.Module: checkpointed with the optimizer
        self.iterations = None
        self.buffer = None
        self._variables = None

    def build(self, variables):
        self._variables = list(variables)
        self._shapes = [tuple(v.shape) for v in self._variables]
        self._sizes = [math.prod(s) for s in self._shapes]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.buffer = tf.Variable(tf.zeros((sum(self._sizes),), tf.float32), trainable=False, name="momentum_buffer")
        if self.loss_scale is not None:
            self.loss_scale.build()

    @property
    def variables(self):
        return [self.iterations, self.buffer]

    @property
    def schedule(self):
        """The learning-rate schedule (or constant rate) as given."""
        return self._schedule if callable(self._schedule) else (lambda step: float(self._schedule))

    @property
    def learning_rate(self):
        """The rate of the next step (a float32 scalar tensor)."""
        if callable(self._schedule):  # a LearningRateSchedule or any function of the step count
            return tf.cast(self._schedule(self.iterations), tf.float32)
        return tf.constant(float(self._schedule), tf.float32)

    def apply(self, grads, variables, grad_clip: float = 0.0, weight_decay: float = 0.0):
        """One step. ``grads``: this replica's shares of the global-batch gradient (they sum over replicas to
        it), in the order of ``variables``, which must be the built list."""
        if self._variables is None:
            raise ValueError("FlatSGD: call build(variables) first (inside the strategy scope)")
        if len(variables) != len(self._variables) or any(a is not b for a, b in zip(variables, self._variables)):
            raise ValueError(f"FlatSGD: apply() got {len(variables)} variables, not the {len(self._variables)} it was "
                             "built for, in the same order")
        ctx = tf.distribute.get_replica_context()
        flat = tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], axis=0)
        if ctx is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            flat = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)  # one all-reduce for every weight
        finite = None
        if self.loss_scale is not None:  # unscale once, after the all-reduce; same verdict on every replica
            flat = flat / self.loss_scale.scale.read_value()
            finite = tf.reduce_all(tf.math.is_finite(flat))
        if grad_clip:
            flat = tf.clip_by_global_norm([flat], grad_clip)[0][0]
        if weight_decay:
            flat = flat + weight_decay * tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in variables], 0)
        buffer = self.momentum * self.buffer.read_value() + flat
        step = self.learning_rate * buffer
        if finite is not None:  # a skipped step: momentum, weights and the step count stay as they were
            buffer = tf.where(finite, buffer, self.buffer.read_value())
            step = tf.where(finite, step, tf.zeros_like(step))
        pieces = [tf.reshape(p, s) for p, s in zip(tf.split(step, self._sizes), self._shapes)]

        def assign(strategy, buffer, pieces, finite):
            # Cross-replica context: every replica computed the same values; write each copy once.
            ext = strategy.extended
            ext.update(self.buffer, lambda var, value: var.assign(value), args=(buffer,), group=False)
            for v, piece in zip(self._variables, pieces):
                ext.update(_tf_variable(v), lambda var, value: var.assign_sub(tf.cast(value, var.dtype)),
                           args=(piece,), group=False)
            if finite is None:
                ext.update(self.iterations, lambda var: var.assign_add(1), group=False)
            else:
                ext.update(self.iterations, lambda var, f: var.assign_add(tf.cast(f, tf.int64)), args=(finite,),
                           group=False)
                self.loss_scale.update(strategy, finite)

        if ctx is None:
            assign(tf.distribute.get_strategy(), buffer, pieces, finite)
        else:
            ctx.merge_call(assign, args=(buffer, pieces, finite))


def _tf_variable(v):
    """The tf.Variable behind a Keras variable (a MirroredVariable under a strategy)."""
    if isinstance(v, keras.Variable):
        value = v.value
        return value if isinstance(value, tf.Variable) else v._value  # outside an autocast scope they agree
    return v

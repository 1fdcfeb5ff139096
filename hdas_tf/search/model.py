"""The search keras.Model: architecture variables beside the supernet weights, and the bi-level train_step.

One ``train_step`` = an architecture step on a validation batch, then a weight step on a training batch
(DARTS Alg. 1; BUILD_NOTES "The bi-level step: first and second order"). It is written to run per replica inside ``strategy.run`` and gives the same
update on one device as on several (``hdas_tf.run.replicas``).

First order (default): ∇_A L_val(w, A) at the *current* weights. The official H-DAS code takes it on a
copy of the network frozen at start-up; we do not (BUILD_NOTES "The bi-level step: first and second order").

One-level (``update="one_level"``, StacNAS): one training batch, one forward and one backward pass give ∇_A
and ∇_w of the same loss; then Adam steps A and SGD steps w (BUILD_NOTES "The bi-level step: first and second
order").
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from hdas_tf.nn import tracing
from hdas_tf.run.replicas import all_reduce_sum, apply_weight_gradients, average_loss, correct_share
from hdas_tf.search.config import UPDATES


class ArchitectureSearchModel(keras.Model):
    """A supernet plus its architecture variables (α, β) and the bi-level ``train_step``.

    Args:
      supernet: a layer ``call(images, arch, training)`` taking raw architecture tensors by name.
      arch_shapes: dict name → shape of the architecture variables (``SearchSpace.arch_shapes()``).
      arch_regularizer: optional ``fn(arch: dict) -> (loss, {name: term})`` added to the architecture
        loss (the depth and complexity terms of paper Eq. 6). Defaults to none.
      unrolled: bool. Second-order architecture gradient (DARTS Eq. 7–8). Defaults to False.
      weight_decay: float. Coupled L2 on the weights. Defaults to 3e-4.
      arch_weight_decay: float. Coupled L2 on the architecture variables. Defaults to 1e-3.
      grad_clip: float. Global-norm clip of the weight gradient after aggregation; 0 disables. Defaults to 5.
      seed: int. Seed of α's initialisation 1e-3·N(0, 1).
      recompute: bool. Keep only the inputs of each conv → BN block for the backward pass and recompute the
        rest there (``hdas_tf.nn.chains``): much less activation memory for some extra forward work. Defaults to False.
      update: "bilevel" (architecture step on the validation batch, then weight step on the training batch) or
        "one_level" (both from one loss on the training batch, ``one_level_step``). Defaults to "bilevel".
    """

    def __init__(self, supernet, arch_shapes: dict, arch_regularizer: Callable | None = None, unrolled=False,
                 weight_decay=3e-4, arch_weight_decay=1e-3, grad_clip=5.0, seed=0, recompute=False,
                 update="bilevel", **kwargs):
        # Mixed precision (BUILD_NOTES "Mixed precision and XLA"): α/β and their softmaxes stay float32. This
        # model reads them without autocast, and the supernet does not cast its inputs (α would become 16-bit);
        # its layers still compute in the policy's type, and each cell casts its mixing weights to it.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        supernet.autocast = False
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, received {update!r}")
        if update == "one_level" and unrolled:
            raise ValueError("the one-level update has no second-order form: unrolled needs update='bilevel'")
        self.update = update
        self.supernet = supernet
        self.recompute = bool(recompute)
        self.arch_regularizer = arch_regularizer
        self.unrolled = bool(unrolled)
        self.weight_decay, self.arch_weight_decay, self.grad_clip = weight_decay, arch_weight_decay, grad_clip
        self.arch_names = tuple(arch_shapes)
        self._arch = []
        for i, (name, shape) in enumerate(arch_shapes.items()):
            init = keras.initializers.RandomNormal(stddev=1e-3, seed=seed + i)
            self._arch.append(self.add_weight(shape=tuple(shape), initializer=init, trainable=True, name=name))
        self.w_optimizer = None
        self.a_optimizer = None

    # === variables ===

    @property
    def arch_variables(self) -> list:
        return list(self._arch)

    @property
    def weight_variables(self) -> list:
        # Partition by identity: KerasVariable overloads == element-wise (BUILD_NOTES "Keras 3 specifics").
        arch = {id(v) for v in self._arch}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def arch_dict(self) -> dict:
        return {name: v for name, v in zip(self.arch_names, self._arch)}

    def call(self, images, training=None):
        with tracing.options(recompute=self.recompute):
            return self.supernet(images, {n: v.value for n, v in zip(self.arch_names, self._arch)}, training=training)

    def build_all(self, image_shape, w_optimizer, a_optimizer):
        """Creates every variable (a call on a dummy batch) and both optimizers' slots.

        Must run inside the strategy scope; building lazily inside ``strategy.run`` fails (BUILD_NOTES "Keras 3 specifics").
        """
        self.supernet.build((None, *image_shape))
        self.built = True
        self.w_optimizer, self.a_optimizer = w_optimizer, a_optimizer
        w_optimizer.build(self.weight_variables)
        a_optimizer.build(self.arch_variables)

    # === the step ===

    def _arch_regularization(self):
        if self.arch_regularizer is None:
            return tf.constant(0.0), {}
        return self.arch_regularizer({n: v.value for n, v in zip(self.arch_names, self._arch)})

    def train_step(self, data):
        """One search step on a zipped ((x_train, y_train), (x_val, y_val)) per-replica batch: ``arch_step``,
        then ``weight_step`` with the updated architecture.

        Returns per-replica *shares* that sum over replicas to the global value: losses and accuracies
        averaged over the global batch, and the regularizer terms divided by the replica count.
        """
        if self.update == "one_level":
            return self.one_level_step(data)
        out = self.arch_step(data)
        out.update(self.weight_step(data))
        return out

    def arch_step(self, data):
        """The architecture half of a search step: one Adam step on ∇_A (L_val + reg) (first or second order).

        Returns per-replica shares of ``loss_a``, ``acc_a``, ``arch_reg`` and the regularizer terms.
        """
        (xt, yt), (xv, yv) = data
        n = tf.distribute.get_strategy().num_replicas_in_sync
        av = self.arch_variables
        if self.unrolled:
            ga, loss_a, correct_a = self._unrolled_arch_grads(xt, yt, xv, yv)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([v.value for v in av])
                reg, terms = self._arch_regularization()
            greg = tape.gradient(reg, [v.value for v in av], unconnected_gradients=tf.UnconnectedGradients.ZERO)
            ga = [g + r / n for g, r in zip(ga, greg)]
        else:
            ga, loss_a, correct_a, reg, terms = self.arch_gradients(xv, yv)
        # Coupled L2 (PyTorch Adam weight_decay): each replica adds its 1/n share, apply_gradients sums.
        # Under float16 the gradient is loss-scaled (arch_gradients), so the decay term is scaled alike.
        scale = self.a_optimizer.dynamic_scale if _loss_scaled(self.a_optimizer) else 1.0
        ga = [g + scale * self.arch_weight_decay * v / n for g, v in zip(ga, av)]
        if _loss_scaled(self.a_optimizer) and n > 1:
            # The same finite/non-finite verdict on every replica: Keras checks one replica's gradient.
            ga = [g / n for g in all_reduce_sum(ga)]
        self.a_optimizer.apply_gradients(zip(ga, av))
        out = {"loss_a": loss_a, "acc_a": correct_a, "arch_reg": reg / n}
        out.update({k: t / n for k, t in terms.items()})
        return out

    def weight_step(self, data):
        """The weight half of a search step: one SGD step on the training batch at the current architecture.

        Returns per-replica shares of ``loss_w`` and ``acc_w``.
        """
        (xt, yt), _ = data
        wv = self.weight_variables
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            # The weights only: the tape then records nothing of the α → softmax path, and the conv blocks
            # build no ∂/∂w_o (chains.chain).
            tape.watch([v.value for v in wv])
            logits = self(xt, training=True)
            loss_w = average_loss(yt, logits)
            # float16: the optimizer's dynamic loss scale (FlatSGD divides the aggregated gradient by it).
            loss_scale = getattr(self.w_optimizer, "loss_scale", None)
            scaled = loss_w if loss_scale is None else loss_w * loss_scale.scale
        gw = tape.gradient(scaled, [v.value for v in wv], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        apply_weight_gradients(self.w_optimizer, gw, wv, self.grad_clip, self.weight_decay)
        return {"loss_w": loss_w, "acc_w": correct_share(yt, logits)}

    def one_level_step(self, data):
        """The one-level step (StacNAS): on the training batch ``data[0]`` alone (any second element, such as
        a validation batch, is ignored), one forward and one backward pass of L_train(w, A) (+ reg(A)) give
        ∇_A and ∇_w at the same (w, A); then Adam steps A (coupled L2) and SGD steps w (clip after
        aggregation, coupled L2), both from those gradients.

        Returns per-replica shares as ``train_step``; ``loss_a``/``acc_a`` are the same loss and accuracy as
        ``loss_w``/``acc_w`` (there is no separate architecture batch).
        """
        xt, yt = data[0]
        n = tf.distribute.get_strategy().num_replicas_in_sync
        wv, av = self.weight_variables, self.arch_variables
        w_values, a_values = [v.value for v in wv], [v.value for v in av]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(w_values + a_values)
            logits = self(xt, training=True)
            loss = average_loss(yt, logits)
            reg, terms = self._arch_regularization()  # depends on A alone: ∇_w of it is 0
            total = loss + reg / n
        grads = tape.gradient(total, w_values + a_values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gw, ga = grads[:len(wv)], grads[len(wv):]
        ga = [g + self.arch_weight_decay * v / n for g, v in zip(ga, av)]
        self.a_optimizer.apply_gradients(zip(ga, av))
        apply_weight_gradients(self.w_optimizer, gw, wv, self.grad_clip, self.weight_decay)
        acc = correct_share(yt, logits)
        out = {"loss_w": loss, "acc_w": acc, "loss_a": loss, "acc_a": acc, "arch_reg": reg / n}
        out.update({k: t / n for k, t in terms.items()})
        return out

    def arch_gradients(self, xv, yv):
        """First-order ∇_A [L_val(w, A) + reg(A)/n] at the *current* weights (one replica's share); multiplied
        by the loss scale when the architecture optimizer is a ``keras.optimizers.LossScaleOptimizer`` (float16).

        Returns (gradients in ``arch_variables`` order, loss share, accuracy share, reg, reg terms).
        """
        n = tf.distribute.get_strategy().num_replicas_in_sync
        av = [v.value for v in self._arch]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(av)  # α/β only: no weight-gradient kernels are needed in the backward pass,
            with tracing.options(weight_gradients=False):  # so the conv blocks do not even build them
                logits_v = self(xv, training=True)  # BN in training mode on the val batch, as the reference
            loss_a = average_loss(yv, logits_v)
            reg, terms = self._arch_regularization()
            total = loss_a + reg / n
            if _loss_scaled(self.a_optimizer):
                total = self.a_optimizer.scale_loss(total)
        grads = tape.gradient(total, av, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, loss_a, correct_share(yv, logits_v), reg, terms

    def _unrolled_arch_grads(self, xt, yt, xv, yv):
        """Second-order ∇_A (DARTS Eq. 7–8; BUILD_NOTES "The bi-level step: first and second order"), without mutating any variable.

        w' = w − ξ∇_w L_train(w, A);  g = ∇_A L_val(w', A) − ξ [∇_A L_train(w⁺, A) − ∇_A L_train(w⁻, A)] / (2ε),
        w± = w ± ε ∇_{w'} L_val(w', A), ε = 0.01 / ‖∇_{w'} L_val‖, ξ = the current weight learning rate.
        Forward passes go through ``stateless_call``, so BN statistics of these virtual passes are dropped.
        Returns global (all-reduced) gradients divided by the replica count, ready for ``apply_gradients``.
        """
        n = tf.distribute.get_strategy().num_replicas_in_sync
        tv = list(self.trainable_variables)
        ntv = [v.value for v in self.non_trainable_variables]
        arch_ids = {id(v) for v in self._arch}
        is_arch = [id(v) in arch_ids for v in tv]
        xi = tf.cast(self.w_optimizer.learning_rate, tf.float32)

        def loss_at(values, x, y):
            logits, _ = self.stateless_call(values, ntv, x, training=True)
            return average_loss(y, logits), logits

        w_idx = [i for i, a in enumerate(is_arch) if not a]
        a_idx = [i for i, a in enumerate(is_arch) if a]

        def grads_at(values, x, y, wrt, weight_gradients=True):
            # Gradients w.r.t. values[i], i in wrt, only: the other values are constants of this pass, so
            # their gradients are neither built nor all-reduced (the w± passes need ∇_A alone, like the
            # first-order architecture step, and the conv blocks then leave out their filter gradients).
            sources = [values[i] for i in wrt]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(sources)
                with tracing.options(weight_gradients=weight_gradients):
                    loss, logits = loss_at(values, x, y)
            grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return all_reduce_sum(grads), loss, logits

        w0 = [tf.convert_to_tensor(v.value) for v in tv]

        def shifted(scale, direction):
            """w0 with its weights (not A) moved by scale · direction (one tensor per weight, w_idx order)."""
            values = list(w0)
            for i, d in zip(w_idx, direction):
                values[i] = w0[i] + scale * d
            return values

        g_train, _, _ = grads_at(w0, xt, yt, w_idx)  # ∇_w L_train(w, A)
        w_prime = shifted(-xi, g_train)
        g_val, loss_v, logits_v = grads_at(w_prime, xv, yv, a_idx + w_idx)  # ∇_A and ∇_{w'} of L_val(w', A)
        d_arch, d_w = g_val[:len(a_idx)], g_val[len(a_idx):]
        eps = 0.01 / (tf.linalg.global_norm(d_w) + 1e-12)

        def arch_grad_at(sign):
            g, _, _ = grads_at(shifted(sign * eps, d_w), xt, yt, a_idx, weight_gradients=False)  # ∇_A L_train(w±, A)
            return g

        g_plus, g_minus = arch_grad_at(1.0), arch_grad_at(-1.0)
        # Note the division by 2ε: several public copies multiply by ε/2 instead.
        grads = [(da - xi * (p - m) / (2.0 * eps)) / n for da, p, m in zip(d_arch, g_plus, g_minus)]
        # Order of self._arch equals the order of arch entries in trainable_variables.
        order = {id(v): i for i, v in enumerate(v for v, a in zip(tv, is_arch) if a)}
        grads = [grads[order[id(v)]] for v in self._arch]
        return grads, loss_v, correct_share(yv, logits_v)


def _loss_scaled(optimizer) -> bool:
    """Whether the architecture optimizer is float16's ``LossScaleOptimizer`` (BUILD_NOTES "Mixed precision and XLA")."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

"""The one-level update (StacNAS; BUILD_NOTES "The bi-level step: first and second order"): α and the weights
from one loss on one training batch, Adam on α, PyTorch SGD on the weights, checked against a hand computation
on a linear supernet; and the configuration rules of --update and --train_portion."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn.supernets import ChainSupernet
from hdas_tf.run.optimizers import FlatSGD
from hdas_tf.search.config import SearchConfig
from hdas_tf.search.model import ArchitectureSearchModel
from hdas_tf.space.search_space import SearchSpace

D, K, OPS = 3, 2, 2  # input features, classes, candidate ops


class LinearSupernet(keras.layers.Layer):
    """logits = Σ_o softmax(α)_o · x W_o: small enough to differentiate by hand."""

    def build(self, images_shape, arch_shape=None):
        self.w = self.add_weight(shape=(OPS, D, K), initializer=keras.initializers.RandomNormal(seed=5), name="w")

    def call(self, images, arch, training=None):
        p = tf.nn.softmax(arch["alpha"])
        return tf.add_n([p[o] * (images @ self.w[o]) for o in range(OPS)])


LR, MOMENTUM, WD, CLIP = 0.1, 0.9, 3e-4, 0.05
A_LR, B1, B2, EPS, A_WD = 0.01, 0.5, 0.999, 1e-8, 1e-3


def _model(update="one_level"):
    model = ArchitectureSearchModel(LinearSupernet(), {"alpha": (OPS,)}, update=update, weight_decay=WD,
                                    arch_weight_decay=A_WD, grad_clip=CLIP, seed=3)
    model.build_all((D,), FlatSGD(LR, momentum=MOMENTUM),
                    keras.optimizers.Adam(A_LR, beta_1=B1, beta_2=B2, epsilon=EPS))
    return model


def _softmax(v, axis=-1):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def hand_step(w, a, x, y, state):
    """One one-level step by hand: mean cross-entropy L of z = Σ_o p_o x W_o with p = softmax(a).

    ∂L/∂z = (softmax(z) − onehot(y)) / B;  ∂L/∂W_o = p_o xᵀ ∂L/∂z;  ∂L/∂p_o = Σ (x W_o) ⊙ ∂L/∂z;
    ∂L/∂a = p ⊙ (∂L/∂p − p·∂L/∂p). Weights: global-norm clip, + λw, momentum buffer, step (torch.optim.SGD).
    α: + λ_a a, then Adam with bias correction (torch.optim.Adam). Both from the gradients at (w, a)."""
    p = _softmax(a)
    outs = np.einsum("bd,odk->obk", x, w)
    z = np.einsum("o,obk->bk", p, outs)
    g_z = (_softmax(z) - np.eye(K)[y]) / len(y)
    g_w = np.einsum("o,bd,bk->odk", p, x, g_z)
    g_p = np.einsum("obk,bk->o", outs, g_z)
    g_a = p * (g_p - p @ g_p)
    norm = np.sqrt((g_w ** 2).sum())
    d = g_w * CLIP / max(norm, CLIP) + WD * w
    state["buf"] = d if state.get("buf") is None else MOMENTUM * state["buf"] + d
    g = g_a + A_WD * a
    t = state["t"] = state.get("t", 0) + 1
    state["m"] = B1 * state.get("m", 0.0) + (1 - B1) * g
    state["v"] = B2 * state.get("v", 0.0) + (1 - B2) * g * g
    m_hat, v_hat = state["m"] / (1 - B1 ** t), state["v"] / (1 - B2 ** t)
    return w - LR * state["buf"], a - A_LR * m_hat / (np.sqrt(v_hat) + EPS), norm


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(4, D)).astype(np.float32), rng.integers(0, K, 4).astype(np.int32)) for _ in range(n)]


def test_one_level_steps_equal_the_hand_computation():
    model = _model()
    step = tf.function(model.train_step)
    w, a = model.supernet.w.numpy().astype(np.float64), model.arch_variables[0].numpy().astype(np.float64)
    state, clipped = {}, []
    for x, y in _batches(3):
        out = step(((tf.constant(x), tf.constant(y)),))
        w, a, norm = hand_step(w, a, x.astype(np.float64), y, state)
        clipped.append(norm > CLIP)
        np.testing.assert_allclose(model.supernet.w.numpy(), w, rtol=1e-5, atol=1e-7)
        # Keras puts Adam's ε under the uncorrected √v (torch under √v̂): a difference of ~ε/√(1−β2) in |g|.
        np.testing.assert_allclose(model.arch_variables[0].numpy(), a, rtol=1e-5, atol=1e-6)
        assert float(out["loss_a"]) == float(out["loss_w"]) and float(out["acc_a"]) == float(out["acc_w"])
    assert any(clipped)  # the clip bound in at least one step, so the test covers it


def test_one_level_ignores_a_validation_batch_and_differs_from_bilevel():
    (x, y), (xv, yv) = _batches(2, seed=1)
    alone, with_val, bilevel = _model(), _model(), _model("bilevel")
    out = tf.function(alone.train_step)(((x, y),))
    tf.function(with_val.train_step)(((x, y), (xv, yv)))
    out_bilevel = tf.function(bilevel.train_step)(((x, y), (xv, yv)))
    for u, v in zip(alone.variables, with_val.variables):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    # Bi-level: the architecture loss is the validation batch's (before the weight step), one-level: the training
    # batch's, the same as the weight loss.
    assert float(out_bilevel["loss_a"]) != float(out_bilevel["loss_w"])
    assert float(out["loss_a"]) == float(out["loss_w"])


def test_one_level_step_on_a_chain_supernet():
    space = SearchSpace(layers=3, init_channels=2, num_classes=3,
                        cell_ops=("max_pool_3x3", "skip_connect", "sep_conv_3x3", "none"))
    keras.utils.set_random_seed(0)
    model = ArchitectureSearchModel(ChainSupernet(space), space.arch_shapes(), update="one_level")
    model.build_all((8, 8, 3), FlatSGD(0.05), keras.optimizers.Adam(3e-4, beta_1=0.5, beta_2=0.999))
    before = {id(v): v.numpy() for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    out = tf.function(model.train_step)(((tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32),
                                          tf.constant(rng.integers(0, 3, 4), tf.int32)),))
    assert np.isfinite(float(out["loss_w"])) and float(out["loss_a"]) == float(out["loss_w"])
    moved = lambda v: not np.array_equal(before[id(v)], v.numpy())  # noqa: E731
    assert all(moved(v) for v in model.arch_variables)
    assert sum(moved(v) for v in model.weight_variables) > len(model.weight_variables) // 2


def test_update_and_train_portion_rules():
    SearchConfig(update="one_level", train_portion=1.0)
    SearchConfig(update="one_level", train_portion=0.5)
    for kwargs, message in [
        (dict(update="onelevel"), "update must be one of"),
        (dict(train_portion=1.0), "train_portion=1 leaves no validation half"),
        (dict(update="one_level", train_portion=1.5), r"train_portion must be in \(0, 1\)"),
        (dict(update="one_level", train_portion=0.0), r"train_portion must be in \(0, 1\)"),
        (dict(update="one_level", unrolled=True), "no second-order|one-level update has none"),
        (dict(update="one_level", genotype_selection="best_val"), "genotype_selection='best_val'"),
        (dict(augment="randaugment"), "augment must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            SearchConfig(**kwargs)
    with pytest.raises(ValueError, match="no second-order form"):
        ArchitectureSearchModel(LinearSupernet(), {"alpha": (OPS,)}, update="one_level", unrolled=True)

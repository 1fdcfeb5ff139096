"""Tests of hdas_tf.losses: depth loss (Eq. 2, Eq. 4) and complexity loss (Eq. 5) against hand arithmetic,
their gradients against central finite differences, the regularizer wiring, and the FLOPs-share θ."""

import math

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.search import losses
from hdas_tf.space.genotypes import CellGenotype, Genotype
from hdas_tf.space.search_space import SearchSpace
from hdas_tf.nn.stages import num_stage_edges

# Stage ops: max_pool_3x3, avg_pool_3x3, skip_connect, none. LN3 = ln 3, so softmax([0, LN3]) = (1/4, 3/4).
LN3, LN2 = math.log(3.0), math.log(2.0)


def _rows(strengths, none=10.0, filler=-5.0, op=0):
    """α rows whose strongest non-'none' op is ``strengths[r]`` (in column ``op``), with a larger 'none'
    that the depth loss must ignore and weaker other ops."""
    out = np.full((len(strengths), 4), filler, np.float64)
    for r, value in enumerate(strengths):
        out[r, (op + r) % 3] = value
        out[r, 3] = none
    return out


# Window 2, 3 cells: cell 0 reads states (0, 1), cell 1 (1, 2), cell 2 (2, 3); rows go cell by cell.
# Stage A: cell 1 strengths (0, ln3) → w = (1/4, 3/4); cell 2 (ln3, 0) → w = (3/4, 1/4).
#   d0 = 1;  d1 = 1/4·(0+1) + 3/4·(1+1) = 1.75;  d2 = 3/4·(1+1) + 1/4·(1.75+1) = 2.1875
#   L_A = −(1/3)(1/1 + 1.75/2 + 2.1875/3) = −(1/3)(1 + 0.875 + 0.72916…) = −0.86805…
ALPHA_A = _rows([0.0, 0.3, 0.0, LN3, LN3, 0.0])
D_A = [1.0, 1.75, 2.1875]
L_A = -(1.0 + 1.75 / 2 + 2.1875 / 3) / 3
# Stage B: all strengths equal → w = 1/2 everywhere. d0 = 1; d1 = (1 + 2)/2 = 1.5; d2 = (2 + 2.5)/2 = 2.25.
#   L_B = −(1/3)(1 + 0.75 + 0.75) = −0.8333…
ALPHA_B = _rows([0.7] * 6, none=-1.0)
L_B = -(1.0 + 1.5 / 2 + 2.25 / 3) / 3
# Stage C: cell 1 (ln3, 0) → d1 = 3/4·1 + 1/4·2 = 1.25; cell 2 (0, ln3) → d2 = 1/4·2 + 3/4·2.25 = 2.1875.
ALPHA_C = _rows([1.0, 1.0, LN3, 0.0, 0.0, LN3])
L_C = -(1.0 + 1.25 / 2 + 2.1875 / 3) / 3

SPACE_W2 = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), window=2)


def test_expected_depths_by_hand():
    d = losses.expected_depths(tf.constant(ALPHA_A), 3, 2, SPACE_W2.stage_ops)
    np.testing.assert_allclose(d.numpy(), D_A, rtol=1e-12)


def test_depth_loss_window_2_by_hand():
    alphas = [tf.constant(a) for a in (ALPHA_A, ALPHA_B, ALPHA_C)]
    loss = losses.depth_loss(alphas, SPACE_W2)
    assert loss.dtype == tf.float64
    np.testing.assert_allclose(loss.numpy(), L_A + L_B + L_C, rtol=1e-12)
    np.testing.assert_allclose(L_A + L_B + L_C, -0.868055555 - 0.833333333 - 0.784722222, rtol=1e-8)


def test_depth_loss_window_3_by_hand():
    # Window 3, 3 cells: cell 0 reads (0, 1), cell 1 (0, 1, 2), cell 2 (1, 2, 3): 2 + 3 + 3 = 8 rows.
    # cell 1 strengths (0, 0, ln2) → w = (1/4, 1/4, 1/2): d1 = 1/4 + 1/4 + 1/2·2 = 1.5
    # cell 2 strengths (ln2, 0, ln2) → w = (2/5, 1/5, 2/5): d2 = 2/5·1 + 1/5·2 + 2/5·2.5 = 1.8
    # L = −(1/3)(1 + 1.5/2 + 1.8/3) = −(1/3)·2.35
    space = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), window=3)
    a = _rows([0.0, 0.0, 0.0, 0.0, LN2, LN2, 0.0, LN2])
    d = losses.expected_depths(tf.constant(a), 3, 3, space.stage_ops)
    np.testing.assert_allclose(d.numpy(), [1.0, 1.5, 1.8], rtol=1e-12)
    loss = losses.depth_loss([tf.constant(a)] * 3, space)
    np.testing.assert_allclose(loss.numpy(), 3 * (-2.35 / 3), rtol=1e-12)


def test_depth_loss_with_beta_eq4_by_hand():
    # Distribution search, N_max = 3, N_min = 2: b_1 = 0, (b_2, b_3) = softmax(β) = (1/4, 3/4) for β = (0, ln3).
    # L_A(β) = −(1/3)(1·(1+0) + 1.75/2·(1 + 2/4) + 2.1875/3·(1 + 3·3/4)) = −(1/3)(1 + 1.3125 + 2.3697916…)
    space = SearchSpace(stage="stage_specific", window=2, min_cells=2, max_cells=3)
    beta = tf.constant([0.0, LN3], tf.float64)
    loss = losses.depth_loss([tf.constant(ALPHA_A)] * 3, space, betas=[beta] * 3)
    expected = -(1.0 + 1.3125 + 2.1875 / 3 * 3.25) / 3
    np.testing.assert_allclose(expected, -1.5607638888, rtol=1e-9)
    np.testing.assert_allclose(loss.numpy(), 3 * expected, rtol=1e-12)


def test_depth_loss_ignores_none_and_other_ops():
    # Raising 'none' or a weaker op of an edge leaves its strength (max over non-'none' ops) unchanged.
    a = ALPHA_A.copy()
    a[:, 3] = -50.0
    a[a == -5.0] = -1.0
    base = losses.depth_loss([tf.constant(ALPHA_A)] * 3, SPACE_W2)
    np.testing.assert_allclose(losses.depth_loss([tf.constant(a)] * 3, SPACE_W2).numpy(), base.numpy(), rtol=1e-12)


def test_complexity_loss_by_hand():
    # Candidate lengths (2, 3): β1 = (0, ln3) → E[n] = 2/4 + 9/4 = 2.75; β2 = (0, 0) → 2.5;
    # β3 = (ln3, 0) → 2.25.
    betas = [tf.constant(b, tf.float64) for b in ([0.0, LN3], [0.0, 0.0], [LN3, 0.0])]
    np.testing.assert_allclose(losses.complexity_loss(betas, (2, 3)).numpy(), 2.75 + 2.5 + 2.25, rtol=1e-12)
    # θ = (0.5, 1, 2): 1.375 + 2.5 + 4.5 = 8.375
    np.testing.assert_allclose(losses.complexity_loss(betas, (2, 3), theta=(0.5, 1.0, 2.0)).numpy(), 8.375,
                               rtol=1e-12)


def _central_differences(fn, x, eps=1e-6):
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        grad[i] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


def test_depth_loss_gradient_matches_finite_differences():
    space = SearchSpace(stage="stage_specific", window=3, min_cells=2, max_cells=4)
    rows = num_stage_edges(4, 3)
    rng = np.random.default_rng(0)
    flat = rng.normal(size=3 * rows * 4 + 3 * 3)

    def unpack(v):
        v = tf.convert_to_tensor(v, tf.float64)
        alphas = [tf.reshape(v[s * rows * 4:(s + 1) * rows * 4], (rows, 4)) for s in range(3)]
        betas = [v[3 * rows * 4 + 3 * s:3 * rows * 4 + 3 * (s + 1)] for s in range(3)]
        return alphas, betas

    @tf.function(input_signature=[tf.TensorSpec([flat.size], tf.float64)])
    def loss_fn(v):
        alphas, betas = unpack(v)
        return losses.depth_loss(alphas, space, betas)

    v = tf.constant(flat)
    with tf.GradientTape() as tape:
        tape.watch(v)
        loss = loss_fn(v)
    analytic = tape.gradient(loss, v).numpy()
    numeric = _central_differences(lambda x: float(loss_fn(tf.constant(x))), flat)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(analytic).max() > 1e-3  # not a vacuous match of zeros


def test_complexity_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    flat = rng.normal(size=15)
    theta = (0.2, 0.3, 0.5)

    def loss_fn(v):
        return losses.complexity_loss([v[5 * s:5 * (s + 1)] for s in range(3)], (4, 5, 6, 7, 8), theta)

    v = tf.constant(flat)
    with tf.GradientTape() as tape:
        tape.watch(v)
        loss = loss_fn(v)
    analytic = tape.gradient(loss, v).numpy()
    numeric = _central_differences(lambda x: float(loss_fn(tf.constant(x))), flat)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    # Closed form: ∂/∂β_{s,n} = θ_s·p_n·(n − E[n]).
    p = tf.nn.softmax(flat[:5]).numpy()
    n = np.arange(4, 9)
    np.testing.assert_allclose(analytic[:5], 0.2 * p * (n - (p * n).sum()), rtol=1e-10)


def test_regularizer_chain_is_none():
    assert losses.make_arch_regularizer(SearchSpace()) is None


def test_regularizer_without_beta_has_zero_complexity():
    space = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), window=2)
    reg = losses.make_arch_regularizer(space, depth_weight=2.0)
    arch = {f"alpha_stage{s + 1}": tf.constant(a, tf.float32) for s, a in enumerate((ALPHA_A, ALPHA_B, ALPHA_C))}
    total, terms = reg(arch)
    assert set(terms) == {"depth_loss", "complexity_loss"}
    np.testing.assert_allclose(terms["depth_loss"].numpy(), L_A + L_B + L_C, rtol=1e-6)
    assert float(terms["complexity_loss"]) == 0.0
    np.testing.assert_allclose(total.numpy(), 2.0 * (L_A + L_B + L_C), rtol=1e-6)


def test_regularizer_shared_alpha_counts_in_every_stage_with_beta():
    space = SearchSpace(stage="shared", window=2, min_cells=2, max_cells=3)
    assert space.arch_shapes()["alpha_stage"] == ALPHA_A.shape
    reg = losses.make_arch_regularizer(space)  # δ = 1, γ = 0.4
    betas = ([0.0, LN3], [0.0, 0.0], [LN3, 0.0])
    arch = {"alpha_stage": tf.constant(ALPHA_A, tf.float32)}
    arch.update({f"beta_stage{s + 1}": tf.constant(b, tf.float32) for s, b in enumerate(betas)})
    total, terms = reg(arch)
    # Depth per stage: −(1/3)(d0 + d1/2·(1 + 2·b_2) + d2/3·(1 + 3·b_3)), b from each stage's own β.
    d0, d1, d2 = D_A
    depth = sum(-(d0 + d1 / 2 * (1 + 2 * b2) + d2 / 3 * (1 + 3 * b3)) / 3
                for b2, b3 in ((0.25, 0.75), (0.5, 0.5), (0.75, 0.25)))
    np.testing.assert_allclose(terms["depth_loss"].numpy(), depth, rtol=1e-6)
    np.testing.assert_allclose(terms["complexity_loss"].numpy(), 7.5, rtol=1e-6)
    np.testing.assert_allclose(total.numpy(), depth + 0.4 * 7.5, rtol=1e-6)


def test_depth_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"needs shape \(6, 4\).*\(5, 4\)"):
        losses.depth_loss([tf.constant(ALPHA_A[:5])] * 3, SPACE_W2)
    with pytest.raises(ValueError, match="no distribution search"):
        losses.depth_loss([tf.constant(ALPHA_A)] * 3, SPACE_W2, betas=[tf.zeros(2)] * 3)
    with pytest.raises(ValueError, match="no op other than 'none'"):
        losses.expected_depths(tf.constant(ALPHA_A[:, 3:]), 3, 2, ("none",))


def test_stage_flops_share_by_hand():
    # One node, one sep_conv_3x3, concat [2] (state width C). MACs = 2·HW·C·C (the two 1×1 preprocessings)
    # + 2·(HW·C·9 + HW·C²) (two depthwise + pointwise blocks).
    # Stage 1: C=2, 4×4: 128 + 2·(288 + 64) = 832. Stage 2: C=4, 2×2: 128 + 2·(144 + 64) = 544.
    # Stage 3: C=8, 1×1: 128 + 2·(72 + 64) = 400. Total 1776.
    cell = CellGenotype(((("sep_conv_3x3", 0),),), concat=(2,))
    share = losses.stage_flops_share(Genotype(cells={"normal": cell, "reduce": cell}), init_channels=2, image_size=4)
    np.testing.assert_allclose(share, (832 / 1776, 544 / 1776, 400 / 1776), rtol=1e-12)
    # Stage-specific cells: normal1 has a dil_conv_5x5 (one block) and free ops; normal2/3 the cell above.
    # Stage 1: C=2, concat [2, 3] → state width 4: 2·16·4·2 + (16·2·25 + 16·4) = 256 + 864 = 1120.
    free = CellGenotype(((("dil_conv_5x5", 0), ("max_pool_3x3", 1)), (("skip_connect", 2),)), concat=(2, 3))
    genotype = Genotype(cells={"normal1": free, "reduce1": cell, "normal2": cell, "reduce2": cell, "normal3": cell})
    share = losses.stage_flops_share(genotype, init_channels=2, image_size=4)
    np.testing.assert_allclose(share, (1120 / 2064, 544 / 2064, 400 / 2064), rtol=1e-12)

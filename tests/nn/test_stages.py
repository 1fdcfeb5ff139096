"""Tests of hdas_tf.stages and networks.StageSupernet: architecture-scalar counts, search-space sizes, α/β
wiring (shared vs stage-specific, β mixture), the search stage reducing to the fixed stage, dead cells,
genotype derivation, and one-device vs MirroredStrategy parity of a search step."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.space import search_space as S
from hdas_tf.space.genotypes import CellGenotype, Genotype, StageGenotype
from hdas_tf.space.registry import REGISTRY
from hdas_tf.search.losses import make_arch_regularizer
from hdas_tf.nn.supernets import StageSupernet
from hdas_tf.search.model import ArchitectureSearchModel
from hdas_tf.space.search_space import SearchSpace
from hdas_tf.nn.stages import FixedStage, SearchStage, derive_stage_genotype, stage_arch_shapes
from hdas_tf.run.strategy import make_strategy

MAX, AVG, SKIP, NONE = "max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"
STAGE_OPS = (MAX, AVG, SKIP, NONE)

# A small cell (two nodes, output 2C) that still has every kind of op: conv, pooling, identity, and in the
# reduction cell a strided skip (FactorizedReduce).
TINY = Genotype(cells={
    "normal": CellGenotype((((("sep_conv_3x3", 0), (SKIP, 1))), ((MAX, 0), ("dil_conv_3x3", 2))), concat=(2, 3)),
    "reduce": CellGenotype((((MAX, 0), (SKIP, 1)), ((AVG, 2), ("sep_conv_3x3", 1))), concat=(2, 3)),
}, name="TINY")
TINY_NORMAL = {"nodes": [[["sep_conv_3x3", 0], [SKIP, 1]], [[MAX, 0], ["dil_conv_3x3", 2]]], "concat": [2, 3]}


def _random_arch(shapes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: tf.constant(scale * rng.normal(size=v), tf.float32) for k, v in shapes.items()}


def _images(shape=(2, 8, 8, 3), seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


# === counts and sizes ===


def test_arch_scalar_counts_6_6_6_window_3():
    # Cells j = 0..5 read min(3, j+2) = 2, 3, 3, 3, 3, 3 states: 17 edges × 4 stage ops = 68 per stage.
    space = SearchSpace(stage="stage_specific", stage_lengths=(6, 6, 6), window=3)
    shapes = space.arch_shapes()
    assert shapes == {f"alpha_stage{s}": (17, 4) for s in (1, 2, 3)}
    assert space.num_arch_params() == 204
    assert stage_arch_shapes(space) == shapes
    assert StageSupernet(space, REGISTRY["DARTS_V2"]).arch_shapes() == shapes


def test_arch_scalar_counts_distribution_l26():
    # L = 3·8 + 2 = 26: 8 cells per stage → 2 + 7·3 = 23 edges × 4 = 92 α per stage (276), β over n = 4..8 (15).
    space = SearchSpace(stage="stage_specific", window=3, min_cells=4, max_cells=8)
    shapes = space.arch_shapes()
    assert sum(math.prod(v) for k, v in shapes.items() if k.startswith("alpha")) == 276
    assert sum(math.prod(v) for k, v in shapes.items() if k.startswith("beta")) == 15
    assert StageSupernet(space, REGISTRY["DARTS_V2"]).arch_shapes() == shapes
    shared = SearchSpace(stage="shared", window=3, min_cells=4, max_cells=8)
    assert StageSupernet(shared, REGISTRY["DARTS_V2"]).arch_shapes() == shared.arch_shapes()
    assert shared.num_arch_params() == 92 + 15


def test_search_space_sizes_match_paper():
    hs = SearchSpace(stage="stage_specific", stage_lengths=(6, 6, 6), window=3)
    assert round(S.log10_stage_level_size(hs)) == 24
    dist = SearchSpace(stage="stage_specific", window=3, min_cells=4, max_cells=8)
    assert round(S.log10_stage_level_size(dist)) == 33
    # Shared DARTS cells (10^18) × H^s-DAS (10^24).
    assert round(S.log10_cell_level_size(hs)) == 18
    assert round(S.log10_space_size(hs)) == 42


def test_unequal_stage_lengths_get_per_stage_alpha_rows():
    # Phase 3 searches the DAG with the lengths a β search chose, which may differ per stage.
    space = SearchSpace(stage="stage_specific", stage_lengths=(2, 3, 4), window=3)
    assert stage_arch_shapes(space) == {"alpha_stage1": (5, 4), "alpha_stage2": (8, 4), "alpha_stage3": (11, 4)}
    assert StageSupernet(space, TINY).arch_shapes() == stage_arch_shapes(space)
    shared = SearchSpace(stage="shared", stage_lengths=(2, 3, 4), window=3)
    assert stage_arch_shapes(shared) == {"alpha_stage": (11, 4)}


# === supernet forward, config ===


def test_stage_supernet_forward_shapes_and_config():
    space = SearchSpace(stage="stage_specific", stage_lengths=(2, 2, 2), init_channels=2, num_classes=5)
    net = StageSupernet(space, REGISTRY["DARTS_V2"])
    net.build((2, 8, 8, 3))
    arch = _random_arch(net.arch_shapes())
    outs = net.stage_outputs(_images(), arch, training=True)
    # Stem 4C = 8 = 4·C_1; stage s outputs 2 cells × 4 nodes × C_s = 8·C_s; reductions halve the map.
    assert [tuple(o.shape) for o in outs] == [(2, 8, 8, 16), (2, 4, 4, 32), (2, 2, 2, 64)]
    assert tuple(net(_images(), arch, training=True).shape) == (2, 5)
    assert net.classifier.kernel.shape == (64, 5)  # GAP → dense on 32C
    clone = StageSupernet.from_config(net.get_config())
    assert clone.get_config() == net.get_config()
    clone.build((2, 8, 8, 3))
    assert [tuple(v.shape) for v in clone.weights] == [tuple(v.shape) for v in net.weights]


def test_stage_supernet_validates():
    with pytest.raises(ValueError, match="stage='chain'"):
        StageSupernet(SearchSpace(), REGISTRY["DARTS_V2"])
    with pytest.raises(ValueError, match="has no cells"):
        StageSupernet(SearchSpace(stage="shared"), REGISTRY["HS_DAS_CIFAR"])
    space = SearchSpace(stage="shared", stage_lengths=(2, 2, 2), init_channels=2)
    net = StageSupernet(space, TINY)
    net.build((2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"alpha_stage.*\(4, 4\)"):
        net(_images(), {"alpha_stage": tf.zeros((4, 4))})


# === α wiring ===


def _shared_and_specific(stage_lengths=(2, 2, 2)):
    kw = dict(stage_lengths=stage_lengths, init_channels=2, num_classes=3, window=3)
    shared = StageSupernet(SearchSpace(stage="shared", **kw), TINY)
    specific = StageSupernet(SearchSpace(stage="stage_specific", **kw), TINY)
    shared.build((2, 8, 8, 3))
    specific.build((2, 8, 8, 3))
    specific.set_weights(shared.get_weights())
    return shared, specific


def test_shared_alpha_is_read_by_all_three_stages():
    shared, specific = _shared_and_specific()
    alpha = tf.constant(np.random.default_rng(0).normal(size=(5, 4)), tf.float32)
    x = _images()
    probe = tf.constant(np.random.default_rng(1).normal(size=(2, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(alpha)
        loss_shared = tf.reduce_sum(shared(x, {"alpha_stage": alpha}, training=True) * probe)
    g_shared = tape.gradient(loss_shared, alpha)
    per_stage = [tf.identity(alpha) for _ in range(3)]
    with tf.GradientTape() as tape:
        tape.watch(per_stage)
        arch = {f"alpha_stage{s + 1}": a for s, a in enumerate(per_stage)}
        loss_specific = tf.reduce_sum(specific(x, arch, training=True) * probe)
    g_specific = tape.gradient(loss_specific, per_stage)
    np.testing.assert_allclose(loss_shared.numpy(), loss_specific.numpy(), rtol=1e-6)
    # One α in three stages: its gradient is the sum of the three stages' contributions, each non-zero.
    for g in g_specific:
        assert np.abs(g.numpy()).max() > 1e-6
    np.testing.assert_allclose(g_shared.numpy(), sum(g.numpy() for g in g_specific), rtol=1e-4, atol=1e-7)


def test_stage_specific_alpha_affects_only_its_stage_onward():
    _, net = _shared_and_specific()
    arch = _random_arch(net.arch_shapes(), seed=2)
    x = _images()
    base = net.stage_outputs(x, arch, training=True)
    for s in (2, 3):
        changed = dict(arch)
        changed[f"alpha_stage{s}"] = arch[f"alpha_stage{s}"] + tf.constant(
            np.random.default_rng(s).normal(size=(5, 4)), tf.float32)
        outs = net.stage_outputs(x, changed, training=True)
        for t in range(3):
            same = np.array_equal(outs[t].numpy(), base[t].numpy())
            assert same == (t < s - 1), (s, t)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(list(arch.values()))
        outs = net.stage_outputs(x, arch, training=True)
        first, second = tf.reduce_sum(outs[0]), tf.reduce_sum(outs[1] ** 2)
    assert tape.gradient(first, arch["alpha_stage2"]) is None
    assert tape.gradient(first, arch["alpha_stage3"]) is None
    assert tape.gradient(second, arch["alpha_stage3"]) is None
    assert np.abs(tape.gradient(second, arch["alpha_stage2"]).numpy()).max() > 0


# === search stage ===


def test_beta_mixture_selects_concat_of_cells_n_minus_2_and_n_minus_1():
    stage = SearchStage(TINY_NORMAL, channels=2, n_cells=4, window=3, min_cells=2, max_cells=4)
    x = _images((2, 8, 8, 5))
    stage.build(x.shape)
    weights = tf.nn.softmax(tf.constant(np.random.default_rng(0).normal(size=(stage.num_edges, 4)), tf.float32))
    states = stage.states(x, weights, training=True)  # [proj0, proj1, cell 0, ..., cell 3]
    for i, n in enumerate((2, 3, 4)):
        beta = tf.nn.softmax(60.0 * tf.one_hot(i, 3))
        out = stage(x, weights, beta, training=True)
        expected = tf.concat([states[n], states[n + 1]], axis=-1)  # cells n-2, n-1 are states n, n+1
        assert tuple(out.shape) == (2, 8, 8, 8)
        np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
    b = tf.constant([0.2, 0.3, 0.5])
    mix = sum(b[i] * tf.concat([states[n], states[n + 1]], axis=-1) for i, n in enumerate((2, 3, 4)))
    np.testing.assert_allclose(stage(x, weights, b, training=True).numpy(), mix.numpy(), atol=1e-5)


def test_search_stage_cell_input_is_weighted_sum_over_its_window():
    # Window 3, 3 cells: cell 2's α rows are 5, 6, 7 = states 1, 2, 3 (projection 1, cells 0 and 1).
    # Without pooling BN the stage ops are plain pools: max (−inf padding) and average (padding not
    # counted) are TF's SAME pools at stride 1; 'none' adds nothing.
    stage = SearchStage(TINY_NORMAL, channels=2, n_cells=3, window=3, pool_bn=False)
    x = _images((2, 8, 8, 5))
    stage.build(x.shape)
    w = tf.nn.softmax(tf.constant(np.random.default_rng(3).normal(size=(8, 4)), tf.float32))
    states = stage.states(x, w, training=True)

    def edge(row, t):
        y = states[t]
        pools = w[row, 0] * tf.nn.max_pool2d(y, 3, 1, "SAME") + w[row, 1] * tf.nn.avg_pool2d(y, 3, 1, "SAME")
        return pools + w[row, 2] * y

    h = edge(5, 1) + edge(6, 2) + edge(7, 3)
    np.testing.assert_allclose(stage.cells[2](h, h, training=True).numpy(), states[4].numpy(), atol=1e-5)
    h0 = edge(0, 0) + edge(1, 1)  # cell 0 reads rows 0, 1 = states 0, 1
    np.testing.assert_allclose(stage.cells[0](h0, h0, training=True).numpy(), states[2].numpy(), atol=1e-5)


def test_one_hot_search_stage_equals_fixed_stage():
    # With α one-hot on the genotype's ops (and on 'none' elsewhere) the mixed stage is the fixed stage.
    # Window 3, 3 cells; α rows: cell 0 → states (0, 1), cell 1 → (0, 1, 2), cell 2 → (1, 2, 3).
    dag = {"cells": [[[SKIP, 0], [MAX, 1]], [[AVG, 0], [SKIP, 2]], [[MAX, 2], [SKIP, 3]]], "concat": [3, 4]}
    choice = {0: SKIP, 1: MAX, 2: AVG, 3: NONE, 4: SKIP, 5: NONE, 6: MAX, 7: SKIP}
    weights = tf.constant([[1.0 if STAGE_OPS[o] == choice[r] else 0.0 for o in range(4)] for r in range(8)])
    search = SearchStage(TINY_NORMAL, channels=2, n_cells=3, window=3)
    fixed = FixedStage(dag, TINY_NORMAL, channels=2)
    x = _images((2, 8, 8, 6))
    search.build(x.shape)
    fixed.build(x.shape)
    assert fixed.dead_cells == [] and len(fixed.projections) == 2
    for a, b in zip(fixed.projections, search.projections):
        a.kernel.assign(b.kernel)  # fixed projections also have γ = 1, β = 0: equal in training mode
    for a, b in zip(fixed.stage_cells, search.cells):
        # Search cells keep no running statistics (a supernet only runs in training mode): copy the weights.
        for va, vb in zip(a.trainable_weights, b.trainable_weights, strict=True):
            va.assign(vb)
    np.testing.assert_allclose(fixed(x, training=True).numpy(), search(x, weights, training=True).numpy(),
                               atol=1e-5)


def test_search_stage_validates_and_round_trips():
    with pytest.raises(ValueError, match="max_cells == n_cells.*n_cells=3"):
        SearchStage(TINY_NORMAL, 2, n_cells=3, min_cells=2, max_cells=4)
    with pytest.raises(ValueError, match="op_names"):
        SearchStage(TINY_NORMAL, 2, n_cells=3, op_names=("sep_conv_3x3",))
    stage = SearchStage(TINY_NORMAL, 2, n_cells=3, window=2, pool_bn=False, name="s")
    clone = SearchStage.from_config(stage.get_config())
    assert clone.get_config() == stage.get_config()
    stage.build((2, 4, 4, 3))
    with pytest.raises(ValueError, match=r"shape \(6, 4\).*\(5, 4\)"):
        stage(tf.zeros((2, 4, 4, 3)), tf.zeros((5, 4)))
    with pytest.raises(ValueError, match="no distribution search"):
        stage(tf.zeros((2, 4, 4, 3)), tf.zeros((6, 4)), tf.zeros(2))
    # Window 1: a chain of cells; nobody reads state 0, so its projection is not built.
    assert len(SearchStage(TINY_NORMAL, 2, n_cells=3, window=1).projections) == 1


# === fixed stage ===


def test_fixed_stage_skips_dead_cells_and_unread_projections():
    # Cell 1 has no path to the output (cells 2, 3 read states 1, 2, 4 only).
    dag = {"cells": [[[SKIP, 0], [SKIP, 1]], [[SKIP, 0], [MAX, 1]], [[SKIP, 1], [AVG, 2]], [[SKIP, 2], [SKIP, 4]]],
           "concat": [4, 5]}
    stage = FixedStage(dag, TINY_NORMAL, channels=3)
    assert stage.dead_cells == [1]
    assert [c.name for c in stage.stage_cells] == ["cell_0", "cell_2", "cell_3"]
    x = _images((2, 8, 8, 7))
    stage.build(x.shape)
    assert tuple(stage(x, training=True).shape) == (2, 8, 8, 12) == stage.compute_output_shape(x.shape)
    assert stage.output_channels == 12
    # Concat pair before the last cells: cells 2 and 3 are dead; state 0 is read by nobody.
    short = FixedStage({"cells": [[[MAX, 1]], [[SKIP, 2]], [[SKIP, 3]], [[AVG, 4]]], "concat": [2, 3]},
                       TINY_NORMAL, channels=3, drop_path=True)
    assert short.dead_cells == [2, 3] and len(short.stage_cells) == 2
    assert [p.name for p in short.projections] == ["projection_1"]
    short.build(x.shape)
    assert tuple(short(x, drop_rate=tf.constant(0.2), training=True).shape) == (2, 8, 8, 12)
    assert FixedStage.from_config(short.get_config()).get_config() == short.get_config()


def test_fixed_stage_published_dag():
    genotype = REGISTRY["HS_DAS_CIFAR"]
    stage = FixedStage(genotype.stage_for(0), REGISTRY["DARTS_V2"].cell_for("normal1"), channels=2)
    assert stage.dead_cells == [] and len(stage.stage_cells) == 6
    x = _images((2, 8, 8, 8))
    stage.build(x.shape)
    assert tuple(stage(x, training=False).shape) == (2, 8, 8, 16)
    with pytest.raises(ValueError, match="source 3 out of range"):
        FixedStage({"cells": [[[SKIP, 3]]], "concat": [1, 2]}, TINY_NORMAL, channels=2)


def test_fixed_stage_drop_path_on_pooling_edges_only():
    # Cell 0 reads a max-pool edge (state 0) and an identity edge (state 1); cell 1 an avg-pool edge.
    dag = {"cells": [[[MAX, 0], [SKIP, 1]], [[AVG, 2], [SKIP, 0]]], "concat": [2, 3]}
    stage = FixedStage(dag, TINY_NORMAL, channels=2, drop_path=True)
    assert [d is not None for d in stage.edge_drops] == [True, False, True, False]
    assert all(d is None for d in FixedStage(dag, TINY_NORMAL, channels=2).edge_drops)
    n = 400
    stage.build((n, 4, 4, 3))
    rng = np.random.default_rng(0)
    states = {i: tf.constant(rng.normal(size=(n, 4, 4, 4)), tf.float32) for i in (0, 1)}
    pooled = stage.edge_ops[0](states[0], training=True).numpy()  # max pool + BN (batch statistics), undropped
    rate = 0.3
    pool_out, skip_out = [t.numpy() for t in stage.edge_outputs(0, states, tf.constant(rate), training=True)]
    # Per example: exactly 0, or the pooled map scaled by 1/keep (keep = 1 − rate, in float32 as the op).
    scale = np.float32(1) / (np.float32(1) - np.float32(rate))
    dropped = (pool_out == 0).all(axis=(1, 2, 3))
    kept = (pool_out == pooled * scale).all(axis=(1, 2, 3))
    assert np.all(dropped ^ kept)
    assert abs(dropped.mean() - rate) < 0.08
    np.testing.assert_array_equal(skip_out, states[1].numpy())  # identity edges are never dropped
    # Rate 0 in training, and any rate at inference: no effect.
    np.testing.assert_array_equal(stage.edge_outputs(0, states, tf.constant(0.0), training=True)[0].numpy(), pooled)
    inference = stage.edge_ops[0](states[0], training=False).numpy()
    np.testing.assert_array_equal(stage.edge_outputs(0, states, tf.constant(0.9), training=False)[0].numpy(),
                                  inference)
    x = _images((2, 4, 4, 3))
    np.testing.assert_array_equal(stage(x, tf.constant(0.9), training=False).numpy(),
                                  stage(x, None, training=False).numpy())


def test_stage_network_drops_its_pooling_stage_edges_at_the_network_rate():
    from hdas_tf.nn.eval_networks import StageNetwork

    # Identity-only normal cells: in stage 1 only the stage edges can be dropped.
    cells = {"normal": [[[SKIP, 0], [SKIP, 1]]], "reduce": [[[MAX, 0], [MAX, 1]]]}
    dag = {"cells": [[[MAX, 0], [SKIP, 1]], [[AVG, 2], [SKIP, 1]]], "concat": [2, 3]}
    genotype = Genotype.from_dict({"name": "g", "cells": {k: {"nodes": v, "concat": [2]} for k, v in cells.items()},
                                   "stages": [dag] * 3})
    net = StageNetwork(genotype, 10, 2, auxiliary=False, input_shape=(8, 8, 3))
    assert all(d is None for cell in net.stages[0].stage_cells for d in cell.drops)
    x = _images((64, 8, 8, 3))

    def stage_1(rate):
        net.drop_path_rate.assign(rate)
        return net.stages[0](net.stem[0](x, training=True), net._drop_rate(True), training=True).numpy()

    clean = stage_1(0.0)
    np.testing.assert_array_equal(stage_1(0.0), clean)
    assert not np.array_equal(stage_1(0.5), clean)
    no_drop = StageNetwork(genotype, 10, 2, auxiliary=False, drop_path=False, input_shape=(8, 8, 3))
    assert all(d is None for stage in no_drop.stages for d in stage.edge_drops)


# === genotype derivation ===


def _alpha(rows, entries):
    """Rows × 4 α of −3 with the given {(row, op): value} entries."""
    a = np.full((rows, 4), -3.0)
    for (r, op), value in entries.items():
        a[r, STAGE_OPS.index(op)] = value
    return a


def test_derive_stage_genotype_maps_window_positions_to_states():
    # Window 3, 3 cells: rows 0-1 = cell 0 (states 0, 1); rows 2-4 = cell 1 (states 0, 1, 2);
    # rows 5-7 = cell 2 (states 1, 2, 3).
    space = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), window=3)
    a1 = _alpha(8, {(0, MAX): 2.0, (1, SKIP): 1.0,
                    (2, AVG): 0.5, (3, SKIP): 1.0, (3, NONE): 5.0, (4, SKIP): 3.0,
                    (5, MAX): 0.1, (6, AVG): 2.0, (7, SKIP): 1.0})
    a2 = _alpha(8, {(0, SKIP): 1.0, (1, SKIP): 1.0, (2, MAX): 1.0, (3, SKIP): 2.0,
                    (5, SKIP): 1.0, (6, AVG): 0.5, (7, MAX): 2.0})
    arch = {"alpha_stage1": a1, "alpha_stage2": a2, "alpha_stage3": a1}
    stages, dead, lengths = derive_stage_genotype(arch, space)
    assert lengths is None
    # Stage 1, cell 1: window position 1 (state 1) has skip = 1.0 but a dominant 'none', so under softmax
    # ranking it loses to state 0's avg; cell 2: positions 1, 2 → states 2, 3.
    assert stages[0] == StageGenotype(cells=(((MAX, 0), (SKIP, 1)), ((SKIP, 2), (AVG, 0)), ((AVG, 2), (SKIP, 3))),
                                      concat=(3, 4))
    assert stages[1] == StageGenotype(cells=(((SKIP, 0), (SKIP, 1)), ((SKIP, 1), (MAX, 0)), ((MAX, 3), (SKIP, 1))),
                                      concat=(3, 4))
    # Stage 2: cell 2 reads states 3 and 1, cell 1 reads 1 and 0: nothing reads cell 0 (state 2).
    assert dead == [[], [0], []]
    # Logit ranking (the H-DAS code) ranks by raw α: state 1's skip = 1.0 beats state 0's avg = 0.5.
    stages, _, _ = derive_stage_genotype(arch, space, ranking="logit")
    assert stages[0].cells[1] == ((SKIP, 2), (SKIP, 1))


def test_derive_stage_genotype_argmax_beta_concat_and_length():
    # Shared α, window 3, N_max = 4, N_min = 2: rows cell 0 (0-1: states 0, 1), cell 1 (2-4: states 0, 1, 2),
    # cell 2 (5-7: states 1, 2, 3), cell 3 (8-10: states 2, 3, 4).
    space = SearchSpace(stage="shared", window=3, min_cells=2, max_cells=4)
    alpha = _alpha(11, {(0, MAX): 1.0, (1, SKIP): 2.0,          # cell 0 ← max 0, skip 1
                        (2, SKIP): 1.0, (3, SKIP): 2.0,          # cell 1 ← skip 1, skip 0 (not cell 0)
                        (5, MAX): 2.0, (7, SKIP): 1.0,           # cell 2 ← max 1, skip 3 (not cell 0)
                        (9, AVG): 1.0, (10, SKIP): 2.0})         # cell 3 ← skip 4, avg 3
    arch = {"alpha_stage": alpha, "beta_stage1": np.array([0.0, 1.0, 0.0]),  # n = 3
            "beta_stage2": np.array([0.0, 0.0, 1.0]),                          # n = 4
            "beta_stage3": np.array([1.0, 0.0, 0.0])}                          # n = 2
    stages, dead, lengths = derive_stage_genotype(arch, space)
    assert lengths == (3, 4, 2)
    assert [s.concat for s in stages] == [(3, 4), (4, 5), (2, 3)]
    assert [len(s.cells) for s in stages] == [3, 4, 2]
    assert stages[1].cells == (((SKIP, 1), (MAX, 0)), ((SKIP, 1), (SKIP, 0)), ((MAX, 1), (SKIP, 3)),
                               ((SKIP, 4), (AVG, 3)))
    assert stages[0].cells == stages[1].cells[:3] and stages[2].cells == stages[1].cells[:2]
    # Cell 0 feeds nobody on the way to the output when n = 3 or 4; with n = 2 it is an output cell.
    assert dead == [[0], [0], []]
    genotype = REGISTRY["DARTS_V2"].with_stages(Genotype(cells=None, stages=tuple(stages), stage_lengths=lengths))
    genotype.validate(window=3)


def test_derive_stage_genotype_validates():
    space = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), window=3)
    with pytest.raises(ValueError, match="lacks"):
        derive_stage_genotype({"alpha_stage1": np.zeros((8, 4))}, space)
    with pytest.raises(ValueError, match=r"alpha_stage1 must have shape \(8, 4\)"):
        derive_stage_genotype({f"alpha_stage{s}": np.zeros((7, 4)) for s in (1, 2, 3)}, space)
    with pytest.raises(ValueError, match="chain"):
        derive_stage_genotype({}, SearchSpace())


# === one device vs MirroredStrategy ===

# The smallest cells: one node; pooling and identity, FactorizedReduce in the reduction (the convolution ops
# are the cells' business, tested with them). Under MirroredStrategy every BN all-reduces its statistics
# (~90 graph nodes per BN per pass), so the number of BNs sets the tracing time of this test.
MINI = Genotype(cells={"normal": CellGenotype((((MAX, 0), (SKIP, 1)),), concat=(2,)),
                       "reduce": CellGenotype((((MAX, 0), (SKIP, 1)),), concat=(2,))}, name="MINI")


def _search_model(space, strategy):
    with strategy.scope():
        net = StageSupernet(space, MINI, pool_bn=False)
        model = ArchitectureSearchModel(net, net.arch_shapes(), arch_regularizer=make_arch_regularizer(space), seed=3)
        # SGD on α too: Adam's first step is ±lr whatever the gradient, which would hide a wrong gradient.
        model.build_all((8, 8, 3), keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.SGD(0.1))
    return model


@pytest.mark.slow  # ~50 s alone on an idle 2-core CPU (~100 s under load): tracing the replicated BN all-reduces
def test_search_step_one_device_equals_mirrored():
    keras.utils.set_random_seed(0)  # reproducible initial weights
    space = SearchSpace(stage="stage_specific", window=3, min_cells=2, max_cells=3, init_channels=2, num_classes=3)
    rng = np.random.default_rng(0)
    xt, xv = (tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32) for _ in range(2))
    yt, yv = (tf.constant(rng.integers(0, 3, size=4), tf.int32) for _ in range(2))

    single = _search_model(space, tf.distribute.get_strategy())
    initial_arch = [v.numpy() for v in single.arch_variables]
    strategy = make_strategy("mirrored")  # one per process (collective keys), over conftest's two logical CPUs
    mirrored = _search_model(space, strategy)
    # Same construction order, so the same variables in the same order (paths differ by Keras' unique suffixes).
    assert [tuple(v.shape) for v in single.weights] == [tuple(v.shape) for v in mirrored.weights]
    mirrored.set_weights(single.get_weights())

    out_single = tf.function(single.train_step)(((xt, yt), (xv, yv)))

    @tf.function
    def mirrored_step(batch):
        return strategy.run(mirrored.train_step, args=(batch,))

    def halves(ctx):  # replica r gets examples 2r, 2r+1 of the same global batch
        part = slice(2 * ctx.replica_id_in_sync_group, 2 * ctx.replica_id_in_sync_group + 2)
        return (xt[part], yt[part]), (xv[part], yv[part])

    out_mirrored = mirrored_step(strategy.experimental_distribute_values_from_function(halves))
    # Per-replica outputs are shares of the global value.
    for key in ("loss_w", "loss_a", "depth_loss", "complexity_loss"):
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, out_mirrored[key], axis=None)
        np.testing.assert_allclose(total.numpy(), out_single[key].numpy(), rtol=1e-5, err_msg=key)
    moved = max(np.abs(v.numpy() - a).max() for v, a in zip(single.arch_variables, initial_arch))
    assert moved > 1e-3  # the step did change α/β
    # Every variable (α, β, weights, BN moving statistics) after the step, on both replicas' copies. Relative
    # too: the replicated BN's variance (E[x²] − E[x]², all-reduced) rounds differently from the fused
    # kernel's, ~3e-6 relative on moving variances of ~3 in the 2×2 stage.
    for a, b in zip(single.weights, mirrored.weights):
        for copy in b.value.values:
            np.testing.assert_allclose(copy.numpy(), a.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)

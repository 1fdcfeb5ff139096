"""Tests of hdas_tf.cells (search and fixed cells), the chain supernet's size, and the search-space arithmetic.

Cells are tiny (C = 2..4, 8×8 inputs): graph building and eager passes of big supernets are slow here.
"""

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn.cells import FixedCell, SearchCell
from hdas_tf.space.registry import REGISTRY
from hdas_tf.nn.supernets import ChainSupernet, chain_layout
from hdas_tf.space.op_registry import CELL_OPS
from hdas_tf.space.search_space import SearchSpace, log10_cell_level_size, log10_cell_space


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def softmax_weights(edges, n_ops, seed=0):
    a = np.random.default_rng(seed).normal(size=(edges, n_ops))
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def n_params(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def inputs(reduction_prev, c_pp=6, c_p=8, size=8, seed=0):
    s0 = rand(2, 2 * size if reduction_prev else size, 2 * size if reduction_prev else size, c_pp, seed=seed)
    return tf.constant(s0), tf.constant(rand(2, size, size, c_p, seed=seed + 1))


# === SearchCell ===

CASES = [(False, False), (True, False), (False, True), (True, True)]


def independent_op(cell, k, name, h):
    """Edge k's op ``name`` as an independent ``ops.make_op`` layer (its own ReLU) holding the cell's kernels."""
    stride = cell.edge_strides[k]
    op = ops.make_op(name, cell.channels, stride, affine=False, pool_bn=cell.pool_bn, running_stats=False)
    op(h, training=True)
    kernels = cell.edge_kernels(k).get(name, [])
    assert len(op.trainable_weights) == len(kernels)
    for var, value in zip(op.trainable_weights, kernels, strict=True):
        assert tuple(var.shape) == tuple(value.shape)
        var.assign(value)
    return op


def reference_cell(cell, s0, s1, w):
    """The cell output computed edge by edge, op by op, with independent op layers (``ops.make_op``, each with
    its own ReLU and BN) holding the cell's kernels: node i = Σ_j Σ_o w[k, o]·o(state_j) (DARTS Eq. 1–2)."""
    states = [cell.preprocess0(s0, training=True), cell.preprocess1(s1, training=True)]
    k = 0
    for i in range(cell.steps):
        node = 0.0
        for j in range(i + 2):
            h = states[j]
            for o, name in enumerate(cell.op_names):
                if name == "none":
                    continue  # adds w · 0
                y = independent_op(cell, k, name, h)(h, training=True)
                node = node + float(w[k, o]) * y.numpy()
            k += 1
        states.append(tf.constant(node))
    return np.concatenate([s.numpy() for s in states[2:]], axis=-1)


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("reduction,reduction_prev", CASES)
def test_search_cell_shape_edges_and_reference(reduction, reduction_prev, size):
    c = 2
    cell = SearchCell(c, reduction, reduction_prev, CELL_OPS)
    s0, s1 = inputs(reduction_prev, size=size, seed=3)
    w = softmax_weights(14, len(CELL_OPS), seed=4)
    y = cell(s0, s1, tf.constant(w), training=True).numpy()
    out = (size + 1) // 2 if reduction else size
    assert y.shape == (2, out, out, 4 * c)
    assert tuple(cell.compute_output_shape(s0.shape, s1.shape)) == (2, out, out, 4 * c)
    assert cell.num_edges == 14
    assert cell.edge_names[:5] == ["edge_0_0", "edge_0_1", "edge_1_0", "edge_1_1", "edge_1_2"]
    sources = [j for i in range(4) for j in range(i + 2)]
    assert cell.edge_sources == sources
    assert cell.edge_strides == [2 if reduction and j < 2 else 1 for j in sources]
    assert isinstance(cell.preprocess0, ops.FactorizedReduce if reduction_prev else ops.ReLUConvBN)
    assert isinstance(cell.preprocess1, ops.ReLUConvBN)
    # Everything in a search cell is non-affine with batch statistics only: no γ/β, no moving averages.
    assert cell.non_trainable_weights == []
    assert not any("gamma" in w.name or "beta" in w.name for w in cell.weights)

    np.testing.assert_allclose(y, reference_cell(cell, s0, s1, w), rtol=1e-4, atol=1e-4)
    if reduction and not reduction_prev:
        # Batch statistics only: the training flag changes nothing.
        y_inf = cell(s0, s1, tf.constant(w), training=False).numpy()
        np.testing.assert_allclose(y_inf, y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op_names", [
    ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "none"),
    ("avg_pool_3x3", "dil_conv_3x3"),
    ("skip_connect",),
])
@pytest.mark.parametrize("reduction", [False, True])
def test_search_cell_op_subsets_equal_reference(op_names, reduction):
    cell = SearchCell(2, reduction, False, op_names, steps=3)
    s0, s1 = inputs(False, c_pp=3, c_p=5, seed=5)
    w = softmax_weights(2 + 3 + 4, len(op_names), seed=6)
    y = cell(s0, s1, tf.constant(w), training=True).numpy()
    assert y.shape == (2, 4 if reduction else 8, 4 if reduction else 8, 3 * 2)
    np.testing.assert_allclose(y, reference_cell(cell, s0, s1, w), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reduction", [False, True])
def test_search_cell_none_only_gives_zeros_of_output_shape(reduction):
    cell = SearchCell(2, reduction, False, ("none",))
    s0, s1 = inputs(False, seed=7)
    y = cell(s0, s1, tf.ones((14, 1)), training=True)
    assert tuple(y.shape) == tuple(cell.compute_output_shape(s0.shape, s1.shape))
    assert not np.any(y.numpy())


@pytest.mark.parametrize("reduction", [False, True])
def test_search_cell_gradients_equal_independent_ops(reduction):
    """Gradients w.r.t. the op weights, the inputs and every kernel equal those of independent op layers:
    checks the shared per-state work, the weight folded into BN, the fast 5×5 filter gradient and the
    polyphase / sub-grid dilated convolutions in the backward pass too."""
    cell = SearchCell(2, reduction, False, CELL_OPS, steps=2)  # 5 edges
    s0, s1 = inputs(False, size=8, seed=21)
    w = tf.constant(softmax_weights(5, len(CELL_OPS), seed=22))
    probe = tf.constant(rand(*cell.compute_output_shape(s0.shape, s1.shape), seed=23))
    cell(s0, s1, w, training=True)
    kernels = [v for v in cell.trainable_weights if v.path.split("/")[-1].startswith(
        ("sep_", "dil_", "skip_"))]
    with tf.GradientTape() as tape:
        tape.watch([s0, s1, w])
        loss = tf.reduce_sum(cell(s0, s1, w, training=True) * probe)
    g_s0, g_s1, g_w, *g_kernels = tape.gradient(loss, [s0, s1, w] + kernels)

    layers = {}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([s0, s1, w])
        states = [cell.preprocess0(s0, training=True), cell.preprocess1(s1, training=True)]
        k = 0
        for i in range(cell.steps):
            terms = []
            for j in range(i + 2):
                for o, name in enumerate(cell.op_names):
                    if name == "none":
                        continue
                    if (k, name) not in layers:
                        layers[(k, name)] = independent_op(cell, k, name, states[j])
                    terms.append(w[k, o] * layers[(k, name)](states[j], training=True))
                k += 1
            states.append(tf.add_n(terms))
        ref = tf.reduce_sum(tf.concat(states[2:], axis=-1) * probe)
    np.testing.assert_allclose(loss.numpy(), ref.numpy(), rtol=1e-4)
    for got, want in zip([g_s0, g_s1, g_w], tape.gradient(ref, [s0, s1, w])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3, atol=1e-4)
    # Kernel gradients: the stacked variables' slices against each independent layer's weights.
    grads = {v.path: g for v, g in zip(kernels, g_kernels)}
    checked = 0
    for (k, name), layer in layers.items():
        if not layer.trainable_weights:
            continue
        want = tape.gradient(ref, layer.trainable_weights)
        stacked = {n: tuple(grads[v.path] for v in vs) for n, vs in cell.kernels.items()}
        if name == "skip_connect":
            fr = stacked[name][0][cell.strided_edges.index(k)]
            got = [fr[0][None, None], fr[1][None, None]]
        elif name.startswith("sep"):
            dw, pw = stacked[name][0][k], stacked[name][1][k]
            got = [dw[0], pw[0][None, None], dw[1], pw[1][None, None]]
        else:
            got = [stacked[name][0][k], stacked[name][1][k][None, None]]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4)
            checked += 1
    assert checked == 5 * (4 + 4 + 2 + 2) + (4 * 2 if reduction else 0)


def test_search_cell_weights_gradient_and_tf_function():
    cell = SearchCell(2, True, False, CELL_OPS, steps=2)  # 5 edges: tracing costs ~0.5 ms per graph node
    s0, s1 = inputs(False, seed=8)
    alpha = tf.Variable(rand(5, len(CELL_OPS), seed=9))
    with tf.GradientTape() as tape:
        y = cell(s0, s1, tf.nn.softmax(alpha), training=True)
        loss = tf.reduce_sum(y * tf.constant(rand(*y.shape, seed=10)))
    grad = tape.gradient(loss, alpha).numpy()
    assert grad.shape == (5, len(CELL_OPS)) and np.all(np.isfinite(grad)) and np.any(grad != 0)
    graph = tf.function(lambda a, b, w: cell(a, b, w, training=True))
    w = tf.nn.softmax(alpha)
    np.testing.assert_allclose(graph(s0, s1, w).numpy(), y.numpy(), rtol=1e-5, atol=1e-5)


def test_search_cell_shares_parameter_free_ops_per_state():
    cell = SearchCell(2, False, False, CELL_OPS)
    # Max pool, avg pool and identity computed once per state that has outgoing edges (2 inputs + the first
    # 3 nodes) for all its edges; the last node has no outgoing edge.
    assert cell.shared_op_names == [["max_pool_3x3", "avg_pool_3x3", "skip_connect"]] * 5
    assert [len(e) for e in cell.out_edges] == [4, 4, 3, 2, 1]
    assert sorted(k for edges in cell.out_edges for k in edges) == list(range(14))
    cell.build((None, 8, 8, 6), (None, 8, 8, 6))
    # Kernels only for the ops that have weights; one variable per op kind and role for all 14 edges.
    assert sorted(cell.kernels) == ["dil_conv_3x3", "dil_conv_5x5", "sep_conv_3x3", "sep_conv_5x5"]
    assert len(cell.trainable_weights) == 2 * 4 + 2  # + the two preprocessing kernels
    assert tuple(cell.kernels["sep_conv_5x5"][0].shape) == (14, 2, 5, 5, 2, 1)
    reduce = SearchCell(2, True, False, CELL_OPS)
    # A reduction cell's inputs share only the strided pools: their skip is a FactorizedReduce per edge.
    assert reduce.shared_op_names[0] == ["max_pool_3x3", "avg_pool_3x3"]
    reduce.build((None, 8, 8, 6), (None, 8, 8, 6))
    # The strided skip (FactorizedReduce) on the 8 edges leaving the inputs: two 1×1 kernels C → C/2 each.
    assert tuple(reduce.kernels["skip_connect"][0].shape) == (8, 2, 2, 1)
    assert reduce.strided_edges == [k for k, j in enumerate(reduce.edge_sources) if j < 2]


def test_search_cell_config_round_trip():
    cell = SearchCell(4, True, True, ("max_pool_3x3", "sep_conv_3x3"), steps=3, pool_bn=False, name="c")
    config = cell.get_config()
    clone = SearchCell.from_config(config)
    assert clone.get_config() == config
    assert clone.num_edges == 2 + 3 + 4


def test_search_cell_param_count():
    # DARTS cell at C=16 (no reduction): 14 edges × (sep3 + sep5 + dil3 + dil5) + two 1×1 preprocessings.
    c = 16
    cell = SearchCell(c, False, False, CELL_OPS)
    cell.build((None, 8, 8, 48), (None, 8, 8, 48))
    per_edge = 2 * (9 * c + c * c) + 2 * (25 * c + c * c) + (9 * c + c * c) + (25 * c + c * c)
    assert n_params(cell) == 14 * per_edge + 2 * 48 * c
    # A reduction cell adds a FactorizedReduce (two 1×1 convs C → C/2) on each of the 8 strided edges.
    reduce = SearchCell(c, True, False, CELL_OPS)
    reduce.build((None, 8, 8, 48), (None, 8, 8, 48))
    assert n_params(reduce) == 14 * per_edge + 8 * 2 * c * (c // 2) + 2 * 48 * c


# === FixedCell ===


def test_fixed_cell_from_registry_shapes():
    normal = REGISTRY["DARTS_V2"].cell_for("normal")
    reduce = REGISTRY["DARTS_V2"].cell_for("reduce")
    c = 4
    cell = FixedCell(c, normal.nodes, normal.concat)
    s0, s1 = inputs(False)
    y = cell(s0, s1, training=True)
    assert y.shape == (2, 8, 8, 4 * c)
    assert cell.output_channels == 4 * c
    assert tuple(cell.compute_output_shape(s0.shape, s1.shape)) == (2, 8, 8, 16)

    red = FixedCell(c, reduce.nodes, reduce.concat, reduction=True, reduction_prev=False)
    y = red(s0, s1, training=True)
    assert y.shape == (2, 4, 4, 4 * c)
    # Edges leaving c_{k-2}/c_{k-1} are strided; edges leaving nodes are not (skip from node 0 = identity).
    kinds = [(type(op).__name__, getattr(op, "stride", 1)) for op in red.edge_ops]
    assert kinds == [("Pool", 2), ("Pool", 2), ("Identity", 1), ("Pool", 2), ("Pool", 2), ("Identity", 1),
                     ("Identity", 1), ("Pool", 2)]

    after = FixedCell(c, normal.nodes, reduction_prev=True)
    s0, s1 = inputs(True)
    assert after(s0, s1, training=True).shape == (2, 8, 8, 4 * c)
    assert isinstance(after.preprocess0, ops.FactorizedReduce)


def test_fixed_cell_concat_subset_and_equals_sum_of_edges():
    nodes = [[("skip_connect", 0), ("avg_pool_3x3", 1)], [("max_pool_3x3", 2), ("skip_connect", 1)]]
    cell = FixedCell(3, nodes, concat=[1, 3], affine=False)
    s0, s1 = inputs(False, seed=11)
    y = cell(s0, s1, training=True).numpy()
    h0, h1 = cell.preprocess0(s0, training=True), cell.preprocess1(s1, training=True)
    pool = lambda kind, x: ops.Pool(kind, 1, bn=True, affine=False, running_stats=False)(x, training=True)  # noqa
    n0 = h0 + pool("avg", h1)
    n1 = pool("max", n0) + h1
    np.testing.assert_allclose(y, np.concatenate([h1.numpy(), n1.numpy()], axis=-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nodes,match", [
    ([[("none", 0), ("skip_connect", 1)]], "none"),
    ([[("skip_connect", 0), ("skip_connect", 2)]], "state 2"),
    ([[("skip_connect", 0)], [("skip_connect", 4)]], "state 4"),
    ([[("skip_connect", -1)]], "state -1"),
    ([[("conv_7x7", 0)]], "conv_7x7"),
])
def test_fixed_cell_rejects_bad_edges(nodes, match):
    with pytest.raises(ValueError, match=match):
        FixedCell(4, nodes)


def test_fixed_cell_rejects_bad_concat():
    with pytest.raises(ValueError, match="concat index 6"):
        FixedCell(4, REGISTRY["DARTS_V2"].cell_for("normal").nodes, concat=[2, 6])


def test_fixed_cell_drop_path():
    normal = REGISTRY["DARTS_V2"].cell_for("normal")
    cell = FixedCell(2, normal.nodes, drop_path=True)
    # Drop path on every op but the identities (DARTS_V2 normal has two skip_connects at stride 1).
    assert sum(d is None for d in cell.drops) == 2
    assert all((d is None) == isinstance(op, ops.Identity) for d, op in zip(cell.drops, cell.edge_ops))
    s0, s1 = inputs(False, seed=12)
    base = cell(s0, s1, training=False).numpy()
    np.testing.assert_allclose(cell(s0, s1, tf.constant(0.7), training=False).numpy(), base, rtol=1e-6)
    dropped = cell(s0, s1, tf.constant(0.99999), training=True).numpy()
    assert dropped.shape == base.shape


def test_fixed_cell_config_round_trip():
    reduce = REGISTRY["PDARTS"].cell_for("reduce")
    cell = FixedCell(4, reduce.nodes, reduce.concat, reduction=True, reduction_prev=True, affine=False,
                     pool_bn=False, drop_path=True)
    config = cell.get_config()
    assert FixedCell.from_config(config).get_config() == config


# === chain supernet, architecture variables, search-space sizes ===


def test_chain_supernet_param_count_from_shapes():
    space = SearchSpace(layers=8, init_channels=16, num_classes=10)
    net = ChainSupernet(space)
    net.build((None, 32, 32, 3))  # shapes only: an eager pass of this supernet takes minutes
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == 1_930_618
    # The only moving statistics are the stem BN's; the stem BN is the only affine one.
    assert sorted(w.name for w in net.non_trainable_weights) == ["moving_mean", "moving_variance"]
    assert net.groups == ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    assert [c.reduction for c in net.cells] == [g == "reduce" for g in net.groups]
    assert [c.reduction_prev for c in net.cells] == [False, False, False, True, False, False, True, False]


def test_chain_layout_and_stage_specific_groups():
    layout = chain_layout(8, 16, 3, (2, 5))
    assert [x[0] for x in layout] == [16, 16, 32, 32, 32, 64, 64, 64]
    assert layout[0][3:] == (48, 48) and layout[1][3:] == (48, 64) and layout[3][3:] == (64, 128)
    space = SearchSpace(cells="stage_specific")
    assert [space.cell_group(i) for i in range(8)] == [
        "normal1", "normal1", "reduce1", "normal2", "normal2", "reduce2", "normal3", "normal3"]


def test_tiny_chain_supernet_forward_and_arch_gradient():
    space = SearchSpace(layers=3, init_channels=2, num_classes=3, cell_ops=("max_pool_3x3", "skip_connect",
                                                                         "sep_conv_3x3", "none"))
    net = ChainSupernet(space)
    arch = {name: tf.Variable(rand(*shape, seed=13) * 1e-3) for name, shape in space.arch_shapes().items()}
    with tf.GradientTape() as tape:
        logits = net(tf.constant(rand(2, 8, 8, 3, seed=14)), arch, training=True)
        loss = tf.reduce_sum(logits ** 2)
    assert logits.shape == (2, 3)
    grads = tape.gradient(loss, list(arch.values()))
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def test_num_arch_params():
    assert SearchSpace(layers=8, init_channels=16, num_classes=10).num_arch_params() == 224
    assert SearchSpace(cells="stage_specific").num_arch_params() == 560
    assert SearchSpace().arch_shapes() == {"alpha_normal": (14, 8), "alpha_reduce": (14, 8)}


def test_search_space_sizes():
    assert round(log10_cell_level_size(SearchSpace())) == 18
    assert round(log10_cell_level_size(SearchSpace(cells="stage_specific"))) == 45
    # One cell: Π_i C(i+2, 2) · 7² = 1·3·6·10 · 7⁸.
    assert log10_cell_space() == pytest.approx(np.log10(180 * 7 ** 8))


@pytest.mark.parametrize("kwargs,match", [
    (dict(cells="bogus"), "bogus"),
    (dict(stage="tree"), "tree"),
    (dict(cell_ops=("max_pool_3x3", "conv_7x7")), "conv_7x7"),
    (dict(stage_ops=("skip_connect", "sep_conv_3x3")), "sep_conv_3x3"),
    (dict(cell_ops=()), "cell_ops"),
    (dict(cell_ops=("skip_connect", "skip_connect")), "duplicate"),
    (dict(layers=2), "layers"),
    (dict(max_cells=3, min_cells=4), "min_cells"),
])
def test_search_space_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace(**kwargs)

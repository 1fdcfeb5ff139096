"""Tests of the evaluation networks (chain and stage, CIFAR and ImageNet layouts) and of MAC/parameter counting.

Exact facts: the published DARTS parameter counts, the auxiliary head counted by hand, MACs counted by hand
and by an independent walk over the traced TF graph, stage output grids, dead cells, `.keras` round trips.
Big networks are only built from shapes (no forward pass); forward passes use C=4 and few cells.
"""

import inspect
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn.cells import FixedCell
from hdas_tf.nn.eval_networks import (
    AuxiliaryHead,
    ChainNetwork,
    ConvBN,
    StageNetwork,
    build_eval_network,
    check_auxiliary_fits,
    drop_path_rate_at,
)
from hdas_tf.space.genotypes import Genotype
from hdas_tf.space.registry import REGISTRY
from hdas_tf.nn.macs import count_macs, count_params, layer_macs

DARTS_V2 = REGISTRY["DARTS_V2"]


def aux_params_by_hand(c_in, classes, layout="cifar"):
    """1×1 conv c_in·128 + BN(128) γβ + 2×2 conv 128·768·4 + BN(768) γβ (CIFAR only) + dense 768·classes + bias."""
    params = c_in * 128 + 2 * 128 + 128 * 768 * 4 + 768 * classes + classes
    return params + (2 * 768 if layout == "cifar" else 0)


# Four-node cells with few convolutions (every op kind once or more): stage networks stay quick to build and run.
LIGHT = Genotype.from_dict({"name": "light", "cells": {
    "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["skip_connect", 0], ["skip_connect", 1]],
               [["skip_connect", 0], ["max_pool_3x3", 2]], [["dil_conv_3x3", 1], ["avg_pool_3x3", 2]]],
    "reduce": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]], [["skip_connect", 2], ["max_pool_3x3", 1]],
               [["avg_pool_3x3", 0], ["skip_connect", 2]], [["skip_connect", 2], ["sep_conv_3x3", 1]]]}})


def small_stage_genotype(dead=None, cells=LIGHT):
    """A DAG per stage: two live cells; ``dead=False`` adds a live third cell, ``dead=True`` a third cell
    (state 3 = cell 1) that feeds nobody."""
    dag = [[["skip_connect", 0], ["skip_connect", 1]], [["avg_pool_3x3", 0], ["skip_connect", 2]]]
    if dead is None:
        concat = [2, 3]
    else:
        dag.append([["skip_connect", 2], ["max_pool_3x3", 1]] if dead else [["skip_connect", 2], ["max_pool_3x3", 3]])
        concat = [2, 4]
    doc = cells.to_dict()
    doc["stages"] = [{"cells": dag, "concat": concat}] * 3
    doc["name"] = "small_stage"
    return Genotype.from_dict(doc)


def images(n=2, size=32, seed=0):
    return np.random.RandomState(seed).rand(n, size, size, 3).astype("float32")


# === published parameter counts (build from shapes only) ===


def test_darts_v2_cifar_parameter_count_and_aux_head_by_hand():
    net = ChainNetwork(DARTS_V2, 10, 36, 20, layout="cifar", pool_bn=False)
    net.build((None, 32, 32, 3))
    # The published DARTS (second order) CIFAR-10 figure.
    assert count_params(net) == 3_349_342
    # Aux head reads the second reduction cell's output: 4·(4C) = 576 channels.
    assert net.cells[net.aux_index].output_channels == 16 * 36
    assert count_params(net, include_aux=True) - count_params(net) == aux_params_by_hand(576, 10) == 476_426
    # Regression value of this counter (cross-checked against the traced graph at small size below).
    assert count_macs(net) == 528_359_040


def test_darts_v2_imagenet_parameter_count():
    net = ChainNetwork(DARTS_V2, 1000, 48, 14, layout="imagenet", pool_bn=False)
    net.build((None, 224, 224, 3))
    # DARTS paper, ImageNet mobile setting: 4.7 M parameters.
    assert count_params(net) == 4_718_752
    assert count_params(net, include_aux=True) - count_params(net) == aux_params_by_hand(768, 1000, "imagenet")
    # 530 M: conv + dense only; the paper reports 574 M mult-adds counted some other way
    # (BUILD_NOTES "Evaluation networks and training recipes").
    assert count_macs(net) == 529_911_552


# --- Parameters counted by hand from the shapes (independent of the network code) ---
# Evaluation networks: every BN affine (γ, β: 2 per channel), no conv bias, 4-node cells with all nodes in the
# concat (4C out). With --pool_bn the BN after each pooling op is affine too: 2·C more per pooling edge.


def op_params_by_hand(op, c, stride, pool_bn):
    if op.startswith("sep_conv"):  # two blocks: depthwise k·k·C, 1×1 C·C, BN
        k = int(op[-1])
        return 2 * (k * k * c + c * c + 2 * c)
    if op.startswith("dil_conv"):  # one block
        k = int(op[-1])
        return k * k * c + c * c + 2 * c
    if op == "skip_connect":  # identity, or FactorizedReduce at stride 2: two 1×1 C → C/2, BN
        return 0 if stride == 1 else 2 * c * (c // 2) + 2 * c
    assert op in ("max_pool_3x3", "avg_pool_3x3"), op
    return 2 * c if pool_bn else 0


def cell_params_by_hand(cell, c, c_pp, c_p, reduction, reduction_prev, pool_bn):
    pre0 = (2 * c_pp * (c // 2) if reduction_prev else c_pp * c) + 2 * c  # FactorizedReduce or 1×1, BN
    pre1 = c_p * c + 2 * c
    edges = sum(op_params_by_hand(op, c, 2 if reduction and src < 2 else 1, pool_bn)
                for node in cell.nodes for op, src in node)
    return pre0 + pre1 + edges


def chain_params_by_hand(genotype, c, layers, classes, pool_bn):
    """CIFAR chain network without the aux head: stem 3×3 conv 3 → 3C + BN; cell i reads (C_pp, C_p); C doubles
    at the reductions L//3 and 2L//3; stage-position cells normal1, reduce1, normal2, reduce2, normal3; GAP →
    dense with bias."""
    r1, r2 = layers // 3, 2 * layers // 3
    total = 3 * 3 * 3 * 3 * c + 2 * 3 * c
    c_pp = c_p = 3 * c
    reduction_prev = False
    for i in range(layers):
        reduction = i in (r1, r2)
        if reduction:
            c *= 2
        group = ("normal1" if i < r1 else "reduce1" if i == r1 else "normal2" if i < r2 else "reduce2" if i == r2
                 else "normal3")
        cell = genotype.cell_for(group)
        total += cell_params_by_hand(cell, c, c_pp, c_p, reduction, reduction_prev, pool_bn)
        c_pp, c_p, reduction_prev = c_p, len(cell.concat) * c, reduction
    return total + c_p * classes + classes


def live_stage_cells(dag):
    """Cells with a path to the stage's concat states (state t >= 2 is cell t − 2)."""
    live, todo = set(), [t for t in dag.concat if t >= 2]
    while todo:
        j = todo.pop() - 2
        if j not in live:
            live.add(j)
            todo += [src for _, src in dag.cells[j] if src >= 2]
    return sorted(live)


def stage_params_by_hand(genotype, c, classes, pool_bn):
    """CIFAR stage network without the aux head: stem 3×3 conv 3 → 4C + BN; stage s at C_s = 2^s·C with states
    of width W = 4·C_s: the projections read (1×1 W_in → W + BN), a pooling stage edge 2·W (its BN, with
    --pool_bn), each live cell reading W as both inputs; reduction cells at 2·C_s read the stage output
    (2·W) as both inputs; GAP → dense on 32C."""
    total = 3 * 3 * 3 * 4 * c + 2 * 4 * c
    w_in = 4 * c
    for s in range(3):
        c_s, dag = c * 2 ** s, genotype.stage_for(s)
        w = 4 * c_s
        live = live_stage_cells(dag)
        read = set(dag.concat) | {src for j in live for _, src in dag.cells[j]}
        total += sum(w_in * w + 2 * w for i in (0, 1) if i in read)
        for j in live:
            total += sum(2 * w for op, _ in dag.cells[j] if op.endswith("pool_3x3") and pool_bn)
            total += cell_params_by_hand(genotype.cell_for(f"normal{s + 1}"), c_s, w, w, False, False, pool_bn)
        if s < 2:
            total += cell_params_by_hand(genotype.cell_for(f"reduce{s + 1}"), 2 * c_s, 2 * w, 2 * w, True, False,
                                         pool_bn)
            w_in = 4 * 2 * c_s
    return total + 32 * c * classes + classes


def test_darts_v2_published_count_validates_the_hand_count():
    # The hand count reproduces the published DARTS figure (no pooling BN) before it is trusted below.
    assert chain_params_by_hand(DARTS_V2, 36, 20, 10, pool_bn=False) == 3_349_342


@pytest.mark.parametrize("name, pool_edges", [
    # DARTS_V2: 5 max-pool edges in each reduction cell, at C = 72 (cell 6) and 144 (cell 13).
    ("DARTS_V2", 2 * 5 * 72 + 2 * 5 * 144),
    # HC_DAS: reduce1 has 3 max-pool edges (C = 72), reduce2 has 4 (C = 144); no normal cell pools.
    ("HC_DAS", 2 * 3 * 72 + 2 * 4 * 144),
])
def test_chain_cifar_counts_with_and_without_pool_bn_by_hand(name, pool_edges):
    genotype = REGISTRY[name]
    counts = {}
    for pool_bn in (False, True):
        net = ChainNetwork(genotype, 10, 36, 20, pool_bn=pool_bn, drop_path=False)
        net.build((None, 32, 32, 3))
        counts[pool_bn] = count_params(net)
        assert counts[pool_bn] == chain_params_by_hand(genotype, 36, 20, 10, pool_bn)
    # Exactly 2 per channel of every pooling BN.
    assert counts[True] - counts[False] == pool_edges
    if name == "DARTS_V2":
        assert counts[True] == 3_349_342 + 2_160 == 3_351_502


def test_darts_v2_imagenet_pool_bn_adds_two_per_pooling_channel():
    # ImageNet, C = 48, L = 14: reductions at cells 4 (C = 96) and 9 (C = 192), 5 max-pool edges each.
    counts = []
    for pool_bn in (False, True):
        net = ChainNetwork(DARTS_V2, 1000, 48, 14, layout="imagenet", pool_bn=pool_bn, drop_path=False)
        net.build((None, 224, 224, 3))
        counts.append(count_params(net))
    assert counts[1] - counts[0] == 2 * 5 * 96 + 2 * 5 * 192 == 2_880


def test_stage_network_cifar_counts_with_and_without_pool_bn_by_hand():
    genotype = DARTS_V2.with_stages(REGISTRY["HS_DAS_CIFAR"])
    counts = {}
    for pool_bn in (False, True):
        net = StageNetwork(genotype, 10, 36, pool_bn=pool_bn, drop_path=False)
        net.build((None, 32, 32, 3))
        counts[pool_bn] = count_params(net)
        assert counts[pool_bn] == stage_params_by_hand(genotype, 36, 10, pool_bn)
    # Every cell of HS_DAS_CIFAR is live. Pooling stage edges: 4 in stage 1 (W = 144), 5 in stage 2 (W = 288),
    # 4 in stage 3 (W = 576); DARTS_V2 normal cells have none; each reduction cell 5 (C = 72, 144).
    stage_edges = 2 * 4 * 144 + 2 * 5 * 288 + 2 * 4 * 576
    reductions = 2 * 5 * 72 + 2 * 5 * 144
    assert counts[True] - counts[False] == stage_edges + reductions == 10_800


def test_pool_bn_false_builds_no_pooling_bn():
    counts = []
    for pool_bn in (False, True):
        net = ChainNetwork(DARTS_V2, 10, 8, 3, pool_bn=pool_bn, auxiliary=False, drop_path=False)
        net.build((None, 32, 32, 3))
        counts.append((count_params(net), len(net.non_trainable_weights)))
    # L = 3: cells 1 (C = 16) and 2 (C = 32) reduce, 5 max-pool edges each: γ, β and the two moving statistics.
    assert counts[1][0] - counts[0][0] == 2 * 5 * 16 + 2 * 5 * 32
    assert counts[1][1] - counts[0][1] == 2 * 5 * 2


# === auxiliary head, drop path ===


def test_aux_head_only_in_training():
    net = ChainNetwork(DARTS_V2, 7, 4, 3, input_shape=(32, 32, 3))
    x = images()
    out = net(x, training=False)
    assert isinstance(out, tf.Tensor) and out.shape == (2, 7)
    logits, aux_logits = net(x, training=True)
    assert logits.shape == (2, 7) and aux_logits.shape == (2, 7)
    assert net.compute_output_shape((2, 32, 32, 3)) == (2, 7)
    # Without the head, training returns the logits alone.
    plain = ChainNetwork(DARTS_V2, 7, 4, 3, auxiliary=False, input_shape=(32, 32, 3))
    assert isinstance(plain(x, training=True), tf.Tensor)
    assert plain.auxiliary_head is None


def test_aux_head_layers_and_grid():
    cifar = AuxiliaryHead(10, "cifar")
    cifar.build((None, 8, 8, 16))
    # 8×8 → 5×5 pool stride 3 → 2×2 → 2×2 conv → 1×1 → 768 features.
    assert cifar.classifier.kernel.shape == (768, 10)
    assert cifar.bn_2 is not None
    imagenet = AuxiliaryHead(10, "imagenet")
    imagenet.build((None, 7, 7, 16))
    assert imagenet.bn_2 is None and imagenet.classifier.kernel.shape == (768, 10)
    y = imagenet(tf.random.normal((3, 7, 7, 16)), training=True)
    assert y.shape == (3, 10)
    with pytest.raises(ValueError, match="too small"):
        AuxiliaryHead(10, "cifar").build((None, 4, 4, 16))


@pytest.mark.parametrize("layout, sides", [("cifar", (16, 22, 28, 29)), ("imagenet", (128, 192, 193, 224))])
def test_auxiliary_fit_known_before_the_network_is_built(layout, sides):
    """The check a run makes before writing anything agrees with building the network: CIFAR needs 8 pixels
    after two ceil-halvings (28 → 14 → 7 is short, 29 → 15 → 8 fits); ImageNet 7 after five (192 → 6,
    193 → 7)."""
    for side in sides:
        try:
            check_auxiliary_fits(layout, (side, side, 3))
            predicted = True
        except ValueError:
            predicted = False
        try:
            ChainNetwork(DARTS_V2, 10, 4, 5, layout=layout, input_shape=(side, side, 3))
            built = True
        except ValueError as e:
            assert "too small" in str(e)
            built = False
        assert predicted == built, side
        assert predicted == (side in (29, 193, 224)), side


def test_drop_path_statistics():
    rate = 0.3
    x = tf.ones((1000, 2, 2, 3))
    dp = ops.DropPath(seed=1234)
    y = dp(x, tf.constant(rate), training=True).numpy().reshape(1000, -1)
    dropped = (y == 0).all(axis=1)
    # Whole examples are dropped, never parts of one; survivors are scaled by 1/keep.
    assert np.all(dropped | np.isclose(y, 1 / (1 - rate)).all(axis=1))
    assert abs(dropped.mean() - rate) < 0.05
    np.testing.assert_array_equal(dp(x, tf.constant(rate), training=False).numpy(), x.numpy())


def test_drop_path_rate_ramp():
    assert drop_path_rate_at(0, 600, 0.2) == 0.0
    assert drop_path_rate_at(300, 600, 0.2) == pytest.approx(0.1)
    assert drop_path_rate_at(599, 600, 0.2) == pytest.approx(0.2 * 599 / 600)
    for bad in ((1, 0, 0.2), (1, 10, 1.0), (-1, 10, 0.2)):
        with pytest.raises(ValueError):
            drop_path_rate_at(*bad)


def test_network_drop_path_identity_at_inference_active_in_training():
    net = ChainNetwork(DARTS_V2, 5, 4, 3, auxiliary=False, input_shape=(32, 32, 3))
    assert net.drop_path_rate.trainable is False
    assert sum(d is not None for c in net.cells for d in c.drops) > 0
    x = images(8)
    clean_train = net(x, training=True).numpy()
    np.testing.assert_array_equal(net(x, training=True).numpy(), clean_train)  # rate 0: deterministic
    clean_eval = net(x, training=False).numpy()  # after the training calls: they move the BN statistics
    net.drop_path_rate.assign(0.9)
    np.testing.assert_array_equal(net(x, training=False).numpy(), clean_eval)
    assert not np.allclose(net(x, training=True).numpy(), clean_train)
    # Structural switch: no DropPath layers at all.
    off = ChainNetwork(DARTS_V2, 5, 4, 3, auxiliary=False, drop_path=False)
    assert all(d is None for c in off.cells for d in c.drops)


# === chain layout details ===


def test_chain_cells_follow_stage_positions():
    genotype = REGISTRY["HC_DAS"]
    net = ChainNetwork(genotype, 10, 4, 8, auxiliary=False)
    # L=8: reductions at 2 and 5.
    assert net.cell_groups == ["normal1", "normal1", "reduce1", "normal2", "normal2", "reduce2", "normal3",
                               "normal3"]
    for cell, group in zip(net.cells, net.cell_groups):
        assert cell.nodes == [[list(e) for e in node] for node in genotype.cell_for(group).nodes]
        assert cell.reduction == group.startswith("reduce")
    assert [c.reduction_prev for c in net.cells] == [False, False, False, True, False, False, True, False]


def test_imagenet_chain_grid_and_first_cell_reduces_stem0():
    net = ChainNetwork(DARTS_V2, 10, 4, 5, layout="imagenet", auxiliary=False)
    assert net.cells[0].reduction_prev and isinstance(net.cells[0].preprocess0, ops.FactorizedReduce)
    net.build((None, 224, 224, 3))
    shape = (1, 224, 224, 3)
    grids = []
    for layer in net.stem:
        shape = layer.compute_output_shape(shape)
        grids.append(shape[1:])
    assert grids == [(112, 112, 2), (56, 56, 4), (28, 28, 4)]
    s0, s1 = grids[1], grids[2]
    s0, s1 = (1, *s0), (1, *s1)
    cell_grids = []
    for cell in net.cells:
        s0, s1 = s1, cell.compute_output_shape(s0, s1)
        cell_grids.append(s1[1])
    assert cell_grids == [28, 14, 14, 7, 7]
    y = net(np.zeros((1, 224, 224, 3), "float32"))
    assert y.shape == (1, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        ChainNetwork(DARTS_V2, 10, 4, 5, layout="svhn")
    with pytest.raises(ValueError, match="layers"):
        ChainNetwork(DARTS_V2, 10, 4, 2)
    with pytest.raises(ValueError, match="num_classes"):
        ChainNetwork(DARTS_V2, 0, 4, 5)
    with pytest.raises(ValueError, match="no cells"):
        ChainNetwork(REGISTRY["HS_DAS_CIFAR"], 10, 4, 5)
    with pytest.raises(ValueError, match="no stage DAGs"):
        StageNetwork(DARTS_V2, 10, 4)
    with pytest.raises(ValueError, match="genotype"):
        ChainNetwork(42, 10, 4, 5)
    with pytest.raises(ValueError, match="even init_channels"):
        ChainNetwork(DARTS_V2, 10, 5, 5, layout="imagenet")


# === stage network ===


def _stage_grids(net, x):
    """Eager walk of the stage network's layers in call order: per-stage outputs."""
    outs = []
    for layer in net.stem:
        x = layer(x)
    for s, stage in enumerate(net.stages):
        x = stage(x)
        outs.append(tuple(x.shape))
        if s < 2:
            x = net.reductions[s](x, x)
    return outs


def test_stage_network_grids_cifar():
    c = 4
    net = StageNetwork(small_stage_genotype(), 10, c, layout="cifar", input_shape=(32, 32, 3))
    x = images(2, 32)
    # Stage s: width C_s = 2^s·C, output concat of two 4·C_s states.
    assert _stage_grids(net, x) == [(2, 32, 32, 8 * c), (2, 16, 16, 16 * c), (2, 8, 8, 32 * c)]
    logits, aux = net(x, training=True)
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    assert net(x).shape == (2, 10)
    assert net.classifier.kernel.shape == (32 * c, 10)
    assert net.stem[0].filters == 4 * c


def test_stage_network_grids_imagenet():
    c = 4
    net = StageNetwork(small_stage_genotype(), 10, c, layout="imagenet", input_shape=(224, 224, 3))
    assert [layer.filters for layer in net.stem] == [c // 2, c, 4 * c]
    assert _stage_grids(net, np.zeros((1, 224, 224, 3), "float32")) == [
        (1, 28, 28, 8 * c), (1, 14, 14, 16 * c), (1, 7, 7, 32 * c)]


def test_stage_network_dead_cells_not_built():
    live = StageNetwork(small_stage_genotype(dead=False), 10, 4, auxiliary=False, input_shape=(32, 32, 3))
    dead = StageNetwork(small_stage_genotype(dead=True), 10, 4, auxiliary=False, input_shape=(32, 32, 3))

    def stage_cells(stage):
        return [layer for layer in stage._flatten_layers(include_self=False) if isinstance(layer, FixedCell)]

    for s in range(3):
        assert len(stage_cells(live.stages[s])) == 3
        assert len(stage_cells(dead.stages[s])) == 2
        assert dead.stages[s].dead_cells == [1]
    # Per stage: one cell's parameters fewer, and the affine BN of its avg-pool stage edge (2·W, W = 4·C_s = 16,
    # 32, 64); the third cell's max-pool edge is built in both.
    one_cell = sum(count_params_of(stage_cells(live.stages[s])[1]) for s in range(3))
    assert count_params(live) - count_params(dead) == one_cell + 2 * (16 + 32 + 64)
    assert dead(images(1)).shape == (1, 10)


def count_params_of(layer):
    return sum(math.prod(v.shape) for v in layer.trainable_weights)


def test_stage_network_takes_cells_per_stage_and_reductions_from_genotype():
    genotype = REGISTRY["HC_DAS"].with_stages(small_stage_genotype(dead=False))
    net = StageNetwork(genotype, 10, 4, auxiliary=False)
    assert net.stage_lengths == (3, 3, 3)
    for s, stage in enumerate(net.stages):
        assert stage.cell["nodes"] == [[list(e) for e in node] for node in genotype.cell_for(f"normal{s + 1}").nodes]
        assert stage.channels == 4 * 2 ** s
    for r, cell in enumerate(net.reductions):
        assert cell.reduction and not cell.reduction_prev
        assert cell.channels == 4 * 2 ** (r + 1)
        assert cell.nodes == [[list(e) for e in node] for node in genotype.cell_for(f"reduce{r + 1}").nodes]


def test_build_eval_network_dispatch():
    assert isinstance(build_eval_network(DARTS_V2, 10, 4, 5), ChainNetwork)
    stage_net = build_eval_network(small_stage_genotype(), 10, 4, 8)  # 3 stages of 2 cells + 2 reductions
    assert isinstance(stage_net, StageNetwork)
    with pytest.warns(UserWarning, match="layers=20"):
        build_eval_network(small_stage_genotype(), 10, 4, 20)
    # Stage lengths without DAGs (a cell-distribution result): chain stages of those lengths.
    lengths = Genotype(cells=dict(LIGHT.cells), stage_lengths=(1, 2, 1), name="dist")
    net = build_eval_network(lengths, 10, 4, None)
    assert isinstance(net, StageNetwork) and net.stage_lengths == (1, 2, 1)


# === config and .keras round trips ===


@pytest.mark.parametrize("cls", [ChainNetwork, StageNetwork])
def test_get_config_lists_every_constructor_argument(cls):
    genotype = DARTS_V2 if cls is ChainNetwork else small_stage_genotype()
    net = cls(genotype, 10, 4, 3) if cls is ChainNetwork else cls(genotype, 10, 4)
    config = net.get_config()
    for name in inspect.signature(cls.__init__).parameters:
        if name not in ("self", "kwargs"):
            assert name in config, name
    assert Genotype.from_dict(config["genotype"]) == genotype
    clone = cls.from_config(config)
    assert clone.get_config() == config


def _round_trip(net, x, tmp_path):
    net(x, training=True)  # move the BN statistics off their initial values
    net.drop_path_rate.assign(0.125)
    path = str(tmp_path / "net.keras")
    keras.saving.save_model(net, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(net)
    assert float(loaded.drop_path_rate.numpy()) == 0.125
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), net(x, training=False).numpy())
    assert loaded.get_config() == net.get_config()
    return loaded


def test_chain_network_keras_round_trip(tmp_path):
    net = ChainNetwork(DARTS_V2, 10, 4, 3, input_shape=(32, 32, 3))
    _round_trip(net, images(2), tmp_path)


def test_stage_network_keras_round_trip(tmp_path):
    net = StageNetwork(small_stage_genotype(dead=True), 10, 4, input_shape=(32, 32, 3))
    _round_trip(net, images(2), tmp_path)


# === MACs ===


def test_layer_macs_by_hand():
    conv = ConvBN(8, 3, 2)
    assert layer_macs(conv, (1, 32, 32, 3)) == (9 * 3 * 8 * 16 * 16, (1, 16, 16, 8))
    sep = ops.SepConv(8, 3, 2)
    block = 9 * 8 * 64 + 8 * 8 * 64  # depthwise + pointwise at the 8×8 output
    assert layer_macs(sep, (1, 16, 16, 8)) == (2 * block, (1, 8, 8, 8))
    dil = ops.DilConv(8, 5, 1)
    assert layer_macs(dil, (1, 8, 8, 8))[0] == 25 * 8 * 64 + 8 * 8 * 64
    assert layer_macs(ops.FactorizedReduce(16), (1, 8, 8, 4))[0] == 2 * 4 * 8 * 16
    assert layer_macs(ops.make_op("max_pool_3x3", 8, 2), (1, 8, 8, 8)) == (0, (1, 4, 4, 8))
    dense = keras.layers.Dense(10)
    assert layer_macs(dense, (1, 64))[0] == 640


def test_count_macs_tiny_network_by_hand():
    # One node per cell, only parameter-free edges: the MACs are the stem, preprocessing and classifier.
    genotype = Genotype.from_dict({"cells": {
        "normal": {"nodes": [[["skip_connect", 0], ["skip_connect", 1]]], "concat": [2]},
        "reduce": {"nodes": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]]], "concat": [2]}}})
    net = ChainNetwork(genotype, 10, 4, 3, auxiliary=False)  # cells: normal C=4, reduce C=8, reduce C=16
    stem = 3 * 3 * 3 * 12 * 64                 # 3×3 conv 3 → 12 at 8×8
    cell0 = 12 * 4 * 64 + 12 * 4 * 64          # two 1×1 convs 12 → 4 at 8×8
    cell1 = 12 * 8 * 64 + 4 * 8 * 64           # s0 = stem (12), s1 = cell0 (4) → 8 at 8×8
    cell2 = 2 * 4 * 8 * 16 + 8 * 16 * 16       # FactorizedReduce 4 → 16 at 4×4; 1×1 8 → 16 at 4×4
    classifier = 16 * 10
    assert count_macs(net, (8, 8, 3)) == stem + cell0 + cell1 + cell2 + classifier == 38_304


def graph_macs(model, image_shape):
    """Independent count: trace the inference call and add up every Conv2D / depthwise / MatMul in the graph."""
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, *image_shape), tf.float32)).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative", "HdasDepthwiseConv2d"):  # TF's depthwise or hdas_tf's
            out, kernel = op.outputs[0].shape, op.inputs[1].shape
            # Conv: k·k·C_in·C_out per output position; depthwise [k, k, C, 1]: k·k·C per position.
            macs = out[0] * out[1] * out[2] * math.prod(kernel)
            if op.type == "Conv2D" and tuple(kernel[:2]) == (2, 2) and op.get_attr("strides")[1] == 2:
                # FactorizedReduce's two strided 1×1 convs run as one dense 2×2 conv in which each output
                # half has one non-zero tap of four: the model's MACs are a quarter of the dense ones.
                macs //= 4
            total += macs
        elif op.type in ("MatMul", "BatchMatMulV2"):
            # [..., C_in] × [C_in, C_out]: C_in·C_out per row of the left operand (the 1×1 convs and the head).
            a, b = op.inputs[0].shape, op.inputs[1].shape
            total += math.prod(a[:-1]) * a[-1] * b[-1]
    return total


@pytest.mark.parametrize("make, image_shape", [
    (lambda: ChainNetwork(DARTS_V2, 10, 4, 5, auxiliary=False), (32, 32, 3)),
    (lambda: ChainNetwork(REGISTRY["PC_DARTS"], 10, 4, 3, layout="imagenet", auxiliary=False), (64, 64, 3)),
    (lambda: StageNetwork(small_stage_genotype(dead=True), 10, 4, auxiliary=False), (32, 32, 3)),
])
def test_count_macs_matches_traced_graph(make, image_shape):
    # Strided dilated convolutions run on the even sub-grid (convolutions.torch_depthwise_conv2d), so the traced
    # graph does exactly the analytic (PyTorch-grid) work.
    net = make()
    net.build((None, *image_shape))
    assert count_macs(net, image_shape) == graph_macs(net, image_shape)


def test_count_params_builds_from_default_shape():
    net = ChainNetwork(DARTS_V2, 10, 4, 5)
    assert not net.built
    n = count_params(net)
    aux = {id(v) for v in net.auxiliary_head.trainable_weights}
    assert net.built and n == sum(math.prod(v.shape) for v in net.trainable_weights if id(v) not in aux)

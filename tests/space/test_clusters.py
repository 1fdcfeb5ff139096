"""StacNAS mode: operator clusters, the stage-1 → stage-2 hand-off, per-edge op sets in the search space, the
search cell and the chain supernet, and masked genotype parsing (BUILD_NOTES "StacNAS operator clusters")."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.space import clusters as C
from hdas_tf.nn.cells import SearchCell
from hdas_tf.space.derive import parse_cell_alphas
from hdas_tf.nn.supernets import ChainSupernet
from hdas_tf.space.op_registry import CELL_OPS
from hdas_tf.space.search_space import (SearchSpace, log10_cell_level_size, log10_cell_space, log10_cell_space_per_edge,
                                  space_from_config, space_to_config)

EDGES = 14


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# === clusters ===

def test_default_clusters_and_stage1_op_set():
    assert [c.name for c in C.DEFAULT_CLUSTERS] == ["pooling", "skip", "separable", "dilated"]
    assert C.validate_clusters(C.DEFAULT_CLUSTERS) == C.DEFAULT_CLUSTERS
    # Every op but 'none' is in exactly one cluster.
    members = [op for c in C.DEFAULT_CLUSTERS for op in c.ops]
    assert sorted(members) == sorted(o for o in CELL_OPS if o != "none")
    assert C.representative_ops(C.DEFAULT_CLUSTERS) == ("max_pool_3x3", "skip_connect", "sep_conv_3x3",
                                                        "dil_conv_3x3", "none")


@pytest.mark.parametrize("bad,message", [
    ([C.Cluster("a", ("max_pool_3x3", "conv_7x7"))], "unknown op 'conv_7x7'"),
    ([C.Cluster("a", ("max_pool_3x3", "none"))], "lists 'none'"),
    ([C.Cluster("a", ("max_pool_3x3",)), C.Cluster("b", ("max_pool_3x3", "skip_connect"))],
     "'max_pool_3x3' is in both cluster 'a' and 'b'"),
    ([C.Cluster("a", ())], "cluster 'a' has no ops"),
    ([C.Cluster("a", ("max_pool_3x3",), "avg_pool_3x3")], "representative 'avg_pool_3x3' of cluster 'a'"),
    ([C.Cluster("a", ("max_pool_3x3",)), C.Cluster("a", ("skip_connect",))], "'a' appears twice"),
    ([], "no clusters"),
])
def test_bad_cluster_sets_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        C.validate_clusters(bad)


def test_clusters_file_round_trip_and_errors(tmp_path):
    custom = (C.Cluster("pool", ("max_pool_3x3", "avg_pool_3x3"), "avg_pool_3x3"),
              C.Cluster("conv", ("sep_conv_3x3", "dil_conv_3x3")))
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps(C.clusters_to_dict(custom)))
    loaded = C.load_clusters(path)
    assert loaded == custom
    assert C.representative_ops(loaded) == ("avg_pool_3x3", "sep_conv_3x3", "none")
    # The representative is optional in a file: the first op stands for the cluster.
    path.write_text(json.dumps({"clusters": [{"name": "conv", "ops": ["dil_conv_5x5", "sep_conv_5x5"]}]}))
    assert C.load_clusters(path)[0].representative == "dil_conv_5x5"
    for doc, message in [({"format": "other/1", "clusters": []}, "unsupported format"),
                         ({"clusters": [{"name": "x"}]}, "cluster #0 must be an object"),
                         ({"clusters": [{"name": "x", "ops": ["skip_connect"], "rep": "skip_connect"}]},
                          "unknown keys"),
                         ([], "expected a JSON object")]:
        path.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=message):
            C.load_clusters(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read clusters file"):
        C.load_clusters(path)
    with pytest.raises(ValueError, match="does not exist"):
        C.load_clusters(tmp_path / "missing.json")


# === the hand-off ===

def stage1_alphas(winners, ops=C.representative_ops(C.DEFAULT_CLUSTERS), none_value=9.0, seed=0):
    """α [edges, ops] whose argmax non-'none' op on edge k is ``winners[k]``, with 'none' larger still."""
    a = np.random.default_rng(seed).uniform(-1, 0, size=(len(winners), len(ops)))
    for k, w in enumerate(winners):
        a[k, ops.index(w)] = 1.0 + k / 100
        a[k, ops.index("none")] = none_value  # never a cluster: ignored by the choice
    return a


def test_derive_edge_clusters_takes_the_strongest_representative_per_edge():
    ops = C.representative_ops(C.DEFAULT_CLUSTERS)
    reps = ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]
    normal = [reps[k % 4] for k in range(EDGES)]
    reduce = [reps[(k * 3 + 1) % 4] for k in range(EDGES)]
    arch = {"alpha_normal": stage1_alphas(normal), "alpha_reduce": stage1_alphas(reduce, seed=1)}
    hand_off = C.derive_edge_clusters(arch, C.DEFAULT_CLUSTERS, ops, ("normal", "reduce"))
    name = {c.representative: c.name for c in C.DEFAULT_CLUSTERS}
    assert dict(hand_off.cells) == {"normal": tuple(name[r] for r in normal), "reduce": tuple(name[r] for r in reduce)}
    # A tie goes to the lower column (canonical op order).
    tie = np.zeros((EDGES, len(ops)))
    tied = C.derive_edge_clusters({"alpha_normal": tie}, C.DEFAULT_CLUSTERS, ops, ("normal",))
    assert dict(tied.cells)["normal"] == ("pooling",) * EDGES
    with pytest.raises(ValueError, match="not the clusters' representatives"):
        C.derive_edge_clusters(arch, C.DEFAULT_CLUSTERS, CELL_OPS, ("normal",))
    with pytest.raises(ValueError, match="expected shape"):
        C.derive_edge_clusters({"alpha_normal": tie[:5]}, C.DEFAULT_CLUSTERS, ops, ("normal",))
    tie[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        C.derive_edge_clusters({"alpha_normal": tie}, C.DEFAULT_CLUSTERS, ops, ("normal",))


def test_edge_clusters_document_round_trip_and_stage2_op_sets(tmp_path):
    names = ("separable", "skip", "pooling", "dilated") * 3 + ("skip", "separable")
    hand_off = C.EdgeClusters(C.DEFAULT_CLUSTERS, 4, (("normal", names), ("reduce", names[::-1])))
    path = tmp_path / "edge_clusters.json"
    path.write_text(json.dumps(hand_off.to_dict()))
    assert C.EdgeClusters.load(path) == hand_off
    per_edge = dict(hand_off.edge_ops())["normal"]
    assert per_edge[:4] == (("sep_conv_3x3", "sep_conv_5x5", "none"), ("skip_connect", "none"),
                            ("max_pool_3x3", "avg_pool_3x3", "none"), ("dil_conv_3x3", "dil_conv_5x5", "none"))
    assert hand_off.op_union() == CELL_OPS
    only_skip = C.EdgeClusters(C.DEFAULT_CLUSTERS, 4, (("normal", ("skip",) * EDGES),))
    assert only_skip.op_union() == ("skip_connect", "none")

    doc = hand_off.to_dict()
    for change, message in [({"format": "hdas_tf.genotype/1"}, "format must be"),
                            ({"cells": {"normal": list(names[:13])}}, "has 13 edges"),
                            ({"cells": {"normal": ["conv"] * EDGES}}, "unknown cluster 'conv'"),
                            ({"cells": ["separable"]}, "'cells' must map"),
                            ({"steps": 0}, "steps must be a positive integer")]:
        path.write_text(json.dumps(doc | change))
        with pytest.raises(ValueError, match=message):
            C.EdgeClusters.load(path)
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "steps"}))
    with pytest.raises(ValueError, match=r"missing keys \['steps'\]"):
        C.EdgeClusters.load(path)


# === per-edge op sets in the search space ===

def stage2_space(normal, reduce, **kwargs):
    return SearchSpace(edge_ops={"reduce": reduce, "normal": normal}, **kwargs)


def test_search_space_edge_ops_are_checked_and_normalised():
    normal = [["none", "sep_conv_5x5", "sep_conv_3x3"]] + [["skip_connect", "none"]] * 13
    reduce = [["max_pool_3x3"]] * EDGES
    space = stage2_space(normal, reduce)
    assert [g for g, _ in space.edge_ops] == ["normal", "reduce"]  # cell_groups order
    assert space.edge_op_names("normal")[0] == ("sep_conv_3x3", "sep_conv_5x5", "none")  # cell_ops order
    mask = space.op_mask("normal")
    assert mask.shape == (EDGES, 8) and mask.sum() == 3 + 13 * 2
    assert list(np.flatnonzero(mask[0])) == [3, 4, 7]
    assert SearchSpace().edge_op_names("normal") == (CELL_OPS,) * EDGES and SearchSpace().op_mask("reduce").all()
    # Through JSON and back.
    assert space_from_config(json.loads(json.dumps(space_to_config(space)))) == space
    assert space_from_config(json.loads(json.dumps(space_to_config(SearchSpace())))) == SearchSpace()

    for kwargs, message in [
        (dict(edge_ops={"normal": normal}), r"groups \['normal'\] do not match"),
        (dict(edge_ops={"normal": normal[:5], "reduce": reduce}), "'normal'.: 5 edges"),
        (dict(edge_ops={"normal": [["none"]] + normal[1:], "reduce": reduce}), "edge 0: needs at least one op"),
        (dict(edge_ops={"normal": normal, "reduce": reduce}, cell_ops=("skip_connect", "max_pool_3x3", "none")),
         "edge 0: ops .*'sep_conv_3x3'.* are not in cell_ops"),
        (dict(edge_ops={"normal": normal, "reduce": reduce}, stage="shared"), "cell search"),
    ]:
        with pytest.raises(ValueError, match=message):
            SearchSpace(**kwargs)


def test_search_space_size_with_per_edge_op_sets():
    # Equal counts on every edge reproduce the uniform formula.
    assert log10_cell_space_per_edge(4, [7] * EDGES) == pytest.approx(log10_cell_space(4, 7))
    # By hand, 2 nodes (edges 0,1 | 2,3,4) with 1, 2 | 2, 1, 3 non-'none' ops: node 0 takes both edges
    # (1·2 = 2 ways), node 1 two of three (2·1 + 2·3 + 1·3 = 11 ways).
    assert log10_cell_space_per_edge(2, [1, 2, 2, 1, 3]) == pytest.approx(math.log10(2 * 11))
    normal = [["skip_connect", "none"]] * EDGES
    reduce = [["sep_conv_3x3", "sep_conv_5x5", "none"]] * EDGES
    # normal: one op per edge → C(i+2, 2) per node; reduce: two ops per edge → C(i+2, 2)·4.
    expected = sum(math.log10(math.comb(i + 2, 2)) for i in range(4)) * 2 + 4 * math.log10(4)
    assert log10_cell_level_size(stage2_space(normal, reduce)) == pytest.approx(expected)


# === search cell and supernet ===

def stage2_cell_ops(num_edges, seed=0):
    """Per edge a cluster's members (+ 'none' on some), cycling through every kind of op."""
    kinds = [("sep_conv_3x3", "sep_conv_5x5", "none"), ("skip_connect",), ("max_pool_3x3", "avg_pool_3x3", "none"),
             ("dil_conv_3x3", "dil_conv_5x5"), ("sep_conv_5x5", "none")]
    return [kinds[(k + seed) % len(kinds)] for k in range(num_edges)]


def copy_kernels(full, restricted):
    """Gives the restricted cell the full cell's kernels of the edges and ops it has."""
    for layer in ("preprocess0", "preprocess1"):
        for dst, src in zip(getattr(restricted, layer).weights, getattr(full, layer).weights, strict=True):
            dst.assign(src)
    for name, variables in restricted.kernels.items():
        if name == "skip_connect":
            rows = [full.strided_edges.index(k) for k in restricted.strided_edges]
        else:
            rows = [full.kernel_edges[name].index(k) for k in restricted.kernel_edges[name]]
        for dst, src in zip(variables, full.kernels[name], strict=True):
            dst.assign(tf.gather(src, rows))


@pytest.mark.parametrize("reduction,reduction_prev", [(False, False), (True, False), (True, True)])
def test_search_cell_with_edge_ops_equals_the_full_cell_with_zero_weights(reduction, reduction_prev):
    """An edge with its own op set computes exactly the full cell's edge with the other ops' weights at 0,
    and holds kernels for its own ops only (the full cell is checked op by op in test_cells)."""
    c, steps = 2, 3  # 9 edges
    edge_ops = stage2_cell_ops(2 + 3 + 4, seed=int(reduction) + 2 * int(reduction_prev))
    full = SearchCell(c, reduction, reduction_prev, CELL_OPS, steps=steps)
    cell = SearchCell(c, reduction, reduction_prev, CELL_OPS, steps=steps, edge_ops=edge_ops)
    size = 16 if reduction_prev else 8
    s0, s1 = tf.constant(rand(2, size, size, 3, seed=1)), tf.constant(rand(2, 8, 8, 5, seed=2))
    full(s0, s1, tf.ones((9, 8)) / 8, training=True)
    cell(s0, s1, tf.ones((9, 8)) / 8, training=True)
    copy_kernels(full, cell)
    mask = np.array([[o in ops for o in CELL_OPS] for ops in edge_ops])
    w = np.where(mask, np.random.default_rng(3).uniform(0.1, 1, size=mask.shape), 0).astype(np.float32)
    np.testing.assert_allclose(cell(s0, s1, tf.constant(w), training=True).numpy(),
                               full(s0, s1, tf.constant(w), training=True).numpy(), rtol=1e-5, atol=1e-5)

    # Exact parameter count: the preprocessing, then per edge the kernels of its own conv ops (and the strided
    # skip's FactorizedReduce on a reduction cell's input edges).
    per_op = {"sep_conv_3x3": 2 * (9 * c + c * c), "sep_conv_5x5": 2 * (25 * c + c * c),
              "dil_conv_3x3": 9 * c + c * c, "dil_conv_5x5": 25 * c + c * c}
    expected = sum(int(np.prod(v.shape)) for v in cell.preprocess0.weights + cell.preprocess1.weights)
    for k, ops in enumerate(edge_ops):
        expected += sum(per_op.get(o, 0) for o in ops)
        if "skip_connect" in ops and cell.edge_strides[k] == 2:
            expected += 2 * c * (c // 2)
    assert sum(int(np.prod(v.shape)) for v in cell.trainable_weights) == expected
    assert expected < sum(int(np.prod(v.shape)) for v in full.trainable_weights)
    restored = SearchCell.from_config(cell.get_config())
    assert restored.edge_ops == cell.edge_ops


def test_search_cell_rejects_bad_edge_ops():
    with pytest.raises(ValueError, match="edge_ops has 3 entries"):
        SearchCell(2, False, False, CELL_OPS, steps=2, edge_ops=[("skip_connect",)] * 3)
    with pytest.raises(ValueError, match=r"edge edge_0_1 lists ops \['sep_conv_3x3'\]"):
        SearchCell(2, False, False, ("skip_connect", "none"), steps=2,
                   edge_ops=[("skip_connect",), ("sep_conv_3x3",)] + [("skip_connect",)] * 3)


def test_chain_supernet_softmax_and_gradient_stay_inside_each_edge_op_set():
    normal = stage2_cell_ops(EDGES)
    reduce = stage2_cell_ops(EDGES, seed=2)
    space = stage2_space(normal, reduce, layers=3, init_channels=2)
    net = ChainSupernet(space)
    images = tf.constant(rand(2, 8, 8, 3, seed=4))
    arch = {f"alpha_{g}": tf.Variable(rand(EDGES, 8, seed=5 + n)) for n, g in enumerate(space.cell_groups)}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(images, arch, training=True) ** 2)
    grads = tape.gradient(loss, list(arch.values()))
    for (name, var), g in zip(arch.items(), grads):
        mask = space.op_mask(name[len("alpha_"):])
        w = net._softmax(var, name[len("alpha_"):]).numpy()
        assert np.all(w[~mask] == 0) and np.allclose(w.sum(axis=1), 1)
        # The softmax over an edge's own ops, by hand.
        a = var.numpy()
        row = np.exp(a[0][mask[0]]) / np.exp(a[0][mask[0]]).sum()
        np.testing.assert_allclose(w[0][mask[0]], row, rtol=1e-6)
        g = g.numpy()
        assert np.all(np.isfinite(g)) and np.all(g[~mask] == 0)
        assert np.count_nonzero(g[mask]) > mask.sum() // 2
    config = net.get_config()
    assert ChainSupernet.from_config(json.loads(json.dumps(config))).space == space


# === masked genotype parsing ===

def test_parse_with_op_mask_chooses_and_ranks_among_each_edges_own_ops():
    ops = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "none")
    # One node, two edges. Edge 0 may use sep_conv_3x3 and 'none' only; its max_pool α is the largest of all.
    a = np.array([[5.0, 5.0, 1.0, 0.0],
                  [0.0, 0.0, 1.2, 0.0]])
    mask = np.array([[False, False, True, True],
                     [True, True, True, True]])
    unmasked = parse_cell_alphas(a, ops, steps=1)
    assert unmasked.nodes[0] == (("sep_conv_3x3", 1), ("max_pool_3x3", 0))  # 0.52 > e^5/(2e^5 + e + 1) = 0.49
    cell = parse_cell_alphas(a, ops, steps=1, op_mask=mask)
    # Edge 0: softmax over {sep3, none} gives sep3 e/(e+1) = 0.73 > edge 1's e^1.2/(e^1.2+3) = 0.52, so it
    # ranks first; unmasked its sep3 would not have been chosen at all.
    assert cell.nodes[0] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert parse_cell_alphas(a, ops, steps=1, op_mask=mask, ranking="logit").nodes[0] == (
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 0))  # raw α: 1.2 > 1.0
    with pytest.raises(ValueError, match="op_mask: expected shape"):
        parse_cell_alphas(a, ops, steps=1, op_mask=mask[:, :3])
    with pytest.raises(ValueError, match=r"edges \[1\] allow no op other than 'none'"):
        parse_cell_alphas(a, ops, steps=1, op_mask=np.array([[1, 0, 0, 1], [0, 0, 0, 1]], dtype=bool))


# === configuration ===

def test_search_config_checks_the_stacnas_flags():
    from hdas_tf.search.config import SearchConfig

    SearchConfig(stacnas="clusters", clusters="c.json")
    SearchConfig(stacnas="members", edge_clusters="run/edge_clusters.json")
    for kwargs, message in [
        (dict(stacnas="cluster"), "stacnas must be one of"),
        (dict(stacnas="clusters", search="stage", genotype="DARTS_V2"), "mode of the cell search"),
        (dict(clusters="c.json"), "read by StacNAS stage 1 only"),
        (dict(stacnas="members"), "needs edge_clusters"),
        (dict(edge_clusters="e.json"), "needs edge_clusters"),
    ]:
        with pytest.raises(ValueError, match=message):
            SearchConfig(**kwargs)


# === proposing clusters from correlations ===

OPS7 = tuple(o for o in CELL_OPS if o != "none")  # max, avg, skip, sep3, sep5, dil3, dil5


def block_correlation(pairs, high, low=0.1):
    """A correlation matrix over OPS7: ``high[(a, b)]`` for the listed pairs, ``low`` elsewhere off the diagonal."""
    rho = np.full((7, 7), low)
    np.fill_diagonal(rho, 1.0)
    for (a, b), value in zip(pairs, high):
        i, j = OPS7.index(a), OPS7.index(b)
        rho[i, j] = rho[j, i] = value
    return rho


def test_propose_clusters_finds_the_published_set_from_its_correlation_pattern():
    rho = block_correlation([("max_pool_3x3", "avg_pool_3x3"), ("sep_conv_3x3", "sep_conv_5x5"),
                             ("dil_conv_3x3", "dil_conv_5x5")], [0.9, 0.8, 0.85])
    for kwargs in (dict(num_clusters=4), dict(threshold=0.5)):
        proposal = C.propose_clusters(rho, OPS7, **kwargs)
        assert [(c.name, c.ops) for c in proposal] == [
            ("pooling", ("max_pool_3x3", "avg_pool_3x3")), ("skip", ("skip_connect",)),
            ("separable", ("sep_conv_3x3", "sep_conv_5x5")), ("dilated", ("dil_conv_3x3", "dil_conv_5x5"))]
    # Cut below every link: singletons; above every link: one cluster of all seven, named by its kinds.
    assert len(C.propose_clusters(rho, OPS7, threshold=0.05)) == 7
    (everything,) = C.propose_clusters(rho, OPS7, num_clusters=1)
    assert everything.ops == OPS7 and everything.name == "pooling+skip+separable+dilated"


def test_average_linkage_and_the_representative_by_hand():
    """Three ops: d(a,b) = 0.2, d(a,c) = 0.5, d(b,c) = 0.7. Average linkage first joins {a, b}, then c at
    (0.5 + 0.7)/2 = 0.6: a cut at 0.55 keeps c apart, one at 0.65 joins it. In {a, b, c} the mean
    correlations to the others are a: (0.8 + 0.5)/2 = 0.65, b: (0.8 + 0.3)/2 = 0.55, c: 0.4, so a represents."""
    ops = ("skip_connect", "sep_conv_3x3", "dil_conv_3x3")
    rho = np.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.3], [0.5, 0.3, 1.0]])
    two = C.propose_clusters(rho, ops, threshold=0.55)
    assert [c.ops for c in two] == [("skip_connect", "sep_conv_3x3"), ("dil_conv_3x3",)]
    assert [c.name for c in two] == ["skip+separable", "dilated"]
    (one,) = C.propose_clusters(rho, ops, threshold=0.65)
    assert one.representative == "skip_connect"
    # b's column raised: b now has the highest mean correlation (0.8 + 0.9)/2 against a's (0.8 + 0.5)/2.
    rho[1, 2] = rho[2, 1] = 0.9
    (one,) = C.propose_clusters(rho, ops, num_clusters=1)
    assert one.representative == "sep_conv_3x3"


def test_proposed_clusters_file_is_a_valid_clusters_document(tmp_path):
    rho = block_correlation([("sep_conv_3x3", "sep_conv_5x5")], [0.95])
    proposal = C.propose_clusters(rho, OPS7, num_clusters=6)
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps(C.clusters_to_dict(proposal)))
    assert C.load_clusters(path) == proposal
    assert C.representative_ops(proposal) == tuple(o for o in CELL_OPS if o != "sep_conv_5x5")


@pytest.mark.parametrize("kwargs,message", [
    (dict(), "exactly one of"),
    (dict(threshold=0.5, num_clusters=2), "exactly one of"),
    (dict(num_clusters=8), "between 1 and the number of ops"),
    (dict(threshold=3.0), "threshold is a distance"),
])
def test_propose_clusters_rejects_bad_cuts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        C.propose_clusters(np.eye(7), OPS7, **kwargs)


def test_propose_clusters_rejects_nan_and_bad_ops():
    rho = np.eye(3)
    rho[0, 1] = rho[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        C.propose_clusters(rho, ("skip_connect", "sep_conv_3x3", "dil_conv_3x3"), num_clusters=2)
    with pytest.raises(ValueError, match="lists 'none'"):
        C.propose_clusters(np.eye(2), ("skip_connect", "none"), num_clusters=1)


# === vote splitting ===

def test_vote_splitting_on_hand_set_alphas():
    """Edge 0: dil_conv_3x3 has the largest α (1.2), but the separable cluster's summed weight e¹ + e¹ = 5.44
    beats the dilated cluster's e^1.2 + e⁻⁵ = 3.33: split. Edge 1: sep_conv_3x3 (1.5) is the largest and in the
    winning cluster: no split. Edge 2: 'none' is largest (9) but takes no part; the pooling pair (0.5 + 0.5:
    2e^0.5 = 3.30) beats skip_connect alone (0.9: e^0.9 = 2.46): split, skip has the largest α."""
    ops = CELL_OPS  # max, avg, skip, sep3, sep5, dil3, dil5, none
    alpha = np.array([
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.2, -5.0, 0.0],
        [0.0, 0.0, 0.0, 1.5, 1.0, 1.2, 1.2, 0.0],
        [0.5, 0.5, 0.9, -9.0, -9.0, -9.0, -9.0, 9.0],
    ])
    got = C.vote_splitting(alpha, ops, C.DEFAULT_CLUSTERS)
    assert [(s.edge, s.top_op, s.cluster, s.cluster_best, s.split) for s in got] == [
        (0, "dil_conv_3x3", "separable", "sep_conv_3x3", True),
        (1, "sep_conv_3x3", "separable", "sep_conv_3x3", False),
        (2, "skip_connect", "pooling", "max_pool_3x3", True),
    ]
    # With a mask that takes sep_conv_5x5 off edge 0, separable sums e¹ = 2.72 < 3.33: no split.
    mask = np.ones_like(alpha, bool)
    mask[0, ops.index("sep_conv_5x5")] = False
    assert not C.vote_splitting(alpha, ops, C.DEFAULT_CLUSTERS, mask)[0].split
    # An op in no cluster is a cluster of its own: with clusters that leave out dil_conv_3x3, edge 0 compares
    # {sep3, sep5} = 5.44 against dil_conv_3x3 alone; still split.
    partial = (C.Cluster("separable", ("sep_conv_3x3", "sep_conv_5x5")),)
    assert C.vote_splitting(alpha, ops, partial)[0].cluster == "separable"
    # One representative per cluster (StacNAS stage 1): a cluster's sum is its one op, so no edge can split.
    reps = C.representative_ops(C.DEFAULT_CLUSTERS)
    rng = np.random.default_rng(0)
    assert not any(s.split for s in C.vote_splitting(rng.normal(size=(14, len(reps))), reps, C.DEFAULT_CLUSTERS))


def test_search_job_logs_vote_splitting_to_tensorboard(tmp_path):
    """The job's epoch-end hook: per α group the count of split edges as a scalar, the edges as text."""
    from hdas_tf.search.config import SearchConfig
    from hdas_tf.search.job import log_vote_splitting, vote_splitting_clusters
    from hdas_tf.summaries.logger import SummaryLogger

    assert vote_splitting_clusters(SearchConfig()) == C.DEFAULT_CLUSTERS
    assert vote_splitting_clusters(SearchConfig(stacnas="members", edge_clusters="e.json")) is None
    assert vote_splitting_clusters(SearchConfig(search="stage", genotype="DARTS_V2")) is None
    space = SearchSpace(layers=3, init_channels=2, num_classes=3)
    normal = np.zeros((EDGES, len(CELL_OPS)))
    normal[0, :7] = [0.0, 0.0, 0.0, 1.0, 1.0, 1.2, -5.0]  # split (as edge 0 of the hand-set test)
    normal[5, :7] = [0.5, 0.5, 0.9, -9.0, -9.0, -9.0, -9.0]  # split
    reduce = np.zeros((EDGES, len(CELL_OPS)))  # all equal: the first op wins both ways, no split
    with SummaryLogger(tmp_path) as tb:
        flagged = log_vote_splitting(tb, 7, {"alpha_normal": normal, "alpha_reduce": reduce}, space,
                                     C.DEFAULT_CLUSTERS)
    assert [s.edge for s in flagged["normal"]] == [0, 5] and flagged["reduce"] == []
    scalars, texts = {}, {}
    for event_file in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for v in event.summary.value:
                value = tf.make_ndarray(v.tensor)
                if value.dtype == object:
                    texts[v.tag] = value.item().decode()
                else:
                    scalars[v.tag] = (event.step, float(value))
    assert scalars["diagnostics/vote_splitting/normal"] == (7, 2.0)
    assert scalars["diagnostics/vote_splitting/reduce"] == (7, 0.0)
    assert "node 0 ← 0" in texts["diagnostics/vote_splitting/normal/edges"]
    assert "node 2 ← 0" in texts["diagnostics/vote_splitting/normal/edges"]
    assert texts["diagnostics/vote_splitting/reduce/edges"] == "no edge splits its vote"

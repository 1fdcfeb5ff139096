"""Cells: the search cell (a mixed op on every edge) and the fixed cell (the edges of a genotype).

A cell reads s0 (two cells back) and s1 (the previous cell), preprocesses both to C channels, computes
``steps`` intermediate nodes, each the sum of its incoming edges, and outputs the channel concat of its
nodes (DESIGN §4). Stride 2 appears only on edges that leave the two inputs of a reduction cell.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdas_tf import ops

_PACKAGE = "hdas_tf"


def _preprocess(channels: int, reduction_prev: bool, affine: bool, running_stats: bool = True):
    """s0 is halved with FactorizedReduce when the previous cell reduced; else a 1×1 ReLUConvBN."""
    if reduction_prev:
        return ops.FactorizedReduce(channels, affine=affine, running_stats=running_stats, name="preprocess0")
    return ops.ReLUConvBN(channels, 1, 1, affine=affine, running_stats=running_stats, name="preprocess0")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SearchCell(keras.layers.Layer):
    """DARTS search cell: node i = Σ_{j < i+2} MixedOp_{i,j}(state_j) (DARTS Eq. 1–2).

    What does not depend on the edge is computed once per state: its ReLU (every conv op starts with
    one), and the parameter-free ops (pooling + non-affine BN, identity), which all edges leaving the
    state share. This changes no result and no parameter count; it cuts the graph roughly in half.

    Args:
      channels: int. C, the width of every node.
      reduction: bool. Whether the edges out of the two inputs have stride 2.
      reduction_prev: bool. Whether the previous cell reduced (s0 then needs FactorizedReduce).
      op_names: sequence of str. The op set, in α's order.
      steps: int. Intermediate nodes. Defaults to 4.
      pool_bn: bool. BN after pooling ops. Defaults to True.

    ``call(s0, s1, weights)`` takes ``weights`` of shape [edges_per_cell, len(op_names)], already
    softmaxed over ops; edges are ordered node by node, and within a node by source index.
    """

    def __init__(self, channels, reduction, reduction_prev, op_names, steps=4, pool_bn=True, **kwargs):
        super().__init__(**kwargs)
        if channels < 1 or steps < 1:
            raise ValueError(f"SearchCell: channels and steps must be >= 1, received {channels}, {steps}")
        self.channels, self.reduction, self.reduction_prev = channels, bool(reduction), bool(reduction_prev)
        self.op_names, self.steps, self.pool_bn = tuple(op_names), steps, pool_bn
        self.preprocess0 = _preprocess(channels, reduction_prev, affine=False, running_stats=False)
        self.preprocess1 = ops.ReLUConvBN(channels, 1, 1, affine=False, running_stats=False, name="preprocess1")
        self.edges = []
        for i in range(steps):
            for j in range(i + 2):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(ops.MixedOp(self.op_names, channels, stride, pool_bn, name=f"edge_{i}_{j}"))
        # Shared parameter-free ops, per source state that has outgoing edges (the last node has none).
        self.pools = []
        for j in range(steps + 1):
            stride = 2 if reduction and j < 2 else 1
            self.pools.append([ops.Pool(name[:3], stride, bn=pool_bn, affine=False, running_stats=False,
                                        name=f"{name}_from_{j}")
                               for name in self.op_names if name in ("max_pool_3x3", "avg_pool_3x3")])

    def build(self, s0_shape, s1_shape=None, weights_shape=None):
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        in_shape = self.preprocess1.compute_output_shape(s1_shape)
        k = 0
        for i in range(self.steps):
            for j in range(i + 2):
                self.edges[k].build(in_shape)
                k += 1
        for pools in self.pools:
            for pool in pools:
                pool.build(in_shape)

    def compute_output_shape(self, s0_shape, s1_shape=None, weights_shape=None):
        stride = 2 if self.reduction else 1
        return ops._strided_shape(s1_shape, stride, self.steps * self.channels)

    def _shared(self, j, state, training):
        stride = 2 if self.reduction and j < 2 else 1
        shared = {}
        for pool in self.pools[j]:
            shared[f"{pool.kind}_pool_3x3"] = pool(state, training=training)
        if "skip_connect" in self.op_names and stride == 1:
            shared["skip_connect"] = state
        return shared

    def call(self, s0, s1, weights, training=None):
        n_ops = len(self.op_names)
        flat = tf.unstack(tf.reshape(tf.cast(weights, s1.dtype), [-1]))  # one op, not one slice per scalar
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        relus = [tf.nn.relu(h) for h in states]
        shared = [self._shared(j, h, training) for j, h in enumerate(states)]
        k = 0
        for i in range(self.steps):
            node = None
            for j in range(i + 2):
                y = self.edges[k](relus[j], flat[k * n_ops:(k + 1) * n_ops], shared[j], training=training)
                if y is not None:
                    node = y if node is None else node + y
                k += 1
            if node is None:  # an op set of 'none' alone
                node = tf.zeros_like(states[1][:, ::2, ::2, :] if self.reduction else states[1])
            states.append(node)
            if i + 1 < self.steps:
                relus.append(tf.nn.relu(node))
                shared.append(self._shared(i + 2, node, training))
        return tf.concat(states[2:], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, reduction=self.reduction, reduction_prev=self.reduction_prev,
                      op_names=list(self.op_names), steps=self.steps, pool_bn=self.pool_bn)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedCell(keras.layers.Layer):
    """A cell of a derived network: node i = Σ over its genotype edges (op, src) of op(state_src).

    Args:
      channels: int. C.
      nodes: list of nodes, each a list of ``[op_name, source]`` edges (source 0 = s0, 1 = s1,
        2 + i = node i).
      concat: list of int. States concatenated into the output. Defaults to every node.
      reduction: bool. Stride 2 on edges leaving s0/s1.
      reduction_prev: bool. FactorizedReduce on s0.
      affine: bool. Affine BN (evaluation networks) or not. Defaults to True.
      pool_bn: bool. BN after pooling (the H-DAS reference) or not (original DARTS evaluation network).
      drop_path: bool. Whether ``call`` applies drop path to every non-identity op in training.

    ``call(s0, s1, drop_rate=None)``: ``drop_rate`` is a scalar tensor (0 disables).
    """

    def __init__(self, channels, nodes, concat=None, reduction=False, reduction_prev=False, affine=True,
                 pool_bn=True, drop_path=False, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.reduction, self.reduction_prev = channels, bool(reduction), bool(reduction_prev)
        self.nodes = [[[str(op), int(src)] for op, src in node] for node in nodes]
        self.concat = list(range(2, len(self.nodes) + 2)) if concat is None else [int(c) for c in concat]
        self.affine, self.pool_bn, self.use_drop_path = affine, pool_bn, drop_path
        for i, node in enumerate(self.nodes):
            for op, src in node:
                if not 0 <= src < i + 2:
                    raise ValueError(f"FixedCell: node {i} reads state {src}, but only states 0..{i + 1} exist")
                if op == "none":
                    raise ValueError(f"FixedCell: node {i} has a 'none' edge; a derived cell has none")
        for c in self.concat:
            if not 0 <= c < len(self.nodes) + 2:
                raise ValueError(f"FixedCell: concat index {c} out of range 0..{len(self.nodes) + 1}")
        self.preprocess0 = _preprocess(channels, reduction_prev, affine=affine)
        self.preprocess1 = ops.ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess1")
        self.edge_ops, self.drops = [], []
        for i, node in enumerate(self.nodes):
            for e, (op, src) in enumerate(node):
                stride = 2 if reduction and src < 2 else 1
                layer = ops.make_op(op, channels, stride, affine=affine, pool_bn=pool_bn)
                self.edge_ops.append(layer)
                needs_drop = drop_path and not isinstance(layer, ops.Identity)
                self.drops.append(ops.DropPath(name=f"drop_{i}_{e}") if needs_drop else None)

    @property
    def output_channels(self) -> int:
        return self.channels * len(self.concat)

    def compute_output_shape(self, s0_shape, s1_shape=None, drop_rate_shape=None):
        return ops._strided_shape(s1_shape, 2 if self.reduction else 1, self.output_channels)

    def build(self, s0_shape, s1_shape=None, drop_rate_shape=None):
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        in_shape = self.preprocess1.compute_output_shape(s1_shape)
        out_shape = ops._strided_shape(in_shape, 2 if self.reduction else 1, self.channels)
        k = 0
        for node in self.nodes:
            for _, src in node:
                self.edge_ops[k].build(in_shape if src < 2 else out_shape)
                k += 1

    def call(self, s0, s1, drop_rate=None, training=None):
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        k = 0
        for node in self.nodes:
            total = None
            for _, src in node:
                layer = self.edge_ops[k]
                h = layer(states[src]) if isinstance(layer, (ops.Identity, ops.Zero)) else layer(
                    states[src], training=training)
                if self.drops[k] is not None and drop_rate is not None:
                    h = self.drops[k](h, drop_rate, training=training)
                total = h if total is None else total + h
                k += 1
            states.append(total)
        return tf.concat([states[c] for c in self.concat], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, nodes=self.nodes, concat=self.concat, reduction=self.reduction,
                      reduction_prev=self.reduction_prev, affine=self.affine, pool_bn=self.pool_bn,
                      drop_path=self.use_drop_path)
        return config

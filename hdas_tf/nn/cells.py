"""Cells: the search cell (a mixed op on every edge) and the fixed cell (the edges of a genotype).

A cell reads s0 (two cells back) and s1 (the previous cell), preprocesses both to C channels, computes ``steps``
intermediate nodes, each the sum of its incoming edges, and outputs the channel concat of its nodes
(BUILD_NOTES "Cells, chains and stage-specific cells"). Stride 2 appears only on edges that leave the two inputs of
a reduction cell.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn import chains
from hdas_tf.nn import convolutions
from hdas_tf.nn import parameter_free
from hdas_tf.nn import tracing
from hdas_tf.space.op_registry import CELL_OPS, op_spec

_PACKAGE = "hdas_tf"


def _preprocess(channels: int, reduction_prev: bool, affine: bool, running_stats: bool = True):
    """s0 is halved with FactorizedReduce when the previous cell reduced; else a 1×1 ReLUConvBN."""
    if reduction_prev:
        return ops.FactorizedReduce(channels, affine=affine, running_stats=running_stats, name="preprocess0")
    return ops.ReLUConvBN(channels, 1, 1, affine=affine, running_stats=running_stats, name="preprocess0")


def _shared(name: str, stride: int) -> bool:
    """Whether every edge leaving a state computes op ``name`` alike (no kernels, not 'none'), so that the
    state computes it once for all of them (``parameter_free.shared_ops``)."""
    spec = op_spec(name)
    return spec.kind != "none" and not spec.weighted(stride)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SearchCell(keras.layers.Layer):
    """DARTS search cell: node i = Σ_{j < i+2} MixedOp_{i,j}(state_j), MixedOp = Σ_o w_o·o (DARTS Eq. 1–2).

    Built for speed on the CPU without changing any result or parameter count
    (BUILD_NOTES "Cells, chains and stage-specific cells"):

    - what does not depend on the edge is computed once per state: its ReLU (every conv op starts with
      one), the parameter-free ops (pooling + non-affine BN, identity) that all edges leaving it share, and
      the polyphase split (stride 1) or even sub-grid (stride 2) that the dilated convolutions read;
    - the kernels of one op kind are ONE variable for all edges of the cell (e.g. ``sep_conv_3x3_depthwise``
      [edges, 2, 3, 3, C, 1]), so the optimizer, clipping and weight decay are a few large ops, not
      hundreds of small ones;
    - every conv op is made of conv → BN blocks with hand-written backward passes (``chains.block``),
      and the op weight w_o multiplies inside the op's last (non-affine) BN, as its scale: no separate pass;
    - 'none' is never computed (it adds w·0).

    Args:
      channels: int. C, the width of every node.
      reduction: bool. Whether the edges out of the two inputs have stride 2.
      reduction_prev: bool. Whether the previous cell reduced (s0 then needs FactorizedReduce).
      op_names: sequence of str. The op set, in α's order.
      steps: int. Intermediate nodes. Defaults to 4.
      pool_bn: bool. BN after pooling ops. Defaults to True.
      edge_ops: optional sequence, one entry per edge: the ops of ``op_names`` that edge may use (StacNAS
        stage 2, ``SearchSpace.edge_ops``). An edge computes only its own ops and only they have kernels;
        ``weights`` must be 0 at the others (``ChainSupernet`` masks the softmax). Defaults to every op.

    ``call(s0, s1, weights)`` takes ``weights`` of shape [edges_per_cell, len(op_names)], already
    softmaxed over ops; edges are ordered node by node, and within a node by source index.
    """

    def __init__(self, channels, reduction, reduction_prev, op_names, steps=4, pool_bn=True, edge_ops=None,
                 **kwargs):
        super().__init__(**kwargs)
        if channels < 1 or steps < 1:
            raise ValueError(f"SearchCell: channels and steps must be >= 1, received {channels}, {steps}")
        unknown = [o for o in op_names if o not in CELL_OPS]
        if unknown:
            raise ValueError(f"SearchCell: unknown ops {unknown}; known ops: {', '.join(CELL_OPS)}")
        self.channels, self.reduction, self.reduction_prev = channels, bool(reduction), bool(reduction_prev)
        self.op_names, self.steps, self.pool_bn = tuple(op_names), steps, pool_bn
        if self.reduction and "skip_connect" in self.op_names and channels % 2:
            raise ValueError(f"SearchCell: a reduction cell's strided skip (FactorizedReduce) needs an even "
                             f"channel count, received {channels}")
        self.preprocess0 = _preprocess(channels, reduction_prev, affine=False, running_stats=False)
        self.preprocess1 = ops.ReLUConvBN(channels, 1, 1, affine=False, running_stats=False, name="preprocess1")
        # Edge k = (node i, source j), node by node; its stride is 2 on edges leaving a reduction cell's inputs.
        self.edge_sources = [j for i in range(steps) for j in range(i + 2)]
        self.edge_nodes = [i for i in range(steps) for _ in range(i + 2)]
        self.edge_strides = [2 if self.reduction and j < 2 else 1 for j in self.edge_sources]
        self.edge_names = [f"edge_{i}_{j}" for i, j in zip(self.edge_nodes, self.edge_sources)]
        self.edge_ops = self._checked_edge_ops(edge_ops)
        # The edges leaving each state that has any (the last node has none), and the parameter-free ops
        # (pooling + non-affine BN, identity at stride 1) that those edges share: ``parameter_free.shared_ops``.
        self.out_edges = [[k for k, src in enumerate(self.edge_sources) if src == j] for j in range(steps + 1)]
        self.shared_op_names = [[name for name in self.op_names if _shared(name, self._state_stride(j))
                                 and self._used(name, self.out_edges[j])] for j in range(steps + 1)]
        self._shared_columns = [[self.op_names.index(name) for name in names] for names in self.shared_op_names]
        # The strided skip (FactorizedReduce) has kernels; it exists on the edges leaving a reduction cell's inputs.
        self.strided_edges = [k for k, s in enumerate(self.edge_strides) if s == 2 and "skip_connect" in self.edge_ops[k]]
        # The edges that hold kernels of each conv op (all edges unless ``edge_ops`` restricts them).
        self.kernel_edges = {name: [k for k in range(self.num_edges) if name in self.edge_ops[k]]
                             for name in self.op_names if op_spec(name).has_weights}

    def _checked_edge_ops(self, edge_ops):
        if edge_ops is None:
            return (self.op_names,) * len(self.edge_sources)
        edge_ops = [tuple(names) for names in edge_ops]
        if len(edge_ops) != len(self.edge_sources):
            raise ValueError(f"SearchCell: edge_ops has {len(edge_ops)} entries; the cell has {len(self.edge_sources)} "
                             "edges")
        for k, names in enumerate(edge_ops):
            unknown = [o for o in names if o not in self.op_names]
            if unknown:
                raise ValueError(f"SearchCell: edge {self.edge_names[k]} lists ops {unknown} that are not in op_names "
                                 f"{list(self.op_names)}")
        return tuple(tuple(o for o in self.op_names if o in names) for names in edge_ops)

    def _state_stride(self, j: int) -> int:
        """The stride of the edges leaving state j: 2 out of a reduction cell's two inputs."""
        return 2 if self.reduction and j < 2 else 1

    def _used(self, name, edges) -> bool:
        return any(name in self.edge_ops[k] for k in edges)

    @property
    def num_edges(self) -> int:
        return len(self.edge_sources)

    def build(self, s0_shape, s1_shape=None, weights_shape=None):
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        c = self.channels
        # PyTorch init per kernel: U(±1/√fan_in), fan_in = k·k for depthwise, C for pointwise (ops.torch_init).
        self.kernels = {}
        for name, edges in self.kernel_edges.items():
            if edges:
                k, e = op_spec(name).kernel_size, len(edges)
                blocks = (2,) if op_spec(name).kind == "sep_conv" else ()
                self.kernels[name] = (
                    self.add_weight(shape=(e, *blocks, k, k, c, 1), initializer=ops.torch_init(k * k),
                                    name=f"{name}_depthwise"),
                    self.add_weight(shape=(e, *blocks, c, c), initializer=ops.torch_init(c), name=f"{name}_pointwise"))
        if "skip_connect" in self.op_names and self.strided_edges:
            self.kernels["skip_connect"] = (self.add_weight(
                shape=(len(self.strided_edges), 2, c, c // 2), initializer=ops.torch_init(c),
                name="skip_connect_factorized_reduce"),)
        self.built = True

    def compute_output_shape(self, s0_shape, s1_shape=None, weights_shape=None):
        stride = 2 if self.reduction else 1
        return ops._strided_shape(s1_shape, stride, self.steps * self.channels)

    def edge_kernels(self, k: int) -> dict:
        """Edge ``k``'s kernels per op name, in the weight order and shapes of the op layers
        (``ops.make_op``): SepConv [dw1, pw1, dw2, pw2], DilConv [dw, pw], FactorizedReduce [k1, k2]."""
        out = {}
        for name, variables in self.kernels.items():
            if name == "skip_connect":
                if k in self.strided_edges:
                    fr = variables[0][self.strided_edges.index(k)]
                    out[name] = [fr[0][None, None], fr[1][None, None]]
                continue
            if k not in self.kernel_edges[name]:
                continue
            position = self.kernel_edges[name].index(k)
            dw, pw = variables[0][position], variables[1][position]
            if op_spec(name).kind == "sep_conv":
                out[name] = [dw[0], pw[0][None, None], dw[1], pw[1][None, None]]
            else:
                out[name] = [dw, pw[None, None]]
        return out

    # === forward ===

    def _state_inputs(self, j, h, flat):
        """What every edge leaving state j reads: the state, its ReLU, each edge's parameter-free terms, and the
        grid the dilated convs work on (polyphase split at stride 1, even sub-grid at stride 2)."""
        stride = self._state_stride(j)
        read = {"state": h, "stride": stride, "shared": {}}
        names = self.shared_op_names[j]
        if names:
            weights = parameter_free.edge_op_weights(flat, len(self.op_names), self.out_edges[j],
                                                     self._shared_columns[j])
            outs = parameter_free.shared_ops(h, names, weights, stride, bn=self.pool_bn)
            read["shared"] = dict(zip(self.out_edges[j], outs))
        edges = self.out_edges[j]
        convs = [n for n in self.kernels if n != "skip_connect" and self._used(n, edges)]
        strided_skip = stride == 2 and any(k in self.strided_edges for k in edges)
        if convs or strided_skip:
            read["relu"] = r = tf.nn.relu(h)
        if stride == 2:
            for name in convs:  # the strided first block of a sep conv reads the padded state
                if op_spec(name).kind == "sep_conv" and f"pad_{name}" not in read:
                    read[f"pad_{name}"] = tracing.pad(r, op_spec(name).kernel_size // 2)
            if strided_skip:
                read["fr_input"] = convolutions.factorized_reduce_input(r)
        if any(op_spec(n).kind == "dil_conv" for n in convs):
            if stride == 2:
                read["dil_grid"], read["dil_layout"] = convolutions.subsample(r), "plain"
            elif convolutions.polyphase_ok(h.shape):
                read["dil_grid"], read["dil_layout"] = convolutions.to_polyphase(r), "polyphase"
            else:
                read["dil_grid"], read["dil_layout"] = r, "dilated"
        return read

    def _mixed_op(self, k, read, w, kernels, w_scales):
        """MixedOp of edge k: the terms w_o·o(state) of Σ_o (DARTS Eq. 2), 'none' omitted.

        ``w``: this edge's op weights (scalars); ``kernels[name]``: this edge's kernels. The parameter-free ops
        come as one term from ``read["shared"]``; each conv op is a ``chains.chain`` whose last BN carries
        w_o as its scale (``w_scales[o]`` = w_o·1, computed for the whole cell at once)."""
        terms, dil = ([read["shared"][k]] if k in read["shared"] else []), []
        for o, name in enumerate(self.op_names):
            if name not in kernels:  # parameter-free (in ``read["shared"]``), 'none', or not on this edge
                continue
            if name == "skip_connect":
                if read["stride"] == 2:
                    kernel = convolutions.factorized_reduce_kernel(*kernels[name])
                    even = read["fr_input"] is read["relu"]  # no bottom/right padding: the ReLU can be recomputed
                    terms.append(chains.block(read["fr_input"], None, conv_kernel=kernel, conv_stride=2, weight=w[o],
                                         weight_scale=w_scales[o],
                                         source=(read["state"], 0) if even else None))
            elif op_spec(name).kind == "sep_conv":
                dw1, pw1, dw2, pw2, pw1_4d, pw2_4d = kernels[name]
                if read["stride"] == 1:
                    x, first, pad = read["relu"], chains.ConvBNStep(pw1, dw1, pointwise_4d=pw1_4d), 0
                else:
                    pad = dw1.shape[0] // 2
                    x, first = read[f"pad_{name}"], chains.ConvBNStep(pw1, dw1, 2, "VALID", pointwise_4d=pw1_4d)
                terms.append(chains.chain(x, [first, chains.ConvBNStep(pw2, dw2, pointwise_4d=pw2_4d)], weight=w[o],
                                     source=(read["state"], pad), weight_scale=w_scales[o]))
            elif op_spec(name).kind == "dil_conv":
                dw, pw, pw_4d = kernels[name]
                if read["dil_layout"] == "dilated":  # odd sizes: TF's dilated kernel on the plain grid
                    x = convolutions.torch_depthwise_conv2d(read["dil_grid"], dw, 1, 2, dw.shape[0] - 1)
                    dil.append(chains.block(x, pw, weight=w[o], pointwise_4d=pw_4d, weight_scale=w_scales[o]))
                else:
                    dil.append(chains.block(read["dil_grid"], pw, depthwise_kernel=dw, weight=w[o], pointwise_4d=pw_4d,
                                       weight_scale=w_scales[o]))
        if dil:
            # Both dilated ops of the edge live on the same grid: sum there, map back once.
            d = dil[0] if len(dil) == 1 else dil[0] + dil[1]
            terms.append(convolutions.from_polyphase(d) if read["dil_layout"] == "polyphase" else d)
        return terms

    def _edge_kernel_lists(self, dtype):
        """Per op name, per edge, the tuple of that edge's kernels (one Unpack per stacked variable)."""
        per_edge = {}
        for name, variables in self.kernels.items():
            if name == "skip_connect":
                fr = tf.unstack(tf.cast(tf.reshape(variables[0], (-1, *variables[0].shape[2:])), dtype))
                per_edge[name] = {k: (fr[2 * n], fr[2 * n + 1]) for n, k in enumerate(self.strided_edges)}
                continue
            dw_var, pw_var = variables
            edges = self.kernel_edges[name]
            dw = tf.unstack(tf.cast(tf.reshape(dw_var, (-1, *dw_var.shape[-4:])), dtype))
            pw_all = tf.cast(pw_var, dtype)
            pw = tf.unstack(tf.reshape(pw_all, (-1, *pw_var.shape[-2:])))
            # The same kernels as [1, 1, C, C] for the chains' forward Conv2D: one Unpack here instead of one
            # Reshape per chain (Stage.pointwise_4d).
            pw4 = tf.unstack(tf.reshape(pw_all, (-1, 1, 1, *pw_var.shape[-2:])))
            if op_spec(name).kind == "sep_conv":
                per_edge[name] = {k: (dw[2 * n], pw[2 * n], dw[2 * n + 1], pw[2 * n + 1], pw4[2 * n], pw4[2 * n + 1])
                                  for n, k in enumerate(edges)}
            else:
                per_edge[name] = {k: (dw[n], pw[n], pw4[n]) for n, k in enumerate(edges)}
        return per_edge

    def call(self, s0, s1, weights, training=None):
        n_ops = len(self.op_names)
        flat = tf.unstack(tf.reshape(tf.cast(weights, s1.dtype), [-1]))  # one op, not one slice per scalar
        # w_o·1 for every (edge, op): the scale of each conv op's last (non-affine) BN, one Mul for the cell.
        w_scales = tf.unstack(tf.reshape(tf.cast(weights, tf.float32), [-1, 1]) * tracing.ones_vector(self.channels))
        kernels = self._edge_kernel_lists(s1.dtype)
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        reads = [self._state_inputs(j, h, flat) for j, h in enumerate(states)]
        k = 0
        for i in range(self.steps):
            terms = []
            for j in range(i + 2):
                edge_kernels = {name: per_edge[k] for name, per_edge in kernels.items() if k in per_edge}
                terms += self._mixed_op(k, reads[j], flat[k * n_ops:(k + 1) * n_ops], edge_kernels,
                                        w_scales[k * n_ops:(k + 1) * n_ops])
                k += 1
            if terms:
                node = tf.add_n(terms)
            else:  # an op set of 'none' alone
                node = tf.zeros_like(states[1][:, ::2, ::2, :] if self.reduction else states[1])
            states.append(node)
            if i + 1 < self.steps:
                reads.append(self._state_inputs(i + 2, node, flat))
        return tf.concat(states[2:], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, reduction=self.reduction, reduction_prev=self.reduction_prev,
                      op_names=list(self.op_names), steps=self.steps, pool_bn=self.pool_bn,
                      edge_ops=None if all(names == self.op_names for names in self.edge_ops)
                      else [list(names) for names in self.edge_ops])
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
      affine: bool. Affine BN (evaluation networks), the pooling BN included, or not. Defaults to True.
      pool_bn: bool. BN after pooling (the H-DAS reference) or not (original DARTS evaluation network).
      drop_path: bool. Whether ``call`` applies drop path to every non-identity op in training.
      running_stats: bool. Keep BN running statistics for inference. False in supernets, which only ever run on
        batches in training mode. Defaults to True.

    ``call(s0, s1, drop_rate=None)``: ``drop_rate`` is a scalar tensor (0 disables).
    """

    def __init__(self, channels, nodes, concat=None, reduction=False, reduction_prev=False, affine=True,
                 pool_bn=True, drop_path=False, running_stats=True, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.reduction, self.reduction_prev = channels, bool(reduction), bool(reduction_prev)
        self.nodes = [[[str(op), int(src)] for op, src in node] for node in nodes]
        self.concat = list(range(2, len(self.nodes) + 2)) if concat is None else [int(c) for c in concat]
        self.affine, self.pool_bn, self.use_drop_path = affine, pool_bn, drop_path
        self.running_stats = bool(running_stats)
        for i, node in enumerate(self.nodes):
            for op, src in node:
                if not 0 <= src < i + 2:
                    raise ValueError(f"FixedCell: node {i} reads state {src}, but only states 0..{i + 1} exist")
                if op == "none":
                    raise ValueError(f"FixedCell: node {i} has a 'none' edge; a derived cell has none")
        for c in self.concat:
            if not 0 <= c < len(self.nodes) + 2:
                raise ValueError(f"FixedCell: concat index {c} out of range 0..{len(self.nodes) + 1}")
        self.preprocess0 = _preprocess(channels, reduction_prev, affine=affine, running_stats=running_stats)
        self.preprocess1 = ops.ReLUConvBN(channels, 1, 1, affine=affine, running_stats=running_stats,
                                          name="preprocess1")
        self.edge_ops, self.drops = [], []
        for i, node in enumerate(self.nodes):
            for e, (op, src) in enumerate(node):
                stride = 2 if reduction and src < 2 else 1
                layer = ops.make_op(op, channels, stride, affine=affine, pool_bn=pool_bn, running_stats=running_stats)
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
        if s0 is s1:  # a stage cell reads one tensor as both inputs: both preprocessings as one block
            states = ops.relu_conv_bn_same_input([self.preprocess0, self.preprocess1], s1, training=training)
        else:
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
                      drop_path=self.use_drop_path, running_stats=self.running_stats)
        return config

"""Networks: the chain cell-search supernet (DARTS / H^c-DAS) and its layout arithmetic.

A supernet is a Keras layer ``call(images, arch, training)`` that takes the *raw* architecture variables
by name (as ``SearchSpace.arch_shapes`` names them) and softmaxes them itself, so the model that owns
the variables (``search_model``) knows nothing of what they mean.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdas_tf.nn import ops
from hdas_tf.nn.cells import FixedCell, SearchCell
from hdas_tf.nn.stages import SearchStage
from hdas_tf.space.genotypes import Genotype
from hdas_tf.space.search_space import SearchSpace, space_from_config, space_to_config

_PACKAGE = "hdas_tf"


def chain_layout(layers: int, init_channels: int, stem_multiplier: int, reductions: tuple[int, int]):
    """Per cell: (channels C, reduction, reduction_prev, C_prev_prev, C_prev) of a DARTS chain
    (BUILD_NOTES "Cells, chains and stage-specific cells")."""
    c_curr = init_channels
    c_pp = c_p = stem_multiplier * init_channels
    out, reduction_prev = [], False
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            c_curr *= 2
        out.append((c_curr, reduction, reduction_prev, c_pp, c_p))
        c_pp, c_p, reduction_prev = c_p, 4 * c_curr, reduction
    return out


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChainSupernet(keras.layers.Layer):
    """The DARTS cell-search network: stem (3×3 conv to 3C + BN), L search cells, GAP, dense.

    Cell i reads the α of its group (``SearchSpace.cell_group``): two groups when cells are shared
    (DARTS), five when they are stage-specific (H^c-DAS). The stem BN is affine, as in the reference;
    everything inside the cells is non-affine.

    With ``space.edge_ops`` (StacNAS stage 2) each edge computes only its own ops, and the softmax over an
    edge's ops runs over those alone: the others get probability exactly 0 and α gradient 0.
    """

    def __init__(self, space: SearchSpace | dict, pool_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.space = space if isinstance(space, SearchSpace) else space_from_config(space)
        self.pool_bn = pool_bn
        sp = self.space
        self.stem_conv = keras.layers.Conv2D(3 * sp.init_channels, 3, padding="same", use_bias=False,
                                            kernel_initializer=ops.torch_init(), name="stem_conv")
        self.stem_bn = ops.batch_norm(True, name="stem_bn")
        self.cells, self.groups = [], []
        layout = chain_layout(sp.layers, sp.init_channels, 3, sp.reduction_indices())
        for i, (c, reduction, reduction_prev, _, _) in enumerate(layout):
            group = sp.cell_group(i)
            self.cells.append(SearchCell(c, reduction, reduction_prev, sp.cell_ops, sp.steps, pool_bn,
                                         edge_ops=None if sp.edge_ops is None else sp.edge_op_names(group),
                                         name=f"cell_{i}"))
            self.groups.append(group)
        self.masks = None if sp.edge_ops is None else {g: sp.op_mask(g) for g in sp.cell_groups}
        self.classifier = keras.layers.Dense(sp.num_classes, kernel_initializer=ops.torch_init(), name="classifier")

    def build(self, images_shape, arch_shape=None):
        # Build from shapes alone: an eager forward pass of a supernet costs as much as tracing it.
        images_shape = tuple(images_shape)
        self.stem_conv.build(images_shape)
        stem = (*images_shape[:3], 3 * self.space.init_channels)
        self.stem_bn.build(stem)
        s0 = s1 = stem
        for cell in self.cells:
            cell.build(s0, s1)
            s0, s1 = s1, cell.compute_output_shape(s0, s1)
        self.classifier.build((images_shape[0], s1[-1]))
        self.built = True

    def call(self, images, arch, training=None):
        weights = {g: self._softmax(arch[f"alpha_{g}"], g) for g in self.space.cell_groups}
        s0 = s1 = self.stem_bn(self.stem_conv(images), training=training)
        for cell, group in zip(self.cells, self.groups):
            s0, s1 = s1, cell(s0, s1, weights[group], training=training)
        return self.classifier(tf.reduce_mean(s1, axis=[1, 2]))

    def _softmax(self, alpha, group):
        if self.masks is None:
            return tf.nn.softmax(alpha, axis=-1)
        # DARTS Eq. 2 over the ops an edge may use: exp(-inf) = 0 for the others, and tf.where passes them
        # no gradient.
        mask = tf.constant(self.masks[group])
        return tf.nn.softmax(tf.where(mask, alpha, tf.constant(-float("inf"), alpha.dtype)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(space=space_to_config(self.space), pool_bn=self.pool_bn)
        return config


# === Stage supernet (H^s-DAS) ===


def _stage_cell(genotype, group: str) -> dict:
    cell = genotype.cell_for(group)
    return {"nodes": [[[op, int(src)] for op, src in node] for node in cell.nodes],
            "concat": [int(c) for c in cell.concat]}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StageSupernet(keras.layers.Layer):
    """The H^s-DAS stage-search network (BUILD_NOTES "Stage DAGs, the sliding window and β"): stem (3×3 conv to 4C +
    BN, stem multiplier 4), stage 1 at C, reduction cell, stage 2 at 2C, reduction cell, stage 3 at 4C, GAP, dense.

    Each stage is a ``SearchStage`` whose fixed cells come from ``cell_genotype`` (normal{s+1}); the two
    reduction cells (reduce1, reduce2) are chain links, not DAG nodes, and read the previous stage's output
    as both inputs (so no FactorizedReduce preprocessing). Cells (their pooling BN included) and the stem are
    affine (fixed cells trained from scratch, built as the reference's evaluation cells), the cells without running
    statistics (a supernet only runs on batches in training mode);
    the stage projections and mixed stage edges are non-affine.

    Architecture inputs (raw, softmaxed here): ``alpha_stage`` (shared DAG, H^s-DAS*) or ``alpha_stage1..3``
    (stage-specific, H^s-DAS), [edges, len(stage_ops)]; ``beta_stage1..3`` [len(candidate lengths)] when
    ``space.max_cells`` is set. A shared α is softmaxed once and read by all three stages, so its gradient
    is the sum of the stages' gradients.

    Args:
      space: SearchSpace (or its config dict) with stage "shared" or "stage_specific": init_channels C,
        num_classes, window, stage_ops, cells_per_stage, min_cells/max_cells.
      cell_genotype: Genotype (or its dict) with shared (normal/reduce) or stage-specific cells.
      pool_bn: bool. BN after pooling, in stage edges and cells. Defaults to True.
    """

    def __init__(self, space, cell_genotype, pool_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.space = space if isinstance(space, SearchSpace) else space_from_config(space)
        if self.space.stage == "chain":
            raise ValueError("StageSupernet: the space has no stage level (stage='chain'); use ChainSupernet")
        genotype = cell_genotype if isinstance(cell_genotype, Genotype) else Genotype.from_dict(cell_genotype)
        if genotype.cells is None:
            raise ValueError(f"StageSupernet: cell_genotype {genotype.name!r} has no cells (a stage-only genotype)")
        self.cell_genotype, self.pool_bn = genotype, bool(pool_bn)
        sp, c = self.space, self.space.init_channels
        distribution = sp.max_cells is not None
        self.stem_conv = keras.layers.Conv2D(4 * c, 3, padding="same", use_bias=False,
                                            kernel_initializer=ops.torch_init(), name="stem_conv")
        self.stem_bn = ops.batch_norm(True, name="stem_bn")
        self.stages, self.reductions = [], []
        for s in range(3):
            self.stages.append(SearchStage(
                _stage_cell(genotype, f"normal{s + 1}"), c * 2 ** s, sp.cells_per_stage[s], sp.window, sp.stage_ops,
                self.pool_bn, sp.min_cells if distribution else None, sp.max_cells, name=f"stage_{s + 1}"))
            if s < 2:
                reduce = _stage_cell(genotype, f"reduce{s + 1}")
                self.reductions.append(FixedCell(c * 2 ** (s + 1), reduce["nodes"], reduce["concat"], reduction=True,
                                                 reduction_prev=False, affine=True, pool_bn=self.pool_bn,
                                                 running_stats=False, name=f"reduce_{s + 1}"))
        self.classifier = keras.layers.Dense(sp.num_classes, kernel_initializer=ops.torch_init(), name="classifier")

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of the architecture inputs, counted from the built stages."""
        n_ops = len(self.space.stage_ops)
        if self.space.stage == "shared":
            shapes = {"alpha_stage": (max(stage.num_edges for stage in self.stages), n_ops)}
        else:
            shapes = {f"alpha_stage{s + 1}": (stage.num_edges, n_ops) for s, stage in enumerate(self.stages)}
        if self.space.max_cells is not None:
            for s, stage in enumerate(self.stages):
                shapes[f"beta_stage{s + 1}"] = (len(stage.candidate_lengths),)
        return shapes

    def build(self, images_shape, arch_shape=None):
        # Build from shapes alone: an eager forward pass of a supernet costs as much as tracing it.
        images_shape = tuple(images_shape)
        self.stem_conv.build(images_shape)
        x = (*images_shape[:3], 4 * self.space.init_channels)
        self.stem_bn.build(x)
        for s, stage in enumerate(self.stages):
            stage.build(x)
            x = stage.compute_output_shape(x)
            if s < 2:
                self.reductions[s].build(x, x)
                x = self.reductions[s].compute_output_shape(x, x)
        self.classifier.build((images_shape[0], x[-1]))
        self.built = True

    def _arch_weights(self, arch):
        shapes = self.arch_shapes()
        missing = [name for name in shapes if name not in arch]
        wrong = {name: tuple(arch[name].shape) for name in shapes
                 if name in arch and tuple(arch[name].shape) != shapes[name]}
        if missing or wrong:
            raise ValueError(f"StageSupernet: architecture inputs must be {shapes}; missing {missing}, "
                             f"wrong shapes {wrong}")
        if self.space.stage == "shared":
            w = tf.nn.softmax(arch["alpha_stage"], axis=-1)  # once, for all stages
            alphas = [w[:stage.num_edges] if stage.num_edges < w.shape[0] else w for stage in self.stages]
        else:
            alphas = [tf.nn.softmax(arch[f"alpha_stage{s + 1}"], axis=-1) for s in range(3)]
        if self.space.max_cells is None:
            return alphas, [None] * 3
        return alphas, [tf.nn.softmax(arch[f"beta_stage{s + 1}"]) for s in range(3)]

    def stage_outputs(self, images, arch, training=None) -> list:
        """The three stage outputs (before each reduction), for inspection and tests."""
        alphas, betas = self._arch_weights(arch)
        x = self.stem_bn(self.stem_conv(images), training=training)
        outputs = []
        for s, stage in enumerate(self.stages):
            x = stage(x, alphas[s], betas[s], training=training)
            outputs.append(x)
            if s < 2:
                x = self.reductions[s](x, x, training=training)
        return outputs

    def call(self, images, arch, training=None):
        x = self.stage_outputs(images, arch, training=training)[-1]
        return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

    def get_config(self):
        config = super().get_config()
        config.update(space=space_to_config(self.space), cell_genotype=self.cell_genotype.to_dict(),
                      pool_bn=self.pool_bn)
        return config

"""Networks: the chain cell-search supernet (DARTS / H^c-DAS) and its layout arithmetic.

A supernet is a Keras layer ``call(images, arch, training)`` that takes the *raw* architecture variables
by name (as ``SearchSpace.arch_shapes`` names them) and softmaxes them itself, so the model that owns
the variables (``search_model``) knows nothing of what they mean.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdas_tf import ops
from hdas_tf.cells import SearchCell
from hdas_tf.search_space import SearchSpace, space_from_config, space_to_config

_PACKAGE = "hdas_tf"


def chain_layout(layers: int, init_channels: int, stem_multiplier: int, reductions: tuple[int, int]):
    """Per cell: (channels C, reduction, reduction_prev, C_prev_prev, C_prev) of a DARTS chain (DESIGN §4)."""
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
    """

    def __init__(self, space: SearchSpace | dict, pool_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.space = space if isinstance(space, SearchSpace) else space_from_config(space)
        self.pool_bn = pool_bn
        sp = self.space
        self.stem_conv = keras.layers.Conv2D(3 * sp.init_channels, 3, padding="same", use_bias=False, name="stem_conv")
        self.stem_bn = ops.batch_norm(True, name="stem_bn")
        self.cells, self.groups = [], []
        layout = chain_layout(sp.layers, sp.init_channels, 3, sp.reduction_indices())
        for i, (c, reduction, reduction_prev, _, _) in enumerate(layout):
            self.cells.append(SearchCell(c, reduction, reduction_prev, sp.cell_ops, sp.steps, pool_bn, name=f"cell_{i}"))
            self.groups.append(sp.cell_group(i))
        self.classifier = keras.layers.Dense(sp.num_classes, name="classifier")

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
        weights = {g: tf.nn.softmax(arch[f"alpha_{g}"], axis=-1) for g in self.space.cell_groups}
        s0 = s1 = self.stem_bn(self.stem_conv(images), training=training)
        for cell, group in zip(self.cells, self.groups):
            s0, s1 = s1, cell(s0, s1, weights[group], training=training)
        return self.classifier(tf.reduce_mean(s1, axis=[1, 2]))

    def get_config(self):
        config = super().get_config()
        config.update(space=space_to_config(self.space), pool_bn=self.pool_bn)
        return config

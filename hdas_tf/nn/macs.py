"""Multiply-accumulates and parameters of evaluation networks, counted analytically from layer configs and
shapes — the "mult-adds" of the DARTS-family tables.

What is counted, per image: convolutions (k·k·C_in·C_out per output position; depthwise k·k·C per
position) and dense layers (in·out). Pooling, BN, ReLU, additions, drop path and the auxiliary head are
not counted, as in the published figures. A convolution is counted at the output grid of the PyTorch
reference op, whatever kernel the TF graph uses to get there (a strided dilated convolution is computed
here at stride 1 and subsampled, which the count ignores).

No profiler and no forward pass: ``count_macs`` walks the network's layers in call order and carries
shapes with each layer's ``compute_output_shape``, so it costs milliseconds even for C=36, L=20.
"""

from __future__ import annotations

import keras
import numpy as np

from hdas_tf.nn import ops
from hdas_tf.nn.cells import FixedCell
from hdas_tf.nn.eval_networks import AUX_CHANNELS, AuxiliaryHead, ChainNetwork, ConvBN, StageNetwork
from hdas_tf.nn.stages import FixedStage


def _hw(shape, what):
    h, w = shape[1], shape[2]
    if h is None or w is None:
        raise ValueError(f"MACs of {what} need a known spatial size, received shape {tuple(shape)}")
    return h * w


def _stage_macs(stage, shape):
    """A ``FixedStage``: its projections of the stage input, then each live cell and its stage edges, all at the
    stage input's grid (stage edges and stage cells never reduce;
    BUILD_NOTES "Stage DAGs, the sliding window and β"). Dead cells are not built, so they cost nothing."""
    total, state = 0, None
    for projection in stage.projections:
        m, state = layer_macs(projection, shape)
        total += m
    state = (*shape[:3], stage.state_channels)
    for op in stage.edge_ops:
        total += layer_macs(op, state)[0]
    for cell in stage.stage_cells:
        total += layer_macs(cell, (state, state))[0]
    return total, stage.compute_output_shape(shape)


def _cell_macs(cell: FixedCell, s0_shape, s1_shape):
    """A fixed cell: both preprocessings at their inputs' grids, then each genotype edge at its source's grid."""
    m0, p0 = layer_macs(cell.preprocess0, s0_shape)
    m1, p1 = layer_macs(cell.preprocess1, s1_shape)
    states = [p0, p1]
    total, k = m0 + m1, 0
    for node in cell.nodes:
        out = None
        for _, src in node:
            m, out = layer_macs(cell.edge_ops[k], states[src])
            total += m
            k += 1
        states.append(out)
    return total, cell.compute_output_shape(s0_shape, s1_shape)


def layer_macs(layer, input_shape):
    """(MACs per image, output shape) of one layer applied to ``input_shape`` (batch, H, W, C).

    Knows the cell ops (``ReLUConvBN``, ``FactorizedReduce``, ``DilConv``, ``SepConv``, ``Pool``,
    ``Identity``, ``Zero``), BN, drop path, ``Dense`` (input (batch, features)), the stem ``ConvBN``, the
    ``AuxiliaryHead``, ``FixedCell`` (pass ``(s0_shape, s1_shape)`` as ``input_shape``) and ``FixedStage``.
    """
    if isinstance(layer, FixedCell):
        s0_shape, s1_shape = input_shape
        return _cell_macs(layer, tuple(s0_shape), tuple(s1_shape))
    shape = tuple(input_shape)
    if isinstance(layer, (ops.ReLUConvBN, ConvBN)):
        out = layer.compute_output_shape(shape)
        return layer.kernel_size ** 2 * shape[-1] * layer.filters * _hw(out, layer.name), out
    if isinstance(layer, ops.FactorizedReduce):
        out = layer.compute_output_shape(shape)
        return 2 * shape[-1] * (layer.filters // 2) * _hw(out, layer.name), out
    if isinstance(layer, ops.DilConv):
        out = layer.compute_output_shape(shape)
        depthwise = layer.kernel_size ** 2 * shape[-1]
        return (depthwise + shape[-1] * layer.filters) * _hw(out, layer.name), out
    if isinstance(layer, ops.SepConv):
        m1, mid = layer_macs(layer.block_1, shape)
        m2, out = layer_macs(layer.block_2, mid)
        return m1 + m2, out
    if isinstance(layer, (ops.Pool, ops.Zero)):
        return 0, layer.compute_output_shape(shape)
    if isinstance(layer, (ops.Identity, ops.DropPath, ops.BatchNorm)):
        return 0, shape
    if isinstance(layer, keras.layers.Dense):
        return shape[-1] * layer.units, (*shape[:-1], layer.units)
    if isinstance(layer, AuxiliaryHead):
        pooled, out = layer._spatial(shape)
        if any(n is None for n in pooled):
            raise ValueError(f"MACs of {layer.name!r} need a known spatial size, received shape {shape}")
        c1, c2 = AUX_CHANNELS
        m = shape[-1] * c1 * pooled[0] * pooled[1] + 4 * c1 * c2 * out[0] * out[1]
        return m + out[0] * out[1] * c2 * layer.num_classes, (shape[0], layer.num_classes)
    if isinstance(layer, FixedStage):
        return _stage_macs(layer, shape)
    raise ValueError(f"layer_macs: no MACs rule for layer {layer.name!r} of type {type(layer).__name__}")


def count_macs(model, image_shape=None) -> int:
    """Multiply-accumulates of one image through an evaluation network's inference path (no auxiliary head).

    Args:
      model: ChainNetwork or StageNetwork. Built here from ``image_shape`` if it is not yet built.
      image_shape: (H, W, channels). Defaults to the shape the model was constructed with, else its
        layout's design size (CIFAR 32×32×3, ImageNet 224×224×3).
    """
    if not isinstance(model, (ChainNetwork, StageNetwork)):
        raise ValueError(f"count_macs expects a ChainNetwork or StageNetwork, received {type(model).__name__}")
    image_shape = tuple(model.default_image_shape if image_shape is None else image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"count_macs: image_shape must be (H, W, channels), received {image_shape}")
    if not model.built:
        model.build((None, *image_shape))
    shape = (1, *image_shape)
    total, stem_shapes = 0, []
    for layer in model.stem:
        m, shape = layer_macs(layer, shape)
        total += m
        stem_shapes.append(shape)
    if isinstance(model, ChainNetwork):
        s0, s1 = (stem_shapes[0], stem_shapes[0]) if model.layout == "cifar" else (stem_shapes[1], stem_shapes[2])
        for cell in model.cells:
            m, out = layer_macs(cell, (s0, s1))
            total += m
            s0, s1 = s1, out
        shape = s1
    else:
        for s, stage in enumerate(model.stages):
            m, shape = layer_macs(stage, shape)
            total += m
            if s < 2:
                m, shape = layer_macs(model.reductions[s], (shape, shape))
                total += m
    m, _ = layer_macs(model.classifier, (1, shape[-1]))
    return int(total + m)


def count_params(model, include_aux: bool = False) -> int:
    """Trainable parameters of an evaluation network (BN moving statistics are not parameters); the
    auxiliary head's only with ``include_aux`` (the published counts leave it out).

    An unbuilt model is built from shapes at its default image size first (no forward pass).
    """
    if not isinstance(model, (ChainNetwork, StageNetwork)):
        raise ValueError(f"count_params expects a ChainNetwork or StageNetwork, received {type(model).__name__}")
    if not model.built:
        model.build((None, *model.default_image_shape))
    skip = set()
    if model.auxiliary_head is not None and not include_aux:
        skip = {id(v) for v in model.auxiliary_head.trainable_weights}
    return int(sum(np.prod(v.shape, dtype=np.int64) for v in model.trainable_weights if id(v) not in skip))

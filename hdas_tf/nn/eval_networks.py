"""Evaluation networks: a derived genotype trained from scratch — the chain network (DARTS / H^c-DAS) and the
stage network (H^s-DAS), in CIFAR and ImageNet layouts, with the auxiliary head and drop path
(BUILD_NOTES "Evaluation networks and training recipes").

Both are ``keras.Model`` subclasses that build every variable from shapes alone (``build(images_shape)``):
an eager forward pass of a C=36, L=20 network costs seconds and tracing it more, while building from shapes
creates the 3.3 M weights in a fraction of that. ``call(images, training)`` returns the logits; in training
with the auxiliary head it returns ``(logits, aux_logits)`` so that the trainer can add the weighted
auxiliary loss (DARTS: 0.4) — the head is not run at all at inference, and exported models never see it.

Drop path: the model owns a non-trainable scalar variable ``drop_path_rate`` that the trainer sets each
epoch (``drop_path_rate_at``: linear ramp, DARTS); a variable rather than a Python attribute so that
changing it never retraces the compiled step. It applies to every non-identity op of the cells and, in stage
networks, of the stage edges (the pooling edges, as the H-DAS reference), in training only.
"""

from __future__ import annotations

import math
import warnings

import keras
import tensorflow as tf

from hdas_tf.errors import ConfigError, GenotypeError
from hdas_tf.nn import ops
from hdas_tf.nn import convolutions
from hdas_tf.nn.cells import FixedCell
from hdas_tf.space.genotypes import Genotype
from hdas_tf.space.registry import resolve
from hdas_tf.nn.supernets import chain_layout
from hdas_tf.space.search_space import SearchSpace
from hdas_tf.nn.stages import FixedStage

_PACKAGE = "hdas_tf"
LAYOUTS = ("cifar", "imagenet")
# The image size each layout is designed for: used when a network must be built without a given shape.
DEFAULT_IMAGE_SHAPE = {"cifar": (32, 32, 3), "imagenet": (224, 224, 3)}
AUX_CHANNELS = (128, 768)


def drop_path_rate_at(epoch, epochs, max_rate) -> float:
    """The drop path rate of 0-based ``epoch``: ``max_rate · epoch / epochs`` (linear ramp, as DARTS)."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"drop_path_rate_at: epochs must be a positive integer, received {epochs!r}")
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"drop_path_rate_at: max_rate must be in [0, 1), received {max_rate!r}")
    if epoch < 0:
        raise ValueError(f"drop_path_rate_at: epoch must be >= 0, received {epoch!r}")
    return float(max_rate) * float(epoch) / float(epochs)


def as_genotype(genotype) -> Genotype:
    """A Genotype from a Genotype, its JSON dict (``Genotype.to_dict``), a registry name or a file path."""
    if isinstance(genotype, Genotype):
        genotype.validate()
        return genotype
    if isinstance(genotype, dict):
        return Genotype.from_dict(genotype)
    if isinstance(genotype, str):
        return resolve(genotype)
    raise ValueError(f"genotype must be a Genotype, its dict, a registry name or a path, received {genotype!r}")


def _cell_dict(genotype: Genotype, group: str) -> dict:
    cell = genotype.cell_for(group)
    return {"nodes": [[[op, int(src)] for op, src in node] for node in cell.nodes],
            "concat": [int(c) for c in cell.concat]}


def _stage_dict(genotype: Genotype, s: int) -> dict:
    stage = genotype.stage_for(s)
    return {"cells": [[[op, int(src)] for op, src in cell] for cell in stage.cells],
            "concat": [int(c) for c in stage.concat]}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvBN(keras.layers.Layer):
    """k×k conv (no bias, symmetric padding (k−1)/2 as PyTorch) → affine BN with running statistics.

    The first stem convolution; the later stem convolutions start with a ReLU and are ``ops.ReLUConvBN``.

    Args:
      filters: int. Output channels.
      kernel_size: int. Defaults to 3.
      stride: int. 1 or 2. Defaults to 1.
    """

    def __init__(self, filters: int, kernel_size: int = 3, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        ops._check_positive("ConvBN", filters=filters, kernel_size=kernel_size)
        ops._check_stride("ConvBN", stride)
        self.filters, self.kernel_size, self.stride = filters, kernel_size, stride
        self.bn = ops.batch_norm(True, True, name="bn")

    def build(self, shape):
        self.kernel = ops._kernel(self, (self.kernel_size, self.kernel_size, shape[-1], self.filters), "kernel")
        self.bn.build(self.compute_output_shape(shape))

    def call(self, x, training=None):
        z = convolutions.torch_conv2d(x, self.kernel, self.stride, (self.kernel_size - 1) // 2)
        return self.bn(z, training=training)

    def compute_output_shape(self, shape):
        return ops._strided_shape(shape, self.stride, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, stride=self.stride)
        return config


# Stride-2 steps from the images to the auxiliary head's input: CIFAR's two reductions; ImageNet's three stem
# convolutions to stem1, then its two reductions (224 → 7).
_AUX_HALVINGS = {"cifar": 2, "imagenet": 5}
# The stride of the head's 5×5 average pool (the reference's: 8×8 → 2×2 on CIFAR, 7×7 → 2×2 on ImageNet).
_AUX_POOL_STRIDE = {"cifar": 3, "imagenet": 2}


def check_auxiliary_fits(layout: str, image_shape) -> None:
    """Raises ConfigError when images of ``image_shape`` (H, W, C) are too small for the auxiliary head of a
    ``layout`` network: known from the shape alone, so a run can refuse before it writes anything."""
    shape = (None, *tuple(image_shape)[:2], None)
    for _ in range(_AUX_HALVINGS[layout]):
        shape = ops._strided_shape(shape, 2, None)  # every stride-2 op of the networks: ceil(n / 2)
    AuxiliaryHead._check_fits(shape, _AUX_POOL_STRIDE[layout], tuple(image_shape))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AuxiliaryHead(keras.layers.Layer):
    """The auxiliary classifier on the second reduction's output (DARTS;
    BUILD_NOTES "Evaluation networks and training recipes").

    CIFAR: ReLU → 5×5 avg pool stride 3 (no padding) → 1×1 conv 128 → BN → ReLU → 2×2 conv 768 → BN → ReLU
    → dense. ImageNet: the same with pool stride 2 and no BN after the 2×2 conv (as the reference). Without
    padding the pool never averages padding, so PyTorch's ``count_include_pad`` does not matter. The
    feature map is flattened as the reference does: 1×1 for the designed input sizes (CIFAR 8×8 → 2×2 → 1×1,
    ImageNet 7×7 → 2×2 → 1×1); for other sizes the dense input grows with it, so its spatial size must be
    known when the head is built (it is assumed 1×1 if unknown).

    Args:
      num_classes: int.
      layout: str. "cifar" or "imagenet".
    """

    def __init__(self, num_classes: int, layout: str = "cifar", **kwargs):
        super().__init__(**kwargs)
        ops._check_positive("AuxiliaryHead", num_classes=num_classes)
        if layout not in LAYOUTS:
            raise ValueError(f"AuxiliaryHead: layout must be one of {LAYOUTS}, received {layout!r}")
        self.num_classes, self.layout = num_classes, layout
        self.pool_stride = _AUX_POOL_STRIDE[layout]
        self.bn_1 = ops.batch_norm(True, True, name="bn_1")
        self.bn_2 = ops.batch_norm(True, True, name="bn_2") if layout == "cifar" else None
        self.classifier = keras.layers.Dense(num_classes, kernel_initializer=ops.torch_init(), name="classifier")

    @staticmethod
    def _pooled(shape, pool_stride: int) -> list:
        """Spatial sizes [H, W] after the 5×5 pool (None where unknown)."""
        return [None if n is None else (n - 5) // pool_stride + 1 for n in shape[1:3]]

    def _spatial(self, shape):
        """Spatial sizes [H, W] after the pool and after the 2×2 conv (None where unknown)."""
        pooled = self._pooled(shape, self.pool_stride)
        return pooled, [None if n is None else n - 1 for n in pooled]

    @staticmethod
    def _check_fits(shape, pool_stride: int, images=None):
        if any(n is not None and n < 2 for n in AuxiliaryHead._pooled(shape, pool_stride)):
            source = f"images {images[0]}×{images[1]} give {tuple(shape)[1:3]} there" if images else \
                f"input {tuple(shape)}"
            raise ConfigError(f"AuxiliaryHead: {source}, too small for the 5×5 pool (stride {pool_stride}) and "
                              f"2×2 conv; it needs at least {4 + pool_stride + 1} pixels a side (CIFAR 32×32 "
                              "images give 8×8 here): use larger images (--image_size) or --auxiliary=false")

    def build(self, shape):
        self._check_fits(shape, self.pool_stride)
        pooled, out = self._spatial(shape)
        c1, c2 = AUX_CHANNELS
        self.kernel_1 = ops._kernel(self, (1, 1, shape[-1], c1), "kernel_1")
        self.kernel_2 = ops._kernel(self, (2, 2, c1, c2), "kernel_2")
        self.bn_1.build((shape[0], pooled[0], pooled[1], c1))
        if self.bn_2 is not None:
            self.bn_2.build((shape[0], out[0], out[1], c2))
        positions = math.prod(1 if n is None else n for n in out)
        self.classifier.build((shape[0], positions * c2))

    def call(self, x, training=None):
        x = tf.nn.avg_pool2d(tf.nn.relu(x), 5, self.pool_stride, "VALID")
        x = tf.nn.relu(self.bn_1(convolutions.torch_conv2d(x, self.kernel_1), training=training))
        x = convolutions.torch_conv2d(x, self.kernel_2)
        if self.bn_2 is not None:
            x = self.bn_2(x, training=training)
        x = tf.nn.relu(x)
        return self.classifier(tf.reshape(x, [tf.shape(x)[0], -1]))

    def compute_output_shape(self, shape):
        return (shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, layout=self.layout)
        return config


def _stem_layers(layout: str, channels: int, out_channels: int) -> list:
    """CIFAR: one 3×3 conv + BN. ImageNet: 3×3 s2 conv to C/2 + BN; ReLU, 3×3 s2 conv to C, BN; ReLU, 3×3 s2
    conv to ``out_channels``, BN (224 → 112 → 56 → 28; BUILD_NOTES "Evaluation networks and training recipes")."""
    if layout == "cifar":
        return [ConvBN(out_channels, 3, 1, name="stem")]
    return [ConvBN(channels // 2, 3, 2, name="stem0_conv_1"),
            ops.ReLUConvBN(channels, 3, 2, name="stem0_conv_2"),
            ops.ReLUConvBN(out_channels, 3, 2, name="stem1")]


class _EvalNetwork(keras.Model):
    """What both evaluation networks share: arguments, the drop-path-rate variable, stem, aux head, head."""

    def __init__(self, genotype, num_classes, init_channels, layout, auxiliary, pool_bn, drop_path, input_shape,
                 **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.genotype = as_genotype(genotype)
        if self.genotype.cells is None:
            raise GenotypeError(f"{name}: genotype {self.genotype.name!r} has stage DAGs but no cells; combine "
                                "it with a cell genotype first (cells.with_stages(stages))")
        ops._check_positive(name, num_classes=num_classes, init_channels=init_channels)
        if layout not in LAYOUTS:
            raise ValueError(f"{name}: layout must be one of {LAYOUTS}, received {layout!r}")
        if layout == "imagenet" and init_channels < 2:
            raise ConfigError(f"{name}: the ImageNet stem halves init_channels, received {init_channels}")
        self.num_classes, self.init_channels, self.layout = num_classes, init_channels, layout
        self.auxiliary, self.pool_bn, self.use_drop_path = bool(auxiliary), bool(pool_bn), bool(drop_path)
        self._images_shape = None if input_shape is None else tuple(input_shape)
        # Set by the trainer every epoch; a variable, so a new value never retraces the train step. Kept
        # float32 under mixed precision (DropPath casts it to the activations' dtype).
        self.drop_path_rate = self.add_weight(shape=(), initializer="zeros", trainable=False, autocast=False,
                                              name="drop_path_rate")
        self.auxiliary_head = AuxiliaryHead(num_classes, layout, name="auxiliary_head") if auxiliary else None
        self.classifier = keras.layers.Dense(num_classes, kernel_initializer=ops.torch_init(), name="classifier")

    @property
    def default_image_shape(self) -> tuple:
        """(H, W, 3): the shape given to the constructor, else the layout's design size."""
        return tuple(self._images_shape) if self._images_shape is not None else DEFAULT_IMAGE_SHAPE[self.layout]

    def _build_if_shape_given(self):
        if self._images_shape is not None:
            self.build((None, *self._images_shape))

    def _check_images_shape(self, images_shape):
        images_shape = tuple(images_shape)
        if len(images_shape) != 4:
            raise ValueError(f"{type(self).__name__}.build: expected (batch, H, W, channels), received {images_shape}")
        return images_shape

    def _drop_rate(self, training):
        # At inference the cells skip drop path entirely (no rate → no graph ops).
        if training and self.use_drop_path:
            return tf.convert_to_tensor(self.drop_path_rate)
        return None

    def _head(self, x, aux_logits):
        logits = self.classifier(tf.reduce_mean(x, axis=[1, 2]))
        return logits if aux_logits is None else (logits, aux_logits)

    def compute_output_shape(self, images_shape):
        """The inference output (logits); in training with the auxiliary head, a pair of this shape."""
        return (tuple(images_shape)[0], self.num_classes)

    def _base_config(self):
        config = super().get_config()
        config.update(genotype=self.genotype.to_dict(), num_classes=self.num_classes,
                      init_channels=self.init_channels, layout=self.layout, auxiliary=self.auxiliary,
                      pool_bn=self.pool_bn, drop_path=self.use_drop_path,
                      input_shape=None if self._images_shape is None else list(self._images_shape))
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChainNetwork(_EvalNetwork):
    """The DARTS / H^c-DAS evaluation network: stem, a chain of L fixed cells, GAP → dense
    (BUILD_NOTES "Evaluation networks and training recipes").

    CIFAR layout: 3×3 conv to 3C + BN; reduction cells at L//3 and 2L//3, where C doubles. ImageNet layout:
    stem0 (3×3 s2 conv to C/2, BN, ReLU, 3×3 s2 conv to C, BN: 56×56) and stem1 (ReLU, 3×3 s2 conv, BN:
    28×28); the first cell reads (stem0, stem1) and reduces stem0 with FactorizedReduce as if a reduction
    cell had made it. Each cell takes its genotype from its stage position (normal1, reduce1, normal2,
    reduce2, normal3 — a shared genotype serves all normal / all reduction cells). The auxiliary head reads
    the output of cell 2L//3 (the second reduction).

    Args:
      genotype: Genotype, its dict, or a registry name. Its cells are used; stage DAGs are ignored.
      num_classes: int. Defaults to 10.
      init_channels: int. C. Defaults to 36.
      layers: int. L, cells in the chain (>= 3). Defaults to 20.
      layout: str. "cifar" or "imagenet". Defaults to "cifar".
      auxiliary: bool. Build the auxiliary head. Defaults to True.
      pool_bn: bool. Affine BN after pooling ops, like every BN of an evaluation network (the H-DAS reference;
        False is the original DARTS evaluation network). Defaults to True.
      drop_path: bool. Build drop path on every non-identity op (in a stage network also on the pooling stage
        edges); its rate is ``drop_path_rate``. Defaults to True.
      input_shape: optional (H, W, channels). When given, the network is built at construction.

    ``call(images, training=None)``: logits [batch, num_classes]; with ``training`` and the auxiliary head,
    ``(logits, aux_logits)``.

    Example:
      ```python
      net = ChainNetwork("DARTS_V2", 10, 36, 20, input_shape=(32, 32, 3))
      net.drop_path_rate.assign(drop_path_rate_at(epoch, 600, 0.2))
      logits, aux_logits = net(images, training=True)
      ```
    """

    def __init__(self, genotype, num_classes: int = 10, init_channels: int = 36, layers: int = 20,
                 layout: str = "cifar", auxiliary: bool = True, pool_bn: bool = True, drop_path: bool = True,
                 input_shape=None, **kwargs):
        super().__init__(genotype, num_classes, init_channels, layout, auxiliary, pool_bn, drop_path, input_shape,
                         **kwargs)
        if not isinstance(layers, int) or layers < 3:
            raise ConfigError(f"ChainNetwork: layers must be an integer >= 3 (two reduction cells and a normal "
                              f"one), received {layers!r}")
        if layout == "imagenet" and init_channels % 2:
            raise ConfigError(f"ChainNetwork: the ImageNet layout needs an even init_channels (the first cell "
                              f"halves stem0 with FactorizedReduce into two halves), received {init_channels}")
        # ``layers`` is a keras.Model property (the sublayers), so the count lives under another name.
        self.num_cells = layers
        c = init_channels
        self.stem = _stem_layers(layout, c, 3 * c if layout == "cifar" else c)
        # The stage-position rule of the search space (BUILD_NOTES "Cells, chains and stage-specific cells"), so
        # search and evaluation agree.
        rule = SearchSpace(cells="stage_specific", layers=layers)
        self.reduction_indices = rule.reduction_indices()
        self.aux_index = self.reduction_indices[1]
        self.cells, self.cell_groups = [], []
        for i, (channels, reduction, reduction_prev, _, _) in enumerate(
                chain_layout(layers, c, 3, self.reduction_indices)):
            group = rule.cell_group(i)
            if layout == "imagenet" and i == 0:
                reduction_prev = True  # stem0 is at twice stem1's resolution
            cell = _cell_dict(self.genotype, group)
            self.cells.append(FixedCell(channels, cell["nodes"], cell["concat"], reduction, reduction_prev,
                                        affine=True, pool_bn=pool_bn, drop_path=drop_path, name=f"cell_{i}"))
            self.cell_groups.append(group)
        self._build_if_shape_given()

    def build(self, images_shape):
        if self.built:
            return
        shape = self._check_images_shape(images_shape)
        stem_shapes = []
        for layer in self.stem:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            stem_shapes.append(shape)
        # CIFAR: both inputs of the first cell are the stem; ImageNet: (stem0, stem1).
        s0, s1 = (stem_shapes[0], stem_shapes[0]) if self.layout == "cifar" else (stem_shapes[1], stem_shapes[2])
        for i, cell in enumerate(self.cells):
            cell.build(s0, s1)
            s0, s1 = s1, cell.compute_output_shape(s0, s1)
            if i == self.aux_index and self.auxiliary_head is not None:
                self.auxiliary_head.build(s1)
        self.classifier.build((shape[0], s1[-1]))

    def call(self, images, training=None):
        drop_rate = self._drop_rate(training)
        x = images
        stem_out = []
        for layer in self.stem:
            x = layer(x, training=training)
            stem_out.append(x)
        s0, s1 = (stem_out[0], stem_out[0]) if self.layout == "cifar" else (stem_out[1], stem_out[2])
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop_rate, training=training)
            if i == self.aux_index and self.auxiliary_head is not None and training:
                aux_logits = self.auxiliary_head(s1, training=training)
        return self._head(s1, aux_logits)

    def get_config(self):
        config = self._base_config()
        config.update(layers=self.num_cells)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StageNetwork(_EvalNetwork):
    """The H^s-DAS evaluation network: stem, three stage DAGs separated by two reduction cells
    (BUILD_NOTES "Evaluation networks and training recipes").

    Stage s (0, 1, 2) is a ``FixedStage`` of width C_s = 2^s·C built from ``genotype.stage_for(s)`` with
    cell ``normal{s+1}``; its output is the concat of two cells (8·C_s channels). Reduction cell s+1
    (``reduce{s+1}``, width C_{s+1}) reads the previous stage's output as both of its inputs, so both
    preprocessings are 1×1 ReLUConvBN. The auxiliary head reads the second reduction's output; the
    classifier is GAP → dense on 32C channels. Cells per stage come from each DAG; dead cells (no path to
    the stage output) are not built. CIFAR stem: 3×3 conv to 4C + BN; ImageNet stem: 3×3 s2 conv to C/2,
    BN, ReLU, 3×3 s2 conv to C, BN, ReLU, 3×3 s2 conv to 4C, BN (stages at 28, 14, 7).

    Args:
      genotype: Genotype (or its dict, or a registry name) with cells and stage DAGs (or stage lengths:
        chain stages of those lengths).
      num_classes, init_channels, layout, auxiliary, pool_bn, drop_path, input_shape: as ``ChainNetwork``.

    ``call(images, training=None)``: as ``ChainNetwork``.
    """

    def __init__(self, genotype, num_classes: int = 10, init_channels: int = 36, layout: str = "cifar",
                 auxiliary: bool = True, pool_bn: bool = True, drop_path: bool = True, input_shape=None, **kwargs):
        super().__init__(genotype, num_classes, init_channels, layout, auxiliary, pool_bn, drop_path, input_shape,
                         **kwargs)
        if self.genotype.stages is None and self.genotype.stage_lengths is None:
            raise GenotypeError(f"StageNetwork: genotype {self.genotype.name!r} has no stage DAGs and no stage "
                                "lengths; use ChainNetwork (or build_eval_network) for a chain of cells")
        c = init_channels
        self.stem = _stem_layers(layout, c, 4 * c)
        self.stages, self.reductions = [], []
        for s in range(3):
            width = c * 2 ** s
            self.stages.append(FixedStage(_stage_dict(self.genotype, s), _cell_dict(self.genotype, f"normal{s + 1}"),
                                          width, pool_bn=pool_bn, drop_path=drop_path, affine=True,
                                          name=f"stage_{s}"))
            if s < 2:
                cell = _cell_dict(self.genotype, f"reduce{s + 1}")
                self.reductions.append(FixedCell(2 * width, cell["nodes"], cell["concat"], reduction=True,
                                                 reduction_prev=False, affine=True, pool_bn=pool_bn,
                                                 drop_path=drop_path, name=f"reduce_{s + 1}"))
        self._build_if_shape_given()

    @property
    def stage_lengths(self) -> tuple:
        """Cells per stage in the genotype's DAGs (dead cells included)."""
        return tuple(len(self.genotype.stage_for(s).cells) for s in range(3))

    def build(self, images_shape):
        if self.built:
            return
        shape = self._check_images_shape(images_shape)
        for layer in self.stem:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        for s, stage in enumerate(self.stages):
            stage.build(shape)
            shape = stage.compute_output_shape(shape)
            if s < 2:
                self.reductions[s].build(shape, shape)
                shape = self.reductions[s].compute_output_shape(shape, shape)
                if s == 1 and self.auxiliary_head is not None:
                    self.auxiliary_head.build(shape)
        self.classifier.build((shape[0], shape[-1]))

    def call(self, images, training=None):
        drop_rate = self._drop_rate(training)
        x = images
        for layer in self.stem:
            x = layer(x, training=training)
        aux_logits = None
        for s, stage in enumerate(self.stages):
            x = stage(x, drop_rate, training=training)
            if s < 2:
                x = self.reductions[s](x, x, drop_rate, training=training)
                if s == 1 and self.auxiliary_head is not None and training:
                    aux_logits = self.auxiliary_head(x, training=training)
        return self._head(x, aux_logits)

    def get_config(self):
        return self._base_config()


def build_eval_network(genotype, num_classes: int = 10, init_channels: int = 36, layers: int | None = 20,
                       layout: str = "cifar", auxiliary: bool = True, pool_bn: bool = True, drop_path: bool = True,
                       input_shape=None) -> keras.Model:
    """The evaluation network of a genotype: a ``ChainNetwork`` when it has no stage level (no stage DAGs
    and no stage lengths), else a ``StageNetwork``.

    For a stage network the cells per stage come from the DAGs and ``layers`` is not used; a ``layers``
    that disagrees with the DAGs (3 stages + 2 reduction cells) only warns, so that one training flag
    default serves both kinds of genotype.
    """
    genotype = as_genotype(genotype)
    if genotype.stages is None and genotype.stage_lengths is None:
        if layers is None:
            raise ValueError("build_eval_network: a chain network needs layers, received None")
        return ChainNetwork(genotype, num_classes, init_channels, layers, layout, auxiliary, pool_bn, drop_path,
                            input_shape)
    net = StageNetwork(genotype, num_classes, init_channels, layout, auxiliary, pool_bn, drop_path, input_shape)
    total = sum(net.stage_lengths) + 2
    if layers is not None and layers != total:
        warnings.warn(f"build_eval_network: layers={layers} is not used by a stage network; genotype "
                      f"{genotype.name!r} has {net.stage_lengths} cells per stage + 2 reduction cells = {total}",
                      stacklevel=2)
    return net

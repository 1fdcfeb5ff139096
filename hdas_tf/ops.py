"""Primitive operations of DARTS-family search spaces as Keras layers, and the two op registries.

Conventions follow the PyTorch reference code so that parameter counts and sampling grids match
(DESIGN §3): convolutions have no bias; BatchNorm uses epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1);
padding is explicit and symmetric, because Keras 'same' pads bottom/right only at stride 2; average
pooling excludes the padding from its count (PyTorch ``count_include_pad=False``).

BatchNorm is ``synchronized=True`` everywhere: under a multi-replica strategy the batch statistics are
global, so a two-replica step equals a one-device step (KERAS_NOTES §1.4); on one device it is a no-op.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Canonical op order of the cell level, 'none' last (DESIGN §3). Index order is part of the checkpoint
# format: α's last axis follows this tuple (or the op subset a search space names, in this order).
CELL_OPS = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "none",
)
# Stage-level ops: parameter-free (but for the pooling BN), always stride 1 (DESIGN §3).
STAGE_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "none")

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
_PACKAGE = "hdas_tf"


def batch_norm(affine: bool, name: str | None = None) -> keras.layers.BatchNormalization:
    """BatchNorm with the PyTorch defaults; non-affine (no γ/β) in search networks."""
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        center=affine,
        scale=affine,
        synchronized=True,
        name=name,
    )


def _pad(x, p: int, value: float = 0.0):
    if p == 0:
        return x
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=value)


def _check_positive(name: str, **values):
    for key, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: {key} must be a positive integer, received {value!r}")


def _check_stride(name: str, stride):
    if stride not in (1, 2):
        raise ValueError(f"{name}: stride must be 1 or 2, received {stride!r}")


class _Op(keras.layers.Layer):
    """Base: records the constructor arguments so that get_config lists every one of them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(self._args)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Zero(_Op):
    """The 'none' op: zeros of the (strided) output shape."""

    def __init__(self, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        _check_stride("Zero", stride)
        self.stride = stride
        self._args = dict(stride=stride)

    def call(self, x):
        if self.stride == 1:
            return tf.zeros_like(x)
        return tf.zeros_like(x[:, :: self.stride, :: self.stride, :])

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, shape[-1])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Identity(_Op):
    """skip_connect at stride 1."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._args = {}

    def call(self, x):
        return x


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReLUConvBN(_Op):
    """ReLU → k×k conv (no bias, symmetric padding) → BN: the cell preprocessing."""

    def __init__(self, filters: int, kernel_size: int = 1, stride: int = 1, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("ReLUConvBN", filters=filters, kernel_size=kernel_size)
        _check_stride("ReLUConvBN", stride)
        self.filters, self.kernel_size, self.stride, self.affine = filters, kernel_size, stride, affine
        self._args = dict(filters=filters, kernel_size=kernel_size, stride=stride, affine=affine)
        self.conv = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding="valid", use_bias=False, name="conv")
        self.bn = batch_norm(affine, name="bn")

    def build(self, shape):
        self.conv.build(_padded_shape(shape, (self.kernel_size - 1) // 2))
        self.bn.build(self.conv.compute_output_shape(_padded_shape(shape, (self.kernel_size - 1) // 2)))

    def call(self, x, training=None):
        x = self.conv(_pad(tf.nn.relu(x), (self.kernel_size - 1) // 2))
        return self.bn(x, training=training)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FactorizedReduce(_Op):
    """ReLU; two 1×1 stride-2 convs (the second on the input shifted by one pixel); concat; BN.

    The shift pads bottom/right by one and drops the first row and column, as the reference does,
    so odd spatial sizes give the same output size as the first branch.
    """

    def __init__(self, filters: int, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("FactorizedReduce", filters=filters)
        if filters % 2:
            raise ValueError(f"FactorizedReduce: filters must be even (two halves), received {filters}")
        self.filters, self.affine = filters, affine
        self._args = dict(filters=filters, affine=affine)
        half = filters // 2
        self.conv_1 = keras.layers.Conv2D(half, 1, strides=2, padding="valid", use_bias=False, name="conv_1")
        self.conv_2 = keras.layers.Conv2D(half, 1, strides=2, padding="valid", use_bias=False, name="conv_2")
        self.bn = batch_norm(affine, name="bn")

    def build(self, shape):
        self.conv_1.build(shape)
        self.conv_2.build(shape)
        self.bn.build(_strided_shape(shape, 2, self.filters))

    def call(self, x, training=None):
        x = tf.nn.relu(x)
        shifted = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
        out = tf.concat([self.conv_1(x), self.conv_2(shifted)], axis=-1)
        return self.bn(out, training=training)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, 2, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DilConv(_Op):
    """ReLU → depthwise k×k (dilation d, stride on it) → pointwise 1×1 → BN."""

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, dilation: int = 2, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("DilConv", filters=filters, kernel_size=kernel_size, dilation=dilation)
        _check_stride("DilConv", stride)
        self.filters, self.kernel_size, self.stride, self.dilation, self.affine = (
            filters, kernel_size, stride, dilation, affine)
        self._args = dict(filters=filters, kernel_size=kernel_size, stride=stride, dilation=dilation, affine=affine)
        self.padding = dilation * (kernel_size - 1) // 2
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, strides=stride, dilation_rate=dilation, padding="valid", use_bias=False, name="depthwise")
        self.pointwise = keras.layers.Conv2D(filters, 1, use_bias=False, name="pointwise")
        self.bn = batch_norm(affine, name="bn")

    def build(self, shape):
        self.depthwise.build(_padded_shape(shape, self.padding))
        mid = _strided_shape(shape, self.stride, shape[-1])
        self.pointwise.build(mid)
        self.bn.build(_strided_shape(shape, self.stride, self.filters))

    def call(self, x, training=None):
        x = self.depthwise(_pad(tf.nn.relu(x), self.padding))
        return self.bn(self.pointwise(x), training=training)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SepConv(_Op):
    """Two DilConv blocks with dilation 1; the stride only in the first (DESIGN §3)."""

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("SepConv", filters=filters, kernel_size=kernel_size)
        _check_stride("SepConv", stride)
        self.filters, self.kernel_size, self.stride, self.affine = filters, kernel_size, stride, affine
        self._args = dict(filters=filters, kernel_size=kernel_size, stride=stride, affine=affine)
        # Ops inside cells keep the width (C_in = C_out), so both blocks output ``filters`` channels.
        self.block_1 = DilConv(filters, kernel_size, stride, 1, affine, name="block_1")
        self.block_2 = DilConv(filters, kernel_size, 1, 1, affine, name="block_2")

    def build(self, shape):
        self.block_1.build(shape)
        self.block_2.build(_strided_shape(shape, self.stride, shape[-1]))

    def call(self, x, training=None):
        return self.block_2(self.block_1(x, training=training), training=training)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Pool(_Op):
    """3×3 max or average pooling, padding 1, then (optionally) BN.

    Max pooling pads with -inf and average pooling divides by the count of real pixels, as PyTorch
    does with ``padding=1, count_include_pad=False``.
    """

    def __init__(self, kind: str, stride: int = 1, bn: bool = True, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("max", "avg"):
            raise ValueError(f"Pool: kind must be 'max' or 'avg', received {kind!r}")
        _check_stride("Pool", stride)
        self.kind, self.stride, self.use_bn, self.affine = kind, stride, bn, affine
        self._args = dict(kind=kind, stride=stride, bn=bn, affine=affine)
        self.bn = batch_norm(affine, name="bn") if bn else None

    def build(self, shape):
        if self.bn is not None:
            self.bn.build(_strided_shape(shape, self.stride, shape[-1]))

    def call(self, x, training=None):
        s = self.stride
        if self.kind == "max":
            out = tf.nn.max_pool2d(x, 3, s, [[0, 0], [1, 1], [1, 1], [0, 0]])
        elif s == 1:
            out = tf.nn.avg_pool2d(x, 3, 1, "SAME")  # TF's SAME average excludes padding; symmetric at k=3, s=1
        else:
            ones = tf.ones_like(x[:1, :, :, :1])
            out = tf.nn.avg_pool2d(_pad(x, 1), 3, s, "VALID") / tf.nn.avg_pool2d(_pad(ones, 1), 3, s, "VALID")
        if self.bn is not None:
            out = self.bn(out, training=training)
        return out

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, shape[-1])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropPath(_Op):
    """Drops a whole op output per example with probability ``rate`` in training (scaled by 1/keep).

    ``rate`` is a non-trainable variable so a callback can ramp it over epochs without retracing.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._args = dict(seed=seed)
        self.rate = None
        self._seed_generator = keras.random.SeedGenerator(seed)

    def build(self, shape):
        self.rate = self.add_weight(shape=(), initializer="zeros", trainable=False, name="rate")

    def call(self, x, training=None):
        if not training:
            return x
        keep = 1.0 - tf.cast(self.rate, x.dtype)
        mask = tf.floor(keep + keras.random.uniform(tf.stack([tf.shape(x)[0], 1, 1, 1]), seed=self._seed_generator, dtype=x.dtype))
        return x / keep * mask


def _padded_shape(shape, p):
    shape = tuple(shape)
    return (shape[0], None if shape[1] is None else shape[1] + 2 * p,
            None if shape[2] is None else shape[2] + 2 * p, shape[3])


def _strided_shape(shape, stride, channels):
    shape = tuple(shape)
    def out(n):
        return None if n is None else (n - 1) // stride + 1
    return (shape[0], out(shape[1]), out(shape[2]), channels)


def _skip(channels, stride, affine, pool_bn):
    return Identity() if stride == 1 else FactorizedReduce(channels, affine=affine)


# name → constructor(channels, stride, affine, pool_bn). One registry serves cell and stage level.
OPS = {
    "none": lambda c, stride, affine, pool_bn: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine, pool_bn: Pool("max", stride, bn=pool_bn, affine=False),
    "avg_pool_3x3": lambda c, stride, affine, pool_bn: Pool("avg", stride, bn=pool_bn, affine=False),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine, pool_bn: SepConv(c, 3, stride, affine),
    "sep_conv_5x5": lambda c, stride, affine, pool_bn: SepConv(c, 5, stride, affine),
    "dil_conv_3x3": lambda c, stride, affine, pool_bn: DilConv(c, 3, stride, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine, pool_bn: DilConv(c, 5, stride, 2, affine),
}


def make_op(name: str, channels: int, stride: int = 1, affine: bool = False, pool_bn: bool = True):
    """Builds the op ``name`` for ``channels`` in and out. Unknown names raise with the known ones."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(CELL_OPS)}")
    _check_stride(name, stride)
    return OPS[name](channels, stride, affine, pool_bn)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MixedOp(_Op):
    """A search edge: Σ_o softmax(α_edge)_o · o(x) over the op set (DARTS Eq. 2).

    The weights arrive already softmaxed. 'none' contributes zeros, so it is not computed at all.
    """

    def __init__(self, op_names, channels: int, stride: int = 1, pool_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        op_names = tuple(op_names)
        for name in op_names:
            if name not in OPS:
                raise ValueError(f"MixedOp: unknown op {name!r}; known ops: {', '.join(CELL_OPS)}")
        self.op_names, self.channels, self.stride, self.pool_bn = op_names, channels, stride, pool_bn
        self._args = dict(op_names=list(op_names), channels=channels, stride=stride, pool_bn=pool_bn)
        self.ops = [(i, make_op(n, channels, stride, affine=False, pool_bn=pool_bn))
                    for i, n in enumerate(op_names) if n != "none"]
        self._layers_list = [op for _, op in self.ops]

    def build(self, shape):
        for op in self._layers_list:
            op.build(shape)

    def call(self, x, weights, training=None):
        out = None
        for i, op in self.ops:
            y = weights[i] * op(x, training=training) if _takes_training(op) else weights[i] * op(x)
            out = y if out is None else out + y
        if out is None:  # an op set of 'none' alone
            out = Zero(self.stride)(x)
        return out

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.channels)


def _takes_training(op) -> bool:
    return not isinstance(op, (Identity, Zero))

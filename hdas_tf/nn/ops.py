"""The candidate ops of DARTS-family search spaces as Keras layers, built from ``op_registry`` specs.

Conventions follow the PyTorch reference code so that parameter counts and sampling grids match: no conv
bias; BN epsilon 1e-5, momentum 0.9 (PyTorch's 0.1), synchronized across replicas; symmetric padding;
average pooling excludes the padding. In training mode every conv op is conv → BN blocks with hand-written
backward passes (``chains.block``).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from hdas_tf.nn import batch_stats, chains
from hdas_tf.nn import convolutions
from hdas_tf.nn import tracing
from hdas_tf.space.op_registry import op_spec

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
_PACKAGE = "hdas_tf"


def batch_norm(affine: bool, running_stats: bool = True, name: str | None = None) -> "BatchNorm":
    """BatchNorm with the PyTorch defaults; non-affine (no γ/β) and batch-statistics-only in search networks."""
    return BatchNorm(affine=affine, running_stats=running_stats, name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNorm(keras.layers.Layer):
    """Batch normalisation with PyTorch semantics, cross-replica synchronized, in few graph ops.

    Why not ``keras.layers.BatchNormalization``: its synchronized variant emits ~60 graph ops per layer and made
    tracing a supernet several times slower (BUILD_NOTES "BatchNorm conventions"); its unsynchronized variant lets
    replica copies of the moving statistics diverge (BUILD_NOTES "Synchronized BN and distribution strategies").
    Here one replica uses the fused kernel (one op forward, one backward); several replicas all-reduce the
    per-channel sums, so a two-replica step equals a one-device step. As in PyTorch, the running variance is updated
    with the unbiased batch variance, and ``momentum`` is the weight of the old value (0.9 = PyTorch's 0.1).

    Args:
      affine: bool. Learn a scale γ and an offset β. Defaults to True.
      running_stats: bool. Keep moving mean/variance for inference. False (search networks) always
        normalises with the batch statistics, like PyTorch's ``track_running_stats=False``: a supernet
        is only ever run on batches, and this drops two variables and their update ops per BN.
        Defaults to True.
      epsilon: float. Defaults to 1e-5.
      momentum: float. Defaults to 0.9.
    """

    def __init__(self, affine: bool = True, running_stats: bool = True, epsilon: float = BN_EPSILON,
                 momentum: float = BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.affine, self.running_stats, self.epsilon, self.momentum = affine, running_stats, epsilon, momentum

    def build(self, shape):
        c = shape[-1]
        if self.affine:
            # autocast=False: statistics and affine terms stay float32 under a mixed-precision policy.
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma", autocast=False)
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta", autocast=False)
        if not self.running_stats:
            return
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="moving_mean",
                                           autocast=False)
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                               name="moving_variance", autocast=False)

    def call(self, x, training=None):
        scale, offset = self.scale_offset(x.shape[-1])
        if not training and self.running_stats:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=self.moving_mean.value, variance=self.moving_variance.value,
                epsilon=self.epsilon, is_training=False)
            return y
        y, mean, unbiased = batch_stats.normalize_batch(x, scale, offset, self.epsilon)
        if training and self.running_stats:
            self.update_running(mean, unbiased)
        return y

    def scale_offset(self, c: int):
        """(γ, β) as float32, or ones/zeros when not affine."""
        if self.affine:
            return tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        return tracing.ones_vector(c), tracing.zeros_vector(c)

    def update_running(self, mean, unbiased):
        """Running averages after a training-mode pass (PyTorch: unbiased variance, momentum = old weight)."""
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + tf.stop_gradient(mean) * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + tf.stop_gradient(unbiased) * (1.0 - m))

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(affine=self.affine, running_stats=self.running_stats, epsilon=self.epsilon,
                      momentum=self.momentum)
        return config


def _pointwise_views(kernel):
    """A [1, 1, C, C_out] 1×1 kernel variable as (the [C, C_out] tensor a block differentiates, the 4-D tensor
    its forward Conv2D reads): one variable read for both (``chains.ConvBNStep.pointwise_4d``)."""
    if kernel is None:
        return None, None
    kernel_4d = tf.convert_to_tensor(kernel)
    return tf.reshape(kernel_4d, kernel_4d.shape[-2:]), kernel_4d


def _conv_bn(bn: BatchNorm, x, training, pointwise_kernel=None, depthwise_kernel=None, stride=1, padding="SAME",
             conv_kernel=None, conv_stride=1, source=None):
    """[depthwise →] 1×1 (or ``conv_kernel``) → ``bn``: one fused block with a hand-written backward pass in
    training mode (``chains.block``), plain ops and the moving statistics in inference."""
    if not training and bn.running_stats:
        a = x if depthwise_kernel is None else convolutions.depthwise(x, depthwise_kernel, stride, padding)
        if conv_kernel is None:
            z = convolutions.pointwise(a, pointwise_kernel)
        else:
            z = tf.raw_ops.Conv2D(input=a, filter=tf.cast(conv_kernel, a.dtype), strides=[1, conv_stride, conv_stride, 1],
                                  padding="VALID")
        return bn(z, training=False)
    pw, pw_4d = _pointwise_views(pointwise_kernel)
    scale, offset = (bn.gamma, bn.beta) if bn.affine else (None, None)
    update = bool(training and bn.running_stats)
    out = chains.block(x, pw, scale, offset, depthwise_kernel=depthwise_kernel, stride=stride, padding=padding,
                  conv_kernel=conv_kernel, conv_stride=conv_stride, statistics=update, epsilon=bn.epsilon,
                  source=source, pointwise_4d=pw_4d)
    if not update:
        return out
    y, mean, unbiased = out
    bn.update_running(mean, unbiased)
    return y


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

    def compute_output_shape(self, shape):
        return shape


def torch_init(fan_in: int | None = None) -> keras.initializers.Initializer:
    """PyTorch's default conv/linear init (kaiming_uniform with a=√5): U(±1/√fan_in).

    ``fan_in`` as PyTorch counts it; None lets Keras count it from the shape, which agrees with PyTorch for
    dense and ordinary conv kernels but not for depthwise ones (Keras counts k·k·C for a [k, k, C, 1]
    kernel, PyTorch k·k), so depthwise and stacked kernels pass it explicitly.

    A new instance per weight: a Keras initializer draws its integer seed once, at construction, so one
    shared instance would give every kernel of the same shape the same values. The seeds come from
    Python's ``random``, which ``keras.utils.set_random_seed`` seeds, so a seeded run is reproducible.
    """
    if fan_in is None:
        return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _kernel(layer, shape, name, fan_in=None):
    return layer.add_weight(shape=shape, initializer=torch_init(fan_in), name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReLUConvBN(_Op):
    """ReLU → k×k conv (no bias, symmetric padding) → BN: the cell preprocessing."""

    def __init__(self, filters: int, kernel_size: int = 1, stride: int = 1, affine: bool = True,
                 running_stats: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("ReLUConvBN", filters=filters, kernel_size=kernel_size)
        _check_stride("ReLUConvBN", stride)
        self.filters, self.kernel_size, self.stride, self.affine = filters, kernel_size, stride, affine
        self._args = dict(filters=filters, kernel_size=kernel_size, stride=stride, affine=affine,
                          running_stats=running_stats)
        self.bn = batch_norm(affine, running_stats, name="bn")

    def build(self, shape):
        self.kernel = _kernel(self, (self.kernel_size, self.kernel_size, shape[-1], self.filters), "kernel")
        self.bn.build(_strided_shape(shape, self.stride, self.filters))

    def call(self, x, training=None):
        r = tf.nn.relu(x)
        if self.kernel_size == 1 and self.stride == 1:
            return _conv_bn(self.bn, r, training, pointwise_kernel=self.kernel, source=(x, 0))
        x = r
        z = convolutions.torch_conv2d(x, self.kernel, self.stride, (self.kernel_size - 1) // 2)
        return self.bn(z, training=training)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.filters)


def relu_conv_bn_same_input(layers, x, training=None):
    """Several 1×1 ``ReLUConvBN`` layers applied to the SAME input, as one block: one ReLU, one matmul with the
    concatenated kernels, one BN over the concatenated channels (statistics are per channel, so it equals
    separate BNs), split back. A stage cell reads one tensor as both of its inputs: its two preprocessings
    then read that (wide) tensor once instead of twice, forward and backward."""
    simple = all(isinstance(l, ReLUConvBN) and l.kernel_size == 1 and l.stride == 1 for l in layers)
    same = len({(l.bn.affine, l.bn.running_stats, l.bn.epsilon) for l in layers}) == 1
    if not (simple and same) or (not training and layers[0].bn.running_stats):
        return [layer(x, training=training) for layer in layers]
    sizes = [layer.filters for layer in layers]
    kernel = tf.concat([tf.reshape(layer.kernel, layer.kernel.shape[-2:]) for layer in layers], axis=-1)
    bn = layers[0].bn
    scale = tf.concat([layer.bn.gamma for layer in layers], 0) if bn.affine else None
    offset = tf.concat([layer.bn.beta for layer in layers], 0) if bn.affine else None
    update = bool(training and bn.running_stats)
    out = chains.block(tf.nn.relu(x), kernel, scale, offset, statistics=update, epsilon=bn.epsilon, source=(x, 0))
    if update:
        out, mean, var = out
        for layer, m, v in zip(layers, tf.split(mean, sizes), tf.split(var, sizes)):
            layer.bn.update_running(m, v)
    return tf.split(out, sizes, axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FactorizedReduce(_Op):
    """ReLU; two 1×1 stride-2 convs (the second on the input shifted by one pixel); concat; BN.

    The shift pads bottom/right by one and drops the first row and column, as the reference does,
    so odd spatial sizes give the same output size as the first branch. Computed as one 2×2 stride-2
    convolution (``convolutions.factorized_reduce_kernel``). ``relu=False`` takes an input
    that is already rectified (a search cell computes ReLU once per state for all its edges).
    """

    def __init__(self, filters: int, affine: bool = True, running_stats: bool = True, relu: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("FactorizedReduce", filters=filters)
        if filters % 2:
            raise ValueError(f"FactorizedReduce: filters must be even (two halves), received {filters}")
        self.filters, self.affine, self.relu = filters, affine, relu
        self._args = dict(filters=filters, affine=affine, running_stats=running_stats, relu=relu)
        self.bn = batch_norm(affine, running_stats, name="bn")

    def build(self, shape):
        half = self.filters // 2
        self.kernel_1 = _kernel(self, (1, 1, shape[-1], half), "kernel_1")
        self.kernel_2 = _kernel(self, (1, 1, shape[-1], half), "kernel_2")
        self.bn.build(_strided_shape(shape, 2, self.filters))

    def call(self, x, training=None):
        h = x
        if self.relu:
            x = tf.nn.relu(x)
        kernel = convolutions.factorized_reduce_kernel(self.kernel_1, self.kernel_2)
        x_in = convolutions.factorized_reduce_input(x)
        source = (h, 0) if self.relu and x_in is x else None  # recompute the ReLU unless padded
        return _conv_bn(self.bn, x_in, training, conv_kernel=kernel, conv_stride=2, source=source)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, 2, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DilConv(_Op):
    """ReLU → depthwise k×k (dilation d, stride on it) → pointwise 1×1 → BN."""

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, dilation: int = 2, affine: bool = True,
                 running_stats: bool = True, relu: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("DilConv", filters=filters, kernel_size=kernel_size, dilation=dilation)
        _check_stride("DilConv", stride)
        self.filters, self.kernel_size, self.stride, self.dilation, self.affine, self.relu = (
            filters, kernel_size, stride, dilation, affine, relu)
        self._args = dict(filters=filters, kernel_size=kernel_size, stride=stride, dilation=dilation, affine=affine,
                          running_stats=running_stats, relu=relu)
        self.padding = dilation * (kernel_size - 1) // 2
        self.bn = batch_norm(affine, running_stats, name="bn")

    def build(self, shape):
        k = self.kernel_size
        self.depthwise_kernel = _kernel(self, (k, k, shape[-1], 1), "depthwise_kernel", fan_in=k * k)
        self.pointwise_kernel = _kernel(self, (1, 1, shape[-1], self.filters), "pointwise_kernel")
        self.bn.build(_strided_shape(shape, self.stride, self.filters))

    def call(self, x, training=None):
        if self.relu:
            x = tf.nn.relu(x)
        k, s, d, p = self.kernel_size, self.stride, self.dilation, self.padding
        dw, pw = self.depthwise_kernel, self.pointwise_kernel
        if p != d * (k - 1) // 2 or d > 2:  # not a cell op: the general path
            z = convolutions.pointwise(convolutions.torch_depthwise_conv2d(x, dw, s, d, p), pw)
            return self.bn(z, training=training)
        if d == 1:
            if s == 1:
                return _conv_bn(self.bn, x, training, pw, dw)
            return _conv_bn(self.bn, tracing.pad(x, p), training, pw, dw, stride=s, padding="VALID")
        # Dilation 2 on PyTorch's grid: at stride 2 the undilated conv of the even sub-grid; at stride 1 that
        # of each of the four sub-grids (polyphase split; odd sizes use TF's dilated kernel).
        if s == 2:
            return _conv_bn(self.bn, convolutions.subsample(x), training, pw, dw)
        if convolutions.polyphase_ok(x.shape):
            return convolutions.from_polyphase(_conv_bn(self.bn, convolutions.to_polyphase(x), training, pw, dw))
        return _conv_bn(self.bn, convolutions.torch_depthwise_conv2d(x, dw, 1, d, p), training, pw)

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SepConv(_Op):
    """Two DilConv blocks with dilation 1; the stride only in the first
    (BUILD_NOTES "Mixed ops and the PyTorch grid")."""

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, affine: bool = True,
                 running_stats: bool = True, relu: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive("SepConv", filters=filters, kernel_size=kernel_size)
        _check_stride("SepConv", stride)
        self.filters, self.kernel_size, self.stride, self.affine = filters, kernel_size, stride, affine
        self._args = dict(filters=filters, kernel_size=kernel_size, stride=stride, affine=affine,
                          running_stats=running_stats, relu=relu)
        # Ops inside cells keep the width (C_in = C_out), so both blocks output ``filters`` channels.
        self.block_1 = DilConv(filters, kernel_size, stride, 1, affine, running_stats, relu, name="block_1")
        self.block_2 = DilConv(filters, kernel_size, 1, 1, affine, running_stats, True, name="block_2")

    def build(self, shape):
        self.block_1.build(shape)
        self.block_2.build(_strided_shape(shape, self.stride, self.filters))

    def call(self, x, training=None):
        b1, b2 = self.block_1, self.block_2
        if (not training and b1.bn.running_stats) or b1.dilation != 1:
            return b2(b1(x, training=training), training=training)
        # Training: both blocks (and the ReLU between) are one chain with a hand-written backward pass.
        h = x
        if b1.relu:
            x = tf.nn.relu(x)
        p = b1.padding
        pw1, pw1_4d = _pointwise_views(b1.pointwise_kernel)
        pw2, pw2_4d = _pointwise_views(b2.pointwise_kernel)
        first = chains.ConvBNStep(
            pw1, b1.depthwise_kernel, *((1, "SAME") if self.stride == 1 else (self.stride, "VALID")),
            scale=b1.bn.gamma if b1.bn.affine else None, offset=b1.bn.beta if b1.bn.affine else None,
            pointwise_4d=pw1_4d)
        second = chains.ConvBNStep(pw2, b2.depthwise_kernel, scale=b2.bn.gamma if b2.bn.affine else None,
                         offset=b2.bn.beta if b2.bn.affine else None, pointwise_4d=pw2_4d)
        update = bool(training and b1.bn.running_stats)
        out = chains.chain(x if self.stride == 1 else tracing.pad(x, p), [first, second], statistics=update,
                      epsilon=b1.bn.epsilon, source=(h, 0 if self.stride == 1 else p) if b1.relu else None)
        if not update:
            return out
        y, stats = out
        for bn, (mean, var) in zip((b1.bn, b2.bn), stats):
            bn.update_running(mean, var)
        return y

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, self.filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Pool(_Op):
    """3×3 max or average pooling, padding 1, then (optionally) BN.

    Max pooling pads with -inf and average pooling divides by the count of real pixels, as PyTorch
    does with ``padding=1, count_include_pad=False``.
    """

    def __init__(self, kind: str, stride: int = 1, bn: bool = True, affine: bool = False,
                 running_stats: bool = True, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("max", "avg"):
            raise ValueError(f"Pool: kind must be 'max' or 'avg', received {kind!r}")
        _check_stride("Pool", stride)
        self.kind, self.stride, self.use_bn, self.affine = kind, stride, bn, affine
        self._args = dict(kind=kind, stride=stride, bn=bn, affine=affine, running_stats=running_stats)
        self.bn = batch_norm(affine, running_stats, name="bn") if bn else None

    def build(self, shape):
        if self.bn is not None:
            self.bn.build(_strided_shape(shape, self.stride, shape[-1]))

    def call(self, x, training=None):
        s = self.stride
        if self.kind == "max":
            # -inf padding as PyTorch; SAME at stride 1 is exactly that. Not the EXPLICIT-padding max-pool:
            # it has no second derivative (MaxPoolGradGrad) and no builtin TFLite kernel.
            if s == 1:
                out = tf.nn.max_pool2d(x, 3, 1, "SAME")
            else:
                out = tf.nn.max_pool2d(tracing.pad(x, 1, float("-inf")), 3, s, "VALID")
        elif s == 1:
            out = tf.nn.avg_pool2d(x, 3, 1, "SAME")  # TF's SAME average excludes padding; symmetric at k=3, s=1
        else:
            ones = tf.ones_like(x[:1, :, :, :1])
            out = (tf.nn.avg_pool2d(tracing.pad(x, 1), 3, s, "VALID")
                   / tf.nn.avg_pool2d(tracing.pad(ones, 1), 3, s, "VALID"))
        if self.bn is not None:
            out = self.bn(out, training=training)
        return out

    def compute_output_shape(self, shape):
        return _strided_shape(shape, self.stride, shape[-1])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropPath(_Op):
    """Zeroes a whole op output per example with probability ``rate`` in training, scaling by 1/keep.

    The rate is a call argument (a tensor the network owns and ramps over epochs), so changing it
    never retraces the step function.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._args = dict(seed=seed)
        self._seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, rate, training=None):
        if not training:
            return x
        keep = 1.0 - tf.cast(rate, x.dtype)
        noise = keras.random.uniform(tf.stack([tf.shape(x)[0], 1, 1, 1]), seed=self._seed_generator, dtype=x.dtype)
        # The 1/keep scaling goes into the per-example mask: one pass over x instead of two.
        return x * (tf.floor(keep + noise) / keep)


def _strided_shape(shape, stride, channels):
    shape = tuple(shape)
    def out(n):
        return None if n is None else (n - 1) // stride + 1
    return (shape[0], out(shape[1]), out(shape[2]), channels)


def make_op(name: str, channels: int, stride: int = 1, affine: bool = True, pool_bn: bool = True,
            running_stats: bool = True, relu: bool = True, op_name: str | None = None):
    """Builds op ``name`` (``op_registry.op_spec``) for ``channels`` in and out. Unknown names raise with the
    known ones.

    ``affine`` holds for every BN of the op, the pooling BN included (``pool_bn``): affine in evaluation networks
    and the fixed cells of stage supernets, as the H-DAS reference (BUILD_NOTES "BatchNorm conventions"); the
    mixed ops of search networks build theirs non-affine. ``relu=False`` builds the conv ops for an input that
    is already rectified.
    """
    _check_stride(name, stride)
    spec = op_spec(name)
    kw = dict(name=op_name) if op_name else {}
    if spec.kind == "none":
        return Zero(stride, **kw)
    if spec.kind == "pool":
        return Pool(spec.pool, stride, bn=pool_bn, affine=affine, running_stats=running_stats, **kw)
    if spec.kind == "skip":
        if stride == 1:
            return Identity(**kw)
        return FactorizedReduce(channels, affine, running_stats, relu, **kw)
    if spec.kind == "sep_conv":
        return SepConv(channels, spec.kernel_size, stride, affine, running_stats, relu, **kw)
    return DilConv(channels, spec.kernel_size, stride, spec.dilation, affine, running_stats, relu, **kw)

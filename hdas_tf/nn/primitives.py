"""Tensor-level building blocks of the op layers: PyTorch-grid convolutions, batch-statistics BatchNorm
(synchronized across replicas), and convolution → BatchNorm blocks with hand-written backward passes.

Convolutions follow the PyTorch grid (symmetric padding); their implementation was chosen by measurement on
the CPU kernels of TF 2.21 with oneDNN (BUILD_NOTES "Speed").

Blocks.

Every convolutional op of the DARTS family is made of blocks [depthwise k×k →] 1×1 (or a small dense conv)
→ BN. Left to autodiff, each block's backward pass is a dozen graph nodes of shape bookkeeping around the
three real kernels, and tracing costs ~0.5 ms per node here, so a supernet's step took minutes to build
(KERAS_NOTES §0; BUILD_NOTES "Speed"). Here the backward pass of a block is written out: the BN gradient
(one FusedBatchNormGradV3), the 1×1 gradients (an Einsum and a matmul), the depthwise gradients (input and filter).
That also decides what the backward pass keeps:

- ``recompute`` off: the block keeps its input, the depthwise output and the BN input (what autodiff keeps);
- ``recompute`` on: it keeps only its input and recomputes the depthwise and 1×1 outputs in the backward
  pass (two cheap forward kernels), so the activation memory of a cell is its state tensors, not every
  intermediate of every op (DESIGN §7: large batches).

``weight_gradients`` off (the architecture step of a search, which differentiates w.r.t. α only) leaves out
the kernel gradients — the expensive part of the backward pass — from the graph altogether.

On several replicas the BN statistics are all-reduced (synchronized BN, ``normalize_batch``); there the
blocks are composed of plain ops and differentiated by TF, which handles the all-reduce's gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import tensorflow as tf
from tensorflow.python.eager import record

from hdas_tf.nn import cpu_kernels
from hdas_tf.space.op_registry import op_spec

_OPTIONS = threading.local()


def _option(name: str, default: bool) -> bool:
    return getattr(_OPTIONS, name, default)


@contextlib.contextmanager
def options(recompute: bool | None = None, weight_gradients: bool | None = None, native_kernels: bool | None = None):
    """Trace-time options of the blocks built inside the context (see the module docstring).
    ``native_kernels``: TF's own kernels even where hdas_tf's CPU kernels are in use (graphs that leave the
    process: SavedModel, TFLite)."""
    given = {"recompute": recompute, "weight_gradients": weight_gradients, "native_kernels": native_kernels}
    saved = {k: getattr(_OPTIONS, k, None) for k in given}
    try:
        for k, v in given.items():
            if v is not None:
                setattr(_OPTIONS, k, bool(v))
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                if hasattr(_OPTIONS, k):
                    delattr(_OPTIONS, k)
            else:
                setattr(_OPTIONS, k, v)


def _single_replica() -> bool:
    return tf.distribute.get_strategy().num_replicas_in_sync == 1 or tf.distribute.get_replica_context() is None



# === graph constants and batch-statistics BatchNorm ===

def _graph_constant(key, make):
    """One constant per graph and key: a supernet has hundreds of BNs that would each add their own
    ones/zeros/empty constants, and every graph node costs tracing time (BUILD_NOTES "Speed").

    The cache is an attribute of the graph, so it dies with the graph (a module-level map keyed by graph
    would keep every graph alive through its values' tensors)."""
    if tf.executing_eagerly():
        return make()
    graph = tf.compat.v1.get_default_graph()
    cache = getattr(graph, "_hdas_constants", None)
    if cache is None:
        cache = {}
        graph._hdas_constants = cache
    if key not in cache:
        with tf.control_dependencies(None):  # shared by every user: it must not wait for the first one's inputs
            cache[key] = make()
    return cache[key]


def constant(value, dtype=tf.int32):
    """A shape, axes or paddings constant, one Const node per graph and value (they are many otherwise)."""
    return _graph_constant(("const", tf.as_dtype(dtype).name, repr(value)), lambda: tf.constant(value, dtype))


def ones_vector(c: int):
    return _graph_constant(("ones", c), lambda: tf.ones((c,), tf.float32))


def zeros_vector(c: int):
    return _graph_constant(("zeros", c), lambda: tf.zeros((c,), tf.float32))


def _kernels(x):
    """hdas_tf's CPU ops (``cpu_kernels``) where they apply to ``x`` (float32, not in an exported graph), else
    None (TF's)."""
    if x.dtype != tf.float32 or _option("native_kernels", False):
        return None
    return cpu_kernels.library()


def fused_batch_norm(x, scale, offset, epsilon):
    """Training-mode BN with the batch statistics, as ``FusedBatchNormV3(is_training=True)``'s six outputs
    (y, mean, unbiased variance, three reserve spaces for :func:`fused_batch_norm_grad`), on hdas_tf's kernel
    where it is in use."""
    lib = _kernels(x)
    empty = _graph_constant("empty", lambda: tf.zeros((0,), tf.float32))
    if lib is not None:
        return tuple(lib.hdas_batch_norm(x, scale, offset, epsilon=epsilon)) + (empty,)
    return tf.raw_ops.FusedBatchNormV3(x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=epsilon,
                                       is_training=True)


def fused_batch_norm_grad(dy, x, scale, reserve, epsilon):
    """(dx, dscale, doffset) of :func:`fused_batch_norm` from its three reserve spaces."""
    lib = _kernels(x)
    if lib is not None:
        return tuple(lib.hdas_batch_norm_grad(dy, x, scale, reserve[0], reserve[1], epsilon=epsilon))
    return tuple(tf.raw_ops.FusedBatchNormGradV3(y_backprop=dy, x=x, scale=scale, reserve_space_1=reserve[0],
                                                 reserve_space_2=reserve[1], reserve_space_3=reserve[2],
                                                 epsilon=epsilon, is_training=True)[:3])


def normalize_batch(x, scale, offset, epsilon: float = 1e-5):
    """Training-mode batch normalisation ``scale·(x − μ)/σ + offset`` with the batch statistics, synchronized
    across replicas. Returns (y, batch mean, unbiased batch variance).

    One replica: one fused BN op (:func:`fused_batch_norm`; it also returns the Bessel-corrected variance). Several
    replicas: per-replica mean and centred sum of squares, combined in one all-reduce (Chan et al.):
    M2 = Σ M2_i + Σ n_i m_i² − n m², so only the between-replica term cancels (unlike E[x²] − E[x]²).
    ``scale`` may carry a search edge's op weight: w·BN(x) computed inside the BN op costs no extra pass
    over the tensor, forward or backward (DARTS Eq. 2 with the weight folded into the non-affine BN).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    ctx = tf.distribute.get_replica_context()
    if replicas == 1 or ctx is None:
        y, mean, unbiased, _, _, _ = fused_batch_norm(x, scale, offset, epsilon)
        return y, mean, unbiased
    xf = tf.cast(x, tf.float32)
    count = tf.cast(tf.reduce_prod(tf.shape(xf)[:-1]), tf.float32)
    local_mean, local_var = tf.nn.moments(xf, axes=[0, 1, 2])
    sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [
        count * local_mean, count * local_var, count * tf.square(local_mean), count])
    n = sums[3]
    mean = sums[0] / n
    variance = tf.maximum((sums[1] + sums[2] - n * tf.square(mean)) / n, 0.0)
    y = tf.cast(tf.nn.batch_normalization(xf, mean, variance, offset, scale, epsilon), x.dtype)
    return y, mean, variance * n / tf.maximum(n - 1.0, 1.0)


def _crop(x, p: int):
    """x[:, p:-p, p:-p, :] as a Slice whose begin/size are shared constants (a strided slice adds three
    constants of its own) when the shape is static."""
    if p == 0:
        return x
    _, h, w, _ = x.shape
    if h is None or w is None:
        return x[:, p:-p, p:-p, :]
    return tf.slice(x, constant([0, p, p, 0]), constant([-1, h - 2 * p, w - 2 * p, -1]))


def _pad(x, p: int, value: float = 0.0):
    if p == 0:
        return x
    return tf.pad(x, constant([[0, 0], [p, p], [p, p], [0, 0]]), constant_values=value)


# === depthwise convolution and its gradients ===

# Depthwise kernels this size and larger take their filter gradient through depthwise_filter_grad: the native
# 5×5 filter-gradient kernel is the slowest op of a search step (about 2× the alternative here).
FAST_FILTER_GRAD_MIN_K = 5


def depthwise_filter_grad(x, dy, k):
    """∂L/∂K of a stride-1 'SAME' depthwise conv, as ONE depthwise conv with dy as the filter:
    dK[u, v, c] = Σ_{b,h,w} x_pad[b, h+u, w+v, c]·dy[b, h, w, c] — channels (b, c), an H×W filter, a k×k
    output, then a sum over b."""
    b, h, w, c = _shape(x)
    perm = constant([1, 2, 0, 3])
    xt = _pad(tf.reshape(tf.transpose(x, perm), _join([1, h, w], [b * c])), k // 2)
    f = tf.reshape(tf.transpose(dy, perm), _join([h, w], [b * c, 1]))
    g = tf.raw_ops.DepthwiseConv2dNative(input=xt, filter=f, strides=[1, 1, 1, 1], padding="VALID")
    return tf.reduce_sum(tf.reshape(g, _join([k, k], [b, c, 1])), axis=constant(2))  # [k, k, C, 1]


def _shape(x):
    """Static dimensions where known (no graph nodes), dynamic ones otherwise."""
    static = x.shape.as_list()
    if all(d is not None for d in static):
        return static
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def _join(*parts):
    """A shape from static and dynamic dimensions: a shared constant when all are static."""
    dims = [d for part in parts for d in part]
    return constant(dims) if all(isinstance(d, int) for d in dims) else tf.stack(dims)


def _custom_depthwise(x, kernel, stride, padding):
    """(hdas_tf's op library, the symmetric padding its depthwise ops take for TF's ``padding``) where they
    apply to this conv, else None: not in use, or TF's 'SAME' is asymmetric (stride 2, even k)."""
    lib = _kernels(x)
    k = kernel.shape[0]
    if lib is None:
        return None
    if padding == "VALID":
        return lib, 0
    if padding == "SAME" and stride == 1 and k is not None and k % 2 == 1:
        return lib, (k - 1) // 2
    return None


def _dw_forward(x, kernel, stride, padding):
    custom = _custom_depthwise(x, kernel, stride, padding)
    if custom is not None:
        lib, pad = custom
        return lib.hdas_depthwise_conv2d(x, kernel, stride=stride, pad=pad)
    return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, stride, stride, 1], padding=padding)


def _dw_backward(x, kernel, da, stride, padding, weight_gradients):
    custom = _custom_depthwise(x, kernel, stride, padding)
    if custom is not None:
        lib, pad = custom
        dx = lib.hdas_depthwise_conv2d_backprop_input(_join(_shape(x)), kernel, da, stride=stride, pad=pad)
        if not weight_gradients:
            return dx, None
        return dx, lib.hdas_depthwise_conv2d_backprop_filter(x, da, k=kernel.shape[0], stride=stride, pad=pad)
    strides = [1, stride, stride, 1]
    dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(input_sizes=_join(_shape(x)), filter=kernel, out_backprop=da,
                                                       strides=strides, padding=padding)
    if not weight_gradients:
        return dx, None
    k = kernel.shape[0]
    if stride == 1 and padding == "SAME" and k >= FAST_FILTER_GRAD_MIN_K:
        return dx, depthwise_filter_grad(x, da, k)
    dk = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(input=x, filter_sizes=constant(list(kernel.shape)), out_backprop=da,
                                                        strides=strides, padding=padding)
    return dx, dk


def _depthwise_recorded(x, kernel, stride, padding):
    """The depthwise conv as one tape operation whose backward pass is :func:`_dw_backward`: the filter
    gradient is left out where ``weight_gradients`` is off, and no autodiff bookkeeping is added."""
    with record.stop_recording():
        y = _dw_forward(x, kernel, stride, padding)
    if record.should_record_backprop([x, kernel]):
        record.record_operation_backprop_only(
            "HdasDepthwise", [y], [x, kernel],
            lambda dy: list(_dw_backward(x, kernel, dy, stride, padding, _option("weight_gradients", True))))
    return y


def depthwise(x, kernel, stride: int = 1, padding: str = "SAME"):
    """A depthwise conv (``padding`` 'SAME' at stride 1 — symmetric for odd k — or 'VALID' on an input the
    caller padded), on hdas_tf's kernels where they are in use; with TF's, the 5×5 filter gradient takes the
    fast path."""
    kernel = tf.cast(kernel, x.dtype)
    custom = _custom_depthwise(x, kernel, stride, padding) is not None
    if custom or (stride == 1 and padding == "SAME" and kernel.shape[0] >= FAST_FILTER_GRAD_MIN_K):
        return _depthwise_recorded(x, kernel, stride, padding)
    return _dw_forward(x, kernel, stride, padding)


# === convolution primitives ===
# Chosen by measurement on the CPU kernels of TF 2.21 with oneDNN (BUILD_NOTES "Speed"): 'SAME' padding at
# stride 1 (symmetric for odd kernels, so the PyTorch grid) — EXPLICIT padding sends the backward pass to
# kernels 2–5× slower; 1×1 convolutions as 2-D matmuls (a Conv2D in a chain's forward pass); dilation
# through a polyphase split instead of SpaceToBatch per op; strided sampling through a 1×1 average pool
# rather than a strided slice, whose gradient is a slow scatter.


def _conv(x, kernel, stride=1, padding=0):
    """Convolution with symmetric zero padding (torch.nn.Conv2d's grid); 1×1 at stride 1 is a matmul."""
    kernel = tf.cast(kernel, x.dtype)
    if kernel.shape[0] == 1 and kernel.shape[1] == 1 and stride == 1 and padding == 0:
        return pointwise(x, kernel)
    if padding:
        x = _pad(x, padding)
    return tf.raw_ops.Conv2D(input=x, filter=kernel, strides=[1, stride, stride, 1], padding="VALID")


def pointwise(x, kernel):
    """1×1 convolution (``kernel`` [C_in, C_out] or [1, 1, C_in, C_out]) as a 2-D matmul of the pixels
    [N·H·W, C_in] with the kernel, differentiable by TF (matmuls and reshapes, forward and backward).

    Not a broadcast matmul of the 4-D tensor: TF runs that as N·H matmuls of W rows each, which on an AVX2
    CPU took 1.2–7× as long as the 2-D matmul (BUILD_NOTES "Speed"). TF's Conv2D gradients are slower still.
    """
    kernel = tf.cast(kernel, x.dtype)
    if kernel.shape.rank == 4:
        kernel = tf.reshape(kernel, kernel.shape[2:])
    flat = tf.linalg.matmul(tf.reshape(x, constant([-1, x.shape[-1]])), kernel)
    return tf.reshape(flat, _join(_shape(x)[:-1], [kernel.shape[-1]]))


def subsample(x):
    """x[:, ::2, ::2, :] as a 1×1 average pool at stride 2: the same values, but a cheap gradient."""
    return tf.nn.avg_pool2d(x, 1, 2, "VALID")


def _to_polyphase(x):
    _, h, w, c = x.shape
    y = tf.reshape(x, constant([-1, h // 2, 2, w // 2, 2, c]))
    return tf.reshape(tf.transpose(y, constant([2, 4, 0, 1, 3, 5])), constant([-1, h // 2, w // 2, c]))


def _from_polyphase(y):
    _, h, w, c = y.shape
    z = tf.transpose(tf.reshape(y, constant([2, 2, -1, h, w, c])), constant([2, 3, 0, 4, 1, 5]))
    return tf.reshape(z, constant([-1, 2 * h, 2 * w, c]))


def _permutation(name, forward, inverse, x):
    """``forward(x)`` for a pure rearrangement of the elements, as one tape operation whose gradient is
    ``inverse``: autodiff would add a Reshape with its own shape constant per reshape and an InvertPermutation
    per transpose (~6 graph nodes per rearrangement instead of 3)."""
    with record.stop_recording():
        y = forward(x)
    if record.should_record_backprop([x]):
        record.record_operation_backprop_only(name, [y], [x], lambda dy: [inverse(dy)])
    return y


def to_polyphase(x):
    """[B, H, W, C] (H, W even) → [4B, H/2, W/2, C], the four sub-grids (row parity, column parity) stacked in
    the batch. A dilation-2 convolution with zero padding is the undilated convolution of each sub-grid."""
    return _permutation("HdasToPolyphase", _to_polyphase, from_polyphase, x)


def from_polyphase(y):
    """Inverse of :func:`to_polyphase`."""
    return _permutation("HdasFromPolyphase", _from_polyphase, to_polyphase, y)


def polyphase_ok(shape) -> bool:
    return shape[1] is not None and shape[2] is not None and shape[1] % 2 == 0 and shape[2] % 2 == 0


def depthwise_same(x, kernel):
    """Stride-1 depthwise conv with symmetric padding (k−1)/2 ('SAME' for odd k)."""
    return depthwise(x, kernel, 1, "SAME")


def _depthwise(x, kernel, stride=1, dilation=1, padding=0):
    """Depthwise conv on PyTorch's grid: symmetric zero padding ``padding`` (= dilation·(k−1)/2 in the cells).

    Dilation 2 at stride 2 samples only even rows and columns, so it is the undilated conv of the even
    sub-grid; at stride 1 it is the undilated conv of each of the four sub-grids (even sizes; odd sizes use
    TF's dilated kernel)."""
    kernel = tf.cast(kernel, x.dtype)
    k = kernel.shape[0]
    same = padding == dilation * (k - 1) // 2
    if dilation == 1:
        if stride == 1 and same:
            return depthwise_same(x, kernel)
        return depthwise(_pad(x, padding), kernel, stride, "VALID")
    if dilation == 2 and same:
        if stride == 2:
            return depthwise_same(subsample(x), kernel)
        if polyphase_ok(x.shape):
            return from_polyphase(depthwise_same(to_polyphase(x), kernel))
    y = tf.nn.depthwise_conv2d(_pad(x, padding), kernel, [1, 1, 1, 1], "VALID", dilations=[dilation, dilation])
    return y if stride == 1 else y[:, ::stride, ::stride, :]


def factorized_reduce_kernel(kernel_1, kernel_2):
    """The 2×2 kernel that computes FactorizedReduce's two strided 1×1 branches in one stride-2 conv:
    kernel_1 ([C_in, C/2] or [1, 1, C_in, C/2]) at (0, 0) into the first half of the outputs, kernel_2 at
    (1, 1) into the second half (the branch that reads the input shifted by one pixel)."""
    k1 = tf.reshape(kernel_1, kernel_1.shape[-2:])
    k2 = tf.reshape(kernel_2, kernel_2.shape[-2:])
    c_in, half = k1.shape
    zeros = tf.zeros((c_in, 2 * half), k1.dtype)
    return tf.reshape(tf.stack([tf.pad(k1, [[0, 0], [0, half]]), zeros, zeros, tf.pad(k2, [[0, 0], [half, 0]])]),
                      [2, 2, c_in, 2 * half])


def factorized_reduce_input(x):
    """The input of the 2×2 stride-2 FactorizedReduce conv: one zero row/column at the bottom/right gives
    ceil(size/2) outputs for odd sizes (the reference pads before shifting) and changes nothing for even
    ones, so it is skipped when the size is known to be even (it is a copy)."""
    return x if polyphase_ok(x.shape) else tf.pad(x, constant([[0, 0], [0, 1], [0, 1], [0, 0]]))


def factorized_reduce(x, kernel_1, kernel_2):
    """concat(conv1×1_s2(x), conv1×1_s2(x shifted by one pixel)) as ONE 2×2 stride-2 convolution."""
    kernel = tf.cast(factorized_reduce_kernel(kernel_1, kernel_2), x.dtype)
    return tf.raw_ops.Conv2D(input=factorized_reduce_input(x), filter=kernel, strides=[1, 2, 2, 1], padding="VALID")


# === the block ===


def _pointwise_backward(a, dz, kernel, kernel_gradient: bool):
    """Gradients of z = a·kernel (a 1×1 convolution, ``kernel`` [C_in, C_out]) w.r.t. a and, if asked, the
    kernel: an Einsum over the channels and a 2-D matmul over the pixels (see ``pointwise``)."""
    # ∂a as one Einsum node: it contracts the channels of the 4-D dz as one 2-D matmul (as fast as
    # reshape → MatMul → reshape, measured) and saves the two Reshape nodes; graph nodes cost tracing time and
    # ~15 KB of memory each (BUILD_NOTES "Speed"). The kernel gradient stays a MatMul of the flattened
    # tensors: the Einsum of that contraction ran 1.1–1.9× slower.
    da = tf.raw_ops.Einsum(inputs=[dz, kernel], equation="nhwd,cd->nhwc")
    if not kernel_gradient:
        return da, None
    c_in, c_out = a.shape[-1], dz.shape[-1]
    return da, tf.linalg.matmul(tf.reshape(a, constant([-1, c_in])), tf.reshape(dz, constant([-1, c_out])),
                                transpose_a=True)


def _pointwise_conv(a, kernel_4d):
    """The forward 1×1 convolution of a chain: one Conv2D node (as fast as the 2-D matmul, forward, on the
    CPUs measured; its backward pass is ``_pointwise_backward``, not TF's slower Conv2D gradients)."""
    return tf.raw_ops.Conv2D(input=a, filter=kernel_4d, strides=[1, 1, 1, 1], padding="VALID")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One conv → BN block of a :func:`chain`: [depthwise k×k →] 1×1 (or a small dense conv) → BN.

    Attributes:
      pointwise: [C, C_out] 1×1 kernel, or None when ``conv`` is given.
      depthwise: optional [k, k, C, 1] kernel, applied first with ``stride`` and ``padding`` ('SAME' at stride
        1 — symmetric for odd k — or 'VALID' on an input the caller padded).
      conv: instead of the 1×1, a [kh, kw, C, C_out] kernel applied with ``conv_stride`` and VALID padding (the
        2×2 stride-2 FactorizedReduce kernel).
      scale, offset: [C_out] γ/β of an affine BN; None (both) for a non-affine one.
      pointwise_4d: optional [1, 1, C, C_out] view of ``pointwise`` (the same values), for the forward Conv2D;
        not differentiated (the gradient goes to ``pointwise``). A caller that has it for free (a 4-D
        variable, or one Unpack of a stacked variable's 4-D view) saves the chain a Reshape node.
    """

    pointwise: object = None
    depthwise: object = None
    stride: int = 1
    padding: str = "SAME"
    conv: object = None
    conv_stride: int = 1
    scale: object = None
    offset: object = None
    pointwise_4d: object = None


def block(x, pointwise_kernel, scale=None, offset=None, depthwise_kernel=None, stride: int = 1, padding: str = "SAME",
          conv_kernel=None, conv_stride: int = 1, weight=None, statistics: bool = False, epsilon: float = 1e-5,
          source=None, pointwise_4d=None, weight_scale=None):
    """One conv → BN block: ``chain(x, [Stage(...)])`` (see :class:`Stage` and :func:`chain` for the arguments)."""
    out = chain(x, [Stage(pointwise_kernel, depthwise_kernel, stride, padding, conv_kernel, conv_stride, scale,
                          offset, pointwise_4d)], weight=weight, statistics=statistics, epsilon=epsilon, source=source,
                weight_scale=weight_scale)
    if not statistics:
        return out
    y, stats = out
    return (y, *stats[0])


def chain(x, stages, weight=None, statistics: bool = False, epsilon: float = 1e-5, source=None, weight_scale=None):
    """stages[0](x) → ReLU → stages[1] → ReLU → … in training mode (batch statistics): one tape operation.

    A separable conv is a chain of two stages, a dilated conv or a cell preprocessing one. ``x`` is the input
    already rectified where the op starts with a ReLU (a search cell computes one ReLU per state for all its
    edges). The backward pass is written out (module docstring); with ``recompute`` on it keeps only its input
    and recomputes every intermediate, including the ReLU between the stages.

    Args:
      source: optional ``(h, pad)`` with ``x = relu(h)`` padded by ``pad`` on each side (the ReLU of a cell
        state, shared by the state's edges; padded for a strided first depthwise conv): the chain then
        differentiates w.r.t. ``h`` and, with ``recompute`` on, keeps ``h`` (which the cell keeps anyway)
        instead of ``x``, recomputing the ReLU in the backward pass.
      weight: optional scalar: y = weight·BN_last(...), computed as the last BN with scale·weight — a search
        edge's op weight w_o (DARTS Eq. 2) at no extra pass over the tensor, forward or backward.
      statistics: also return, per stage, (batch mean, unbiased batch variance) for running averages (they
        carry no gradient): ``(y, [(mean, var), ...])``.
      weight_scale: optional [C_out] float32 vector weight·1, for a non-affine last BN: a caller with many
        weighted chains (a search cell) computes them all in one op instead of one Mul per chain.
    """
    dtype = x.dtype
    n = len(stages)
    weighted = weight is not None
    if weighted:
        weight = tf.cast(weight, tf.float32)
    prepared = []
    for st in stages:
        cast = {k: None if getattr(st, k) is None else tf.cast(getattr(st, k), dtype)
                for k in ("pointwise", "depthwise", "conv", "pointwise_4d")}
        affine = st.scale is not None
        prepared.append(dataclasses.replace(
            st, **cast, scale=tf.cast(st.scale, tf.float32) if affine else None,
            offset=tf.cast(st.offset, tf.float32) if affine else None))
    stages = prepared

    def bn_parameters(i, scale, offset, w):
        st = stages[i]
        c_out = (st.pointwise if st.conv is None else st.conv).shape[-1]
        if scale is None:
            scale, offset = ones_vector(c_out), zeros_vector(c_out)
            if w is not None:
                scale = scale * w if weight_scale is None else weight_scale
        elif w is not None:
            scale, offset = scale * w, offset * w
        return scale, offset

    def conv_part(st, h, dw, pw_4d, conv):
        a = h if dw is None else _dw_forward(h, dw, st.stride, st.padding)
        if conv is None:
            return a, _pointwise_conv(a, pw_4d)
        return a, tf.raw_ops.Conv2D(input=a, filter=conv, strides=[1, st.conv_stride, st.conv_stride, 1],
                                    padding="VALID")

    if not _single_replica():  # synchronized BN: plain ops, differentiated by TF (through the all-reduce)
        h, stats = x, []
        for i, st in enumerate(stages):
            if i:
                h = tf.nn.relu(h)
            a = h if st.depthwise is None else depthwise(h, st.depthwise, st.stride, st.padding)
            z = pointwise(a, st.pointwise) if st.conv is None else tf.raw_ops.Conv2D(
                input=a, filter=st.conv, strides=[1, st.conv_stride, st.conv_stride, 1], padding="VALID")
            h, mean, var = normalize_batch(z, *bn_parameters(i, st.scale, st.offset, weight if i == n - 1 else None),
                                           epsilon)
            stats.append((tf.stop_gradient(mean), tf.stop_gradient(var)))
        return (h, stats) if statistics else h

    # The 1×1 kernels as [1, 1, C_in, C_out] for the forward Conv2D: once per chain, shared by a recomputation.
    kernels_4d = [st.pointwise_4d if st.pointwise is None or st.pointwise_4d is not None
                  else tf.reshape(st.pointwise, constant([1, 1, *st.pointwise.shape])) for st in stages]
    recompute = _option("recompute", False)
    weight_gradients = _option("weight_gradients", True)
    # The differentiable inputs, in order: x (or the source h), then per stage γ/β (affine), the weight, then
    # per stage kernels.
    inputs = [x if source is None else source[0]]
    for st in stages:
        if st.scale is not None:
            inputs += [st.scale, st.offset]
    if weighted:
        inputs.append(weight)
    for st in stages:
        inputs += [k for k in (st.depthwise, st.pointwise, st.conv) if k is not None]

    # The BN scale/offset of each stage (w_o folded into the last), computed once: a recomputation reuses them.
    with record.stop_recording():  # the chain's gradient w.r.t. w_o, γ and β is written out in backward()
        bn_params = [bn_parameters(i, st.scale, st.offset, weight if i == n - 1 else None)
                     for i, st in enumerate(stages)]

    def forward(x):
        """Every intermediate: per stage (input h, depthwise output a, BN input z, BN outputs)."""
        h, trace = x, []
        for i, st in enumerate(stages):
            if i:
                h = tf.nn.relu(h)
            a, z = conv_part(st, h, st.depthwise, kernels_4d[i], st.conv)
            scale_w, offset_w = bn_params[i]
            bn = fused_batch_norm(z, scale_w, offset_w, epsilon)
            trace.append((h, a, z, scale_w, bn))
            h = bn[0]
        return trace

    # The forward pass is not recorded op by op: the chain is one operation on the tape, whose backward
    # function is written below (a custom gradient without tf.custom_gradient's per-input bookkeeping nodes).
    with record.stop_recording():
        saved = forward(x)
    y = saved[-1][4][0]
    if record.should_record_backprop(inputs):
        kept = None if recompute else saved
        # ∂/∂w_o only when a tape wants it: the weight step of a search watches the weights, not α.
        weight_watched = weighted and record.should_record_backprop([weight])

        def backward(dy):
            if kept is None:
                # Recompute in the backward pass, not during the forward: every recomputed op waits for dy (a
                # control edge each, not an Identity node; the shared constants are made outside this scope).
                with tf.control_dependencies([dy]):
                    trace = forward(x if source is None else _pad(tf.nn.relu(source[0]), source[1]))
            else:
                trace = kept
            g = dy
            affine_grads, kernel_grads, d_weight = [], [], None
            for i in reversed(range(n)):
                st = stages[i]
                h, a, z, scale_w, (_, _, _, r1, r2, r3) = trace[i]
                dz, dscale, doffset = fused_batch_norm_grad(g, z, scale_w, (r1, r2, r3), epsilon)
                w = weight if (weighted and i == n - 1) else None
                if w is not None and weight_watched:
                    # y = w·(scale·x̂ + offset): ∂/∂w = Σ_c (scale·∂/∂scale_w + offset·∂/∂offset_w)
                    d_weight = tf.reduce_sum(dscale * st.scale + doffset * st.offset if st.scale is not None
                                             else dscale, axis=constant(0))
                if st.scale is not None:
                    affine_grads.insert(0, [dscale * w, doffset * w] if w is not None else [dscale, doffset])
                d_pw = None
                if st.conv is None:
                    da, d_pw = _pointwise_backward(a, dz, st.pointwise, weight_gradients)
                else:
                    da = tf.raw_ops.Conv2DBackpropInput(
                        input_sizes=_join(_shape(a)), filter=st.conv, out_backprop=dz,
                        strides=[1, st.conv_stride, st.conv_stride, 1], padding="VALID")
                grads = []
                if st.depthwise is None:
                    dh = da
                else:
                    dh, d_dw = _dw_backward(h, st.depthwise, da, st.stride, st.padding, weight_gradients)
                    grads.append(d_dw)
                if st.pointwise is not None:
                    grads.append(d_pw)
                if st.conv is not None:
                    grads.append(tf.raw_ops.Conv2DBackpropFilter(
                        input=a, filter_sizes=constant(list(st.conv.shape)), out_backprop=dz,
                        strides=[1, st.conv_stride, st.conv_stride, 1], padding="VALID")
                        if weight_gradients else None)
                kernel_grads.insert(0, grads)
                g = tf.raw_ops.ReluGrad(gradients=dh, features=h) if i else dh
            if source is not None:  # through x = pad(relu(h)): crop, then the ReLU mask (h > 0 ⟺ relu(h) > 0)
                h, p = source
                g = _crop(g, p)
                g = tf.raw_ops.ReluGrad(gradients=g, features=h)
            out = [g] + [d for pair in affine_grads for d in pair]
            if weighted:
                out.append(d_weight)
            return out + [d for grads in kernel_grads for d in grads]

        record.record_operation_backprop_only("HdasConvChain", [y], inputs, backward)
    if not statistics:
        return y
    # The statistics were computed off the tape: they carry no gradient.
    return y, [(bn[1], bn[2]) for *_, bn in saved]


# === the parameter-free ops a state shares between its edges ===

_POOL_KSIZE = [1, 3, 3, 1]


def _pool(h, kind, stride):
    """3×3 pooling, padding 1, on PyTorch's grid (max pads with −inf, average excludes the padding).
    Returns (output, what the backward pass needs: the pooled input and, at stride 2, the pixel counts)."""
    s = [1, stride, stride, 1]
    if stride == 1:  # 'SAME' at stride 1 is exactly the symmetric padding (−inf for max, excluded for average)
        if kind == "max":
            return tf.raw_ops.MaxPool(input=h, ksize=_POOL_KSIZE, strides=s, padding="SAME"), (h, None)
        return tf.raw_ops.AvgPool(value=h, ksize=_POOL_KSIZE, strides=s, padding="SAME"), (h, None)
    if kind == "max":
        hp = _pad(h, 1, float("-inf"))
        return tf.raw_ops.MaxPool(input=hp, ksize=_POOL_KSIZE, strides=s, padding="VALID"), (hp, None)
    hp = _pad(h, 1)
    ones = _pad(tf.ones_like(h[:1, :, :, :1]), 1)
    count = tf.raw_ops.AvgPool(value=ones, ksize=_POOL_KSIZE, strides=s, padding="VALID")
    return tf.raw_ops.AvgPool(value=hp, ksize=_POOL_KSIZE, strides=s, padding="VALID") / count, (hp, count)


def _pool_backward(kind, stride, pooled, out, dout):
    h_in, count = pooled
    padding = "SAME" if stride == 1 else "VALID"
    s = [1, stride, stride, 1]
    lib = _kernels(h_in)
    if kind == "max" and lib is not None:  # 'SAME' at stride 1 is padding 1; at stride 2 h_in is padded
        d = lib.hdas_max_pool_grad(h_in, out, dout, ksize=3, stride=stride, pad=1 if stride == 1 else 0)
    elif kind == "max":
        d = tf.raw_ops.MaxPoolGrad(orig_input=h_in, orig_output=out, grad=dout, ksize=_POOL_KSIZE, strides=s,
                                   padding=padding)
    else:
        d = tf.raw_ops.AvgPoolGrad(orig_input_shape=_join(_shape(h_in)), grad=dout if count is None else dout / count,
                                   ksize=_POOL_KSIZE, strides=s, padding=padding)
    return d if stride == 1 else _crop(d, 1)


def _flat_stack(tensors):
    return tf.reshape(tf.stack(tensors), constant([len(tensors), -1]))


def weighted_sums(weights, tensors):
    """[Σ_o W[e, o]·T_o for each row e] as ONE matmul of the [E, O] weights with the stacked [O, size] maps:
    two to three times faster here than E·O scalar products and E sums of same-shaped tensors (and one
    graph node instead of E·(O + 1)). Differentiable by TF (stack/matmul/unstack)."""
    shape = _shape(tensors[0])
    out = tf.linalg.matmul(tf.cast(weights, tensors[0].dtype), _flat_stack(tensors))
    return tf.unstack(tf.reshape(out, _join([weights.shape[0]], shape)))


def edge_op_weights(flat, n_ops: int, edges, columns):
    """``w[e][o]`` for the edges ``edges`` and op columns ``columns`` of an [edges, n_ops] weight matrix given as
    its row-major scalars ``flat`` (how cells and stages unstack softmax(α) once): the rows ``shared_ops`` takes."""
    return [[flat[k * n_ops + o] for o in columns] for k in edges]


def shared_ops(h, names, weights, stride: int = 1, bn: bool = True, epsilon: float = 1e-5):
    """The parameter-free part of every edge that leaves state ``h``: per edge e, Σ_o w[e][o]·o(h) over ``names``
    (max/avg 3×3 pooling, each followed by a non-affine batch-statistics BN when ``bn``, and, at stride 1,
    skip_connect) — the weighted terms of DARTS Eq. 2 that do not depend on the edge but through w.

    One tape operation for all edges: with ``recompute`` on, only ``h`` is kept for the backward pass (the
    pooled and normalised maps are recomputed there), otherwise the maps are kept. Returns one tensor per edge.
    """
    names = list(names)
    specs = [op_spec(name) for name in names]
    if any(spec.kind not in ("pool", "skip") for spec in specs):
        raise ValueError(f"shared_ops: only pooling and skip_connect are shared, received {names}")
    if stride != 1 and any(spec.kind == "skip" for spec in specs):
        raise ValueError("shared_ops: a strided skip_connect has weights (FactorizedReduce); it is not shared")
    weights = [[tf.cast(w, h.dtype) for w in row] for row in weights]

    def compute(h):
        maps = []
        for spec in specs:
            if spec.kind == "skip":
                maps.append((h, None))
                continue
            kind = spec.pool
            p, pooled = _pool(h, kind, stride)
            if bn:
                c = p.shape[-1]
                y, _, _, r1, r2, r3 = fused_batch_norm(p, ones_vector(c), zeros_vector(c), epsilon)
                maps.append((y, (kind, p, pooled, (r1, r2, r3))))
            else:
                maps.append((p, (kind, p, pooled, None)))
        return maps

    w_matrix = tf.stack([tf.stack(row) for row in weights])  # [E, O]: for the forward sums and the backward pass

    def combine(maps):
        return weighted_sums(w_matrix, [t for t, _ in maps])

    if not _single_replica():  # synchronized BN: plain ops, differentiated by TF
        maps = []
        for spec in specs:
            if spec.kind == "skip":
                maps.append((h, None))
                continue
            p = _pool(h, spec.pool, stride)[0]
            maps.append((normalize_batch(p, ones_vector(p.shape[-1]), zeros_vector(p.shape[-1]), epsilon)[0]
                         if bn else p, None))
        return combine(maps)
    inputs = [h] + [w for row in weights for w in row]
    with record.stop_recording():
        maps = compute(h)
        outputs = combine(maps)
    if record.should_record_backprop(inputs):
        kept = None if _option("recompute", False) else maps

        def backward(*grads):
            if kept is None:
                with tf.control_dependencies([g for g in grads if g is not None]):
                    used = compute(tf.identity(h))
            else:
                used = kept
            grads = [tf.zeros_like(outputs[0]) if g is None else g for g in grads]
            # out = W·T (rows of W per edge, T the stacked maps): ∂W = G·Tᵀ, ∂T = Wᵀ·G, as two matmuls.
            maps_flat = _flat_stack([t for t, _ in used])
            g_flat = _flat_stack(grads)
            d_weights = tf.linalg.matmul(g_flat, maps_flat, transpose_b=True)
            d_maps = tf.unstack(tf.reshape(tf.linalg.matmul(w_matrix, g_flat, transpose_a=True),
                                           _join([len(used)], _shape(outputs[0]))))
            dh = []
            for o, (t, aux) in enumerate(used):
                dt = d_maps[o]
                if aux is None:  # skip_connect
                    dh.append(dt)
                    continue
                kind, p, pooled, reserve = aux
                if reserve is not None:
                    c = p.shape[-1]
                    dt = fused_batch_norm_grad(dt, p, ones_vector(c), reserve, epsilon)[0]
                dh.append(_pool_backward(kind, stride, pooled, p, dt))
            d_h = tf.add_n(dh) if len(dh) > 1 else dh[0]
            return [d_h] + tf.unstack(tf.reshape(d_weights, constant([-1])))

        record.record_operation_backprop_only("HdasSharedOps", outputs, inputs, backward)
    return outputs

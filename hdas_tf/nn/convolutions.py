"""Convolutions on PyTorch's grid (symmetric padding): depthwise convolution with a written-out backward pass,
1×1 convolution as a matmul, dilation through a polyphase split, and FactorizedReduce as one 2×2 convolution.

Each form was chosen by measurement on the CPU kernels of TF 2.21 with oneDNN
(BUILD_NOTES "Mixed ops and the PyTorch grid").
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.eager import record

from hdas_tf.nn.tracing import constant, custom_kernels, dims, join_dims, option, pad


# Depthwise kernels this size and larger take their filter gradient through depthwise_filter_grad: the native
# 5×5 filter-gradient kernel is the slowest op of a search step (about 2× the alternative here).
FAST_FILTER_GRAD_MIN_K = 5


def depthwise_filter_grad(x, dy, k):
    """∂L/∂K of a stride-1 'SAME' depthwise conv, as ONE depthwise conv with dy as the filter:
    dK[u, v, c] = Σ_{b,h,w} x_pad[b, h+u, w+v, c]·dy[b, h, w, c] — channels (b, c), an H×W filter, a k×k
    output, then a sum over b."""
    b, h, w, c = dims(x)
    perm = constant([1, 2, 0, 3])
    xt = pad(tf.reshape(tf.transpose(x, perm), join_dims([1, h, w], [b * c])), k // 2)
    f = tf.reshape(tf.transpose(dy, perm), join_dims([h, w], [b * c, 1]))
    g = tf.raw_ops.DepthwiseConv2dNative(input=xt, filter=f, strides=[1, 1, 1, 1], padding="VALID")
    return tf.reduce_sum(tf.reshape(g, join_dims([k, k], [b, c, 1])), axis=constant(2))  # [k, k, C, 1]


def _custom_depthwise(x, kernel, stride, padding):
    """(hdas_tf's op library, the symmetric padding its depthwise ops take for TF's ``padding``) where they
    apply to this conv, else None: not in use, or TF's 'SAME' is asymmetric (stride 2, even k)."""
    lib = custom_kernels(x)
    k = kernel.shape[0]
    if lib is None:
        return None
    if padding == "VALID":
        return lib, 0
    if padding == "SAME" and stride == 1 and k is not None and k % 2 == 1:
        return lib, (k - 1) // 2
    return None


def depthwise_forward(x, kernel, stride, padding):
    custom = _custom_depthwise(x, kernel, stride, padding)
    if custom is not None:
        lib, pad = custom
        return lib.hdas_depthwise_conv2d(x, kernel, stride=stride, pad=pad)
    return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, stride, stride, 1], padding=padding)


def depthwise_backward(x, kernel, da, stride, padding, weight_gradients):
    custom = _custom_depthwise(x, kernel, stride, padding)
    if custom is not None:
        lib, pad = custom
        dx = lib.hdas_depthwise_conv2d_backprop_input(join_dims(dims(x)), kernel, da, stride=stride, pad=pad)
        if not weight_gradients:
            return dx, None
        return dx, lib.hdas_depthwise_conv2d_backprop_filter(x, da, k=kernel.shape[0], stride=stride, pad=pad)
    strides = [1, stride, stride, 1]
    dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(input_sizes=join_dims(dims(x)), filter=kernel, out_backprop=da,
                                                       strides=strides, padding=padding)
    if not weight_gradients:
        return dx, None
    k = kernel.shape[0]
    if stride == 1 and padding == "SAME" and k >= FAST_FILTER_GRAD_MIN_K:
        return dx, depthwise_filter_grad(x, da, k)
    dk = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(input=x, filter_sizes=constant(list(kernel.shape)),
                                                        out_backprop=da, strides=strides, padding=padding)
    return dx, dk


def _depthwise_recorded(x, kernel, stride, padding):
    """The depthwise conv as one tape operation whose backward pass is :func:`depthwise_backward`: the filter
    gradient is left out where ``weight_gradients`` is off, and no autodiff bookkeeping is added."""
    with record.stop_recording():
        y = depthwise_forward(x, kernel, stride, padding)
    if record.should_record_backprop([x, kernel]):
        record.record_operation_backprop_only(
            "HdasDepthwise", [y], [x, kernel],
            lambda dy: list(depthwise_backward(x, kernel, dy, stride, padding, option("weight_gradients", True))))
    return y


def depthwise(x, kernel, stride: int = 1, padding: str = "SAME"):
    """A depthwise conv (``padding`` 'SAME' at stride 1 — symmetric for odd k — or 'VALID' on an input the
    caller padded), on hdas_tf's kernels where they are in use; with TF's, the 5×5 filter gradient takes the
    fast path."""
    kernel = tf.cast(kernel, x.dtype)
    custom = _custom_depthwise(x, kernel, stride, padding) is not None
    if custom or (stride == 1 and padding == "SAME" and kernel.shape[0] >= FAST_FILTER_GRAD_MIN_K):
        return _depthwise_recorded(x, kernel, stride, padding)
    return depthwise_forward(x, kernel, stride, padding)


# === PyTorch-grid convolutions, polyphase dilation, FactorizedReduce ===
# Chosen by measurement on the CPU kernels of TF 2.21 with oneDNN (BUILD_NOTES "Mixed ops and the PyTorch grid"):
# 'SAME' padding at stride 1 (symmetric for odd kernels, so the PyTorch grid) — EXPLICIT padding sends the backward
# pass to kernels 2–5× slower; 1×1 convolutions as 2-D matmuls (a Conv2D in a chain's forward pass); dilation
# through a polyphase split instead of SpaceToBatch per op; strided sampling through a 1×1 average pool rather than
# a strided slice, whose gradient is a slow scatter.


def torch_conv2d(x, kernel, stride=1, padding=0):
    """Convolution with symmetric zero padding (torch.nn.Conv2d's grid); 1×1 at stride 1 is a matmul."""
    kernel = tf.cast(kernel, x.dtype)
    if kernel.shape[0] == 1 and kernel.shape[1] == 1 and stride == 1 and padding == 0:
        return pointwise(x, kernel)
    if padding:
        x = pad(x, padding)
    return tf.raw_ops.Conv2D(input=x, filter=kernel, strides=[1, stride, stride, 1], padding="VALID")


def pointwise(x, kernel):
    """1×1 convolution (``kernel`` [C_in, C_out] or [1, 1, C_in, C_out]) as a 2-D matmul of the pixels
    [N·H·W, C_in] with the kernel, differentiable by TF (matmuls and reshapes, forward and backward).

    Not a broadcast matmul of the 4-D tensor: TF runs that as N·H matmuls of W rows each, which on an AVX2 CPU took
    1.2–7× as long as the 2-D matmul (BUILD_NOTES "Mixed ops and the PyTorch grid"). TF's Conv2D gradients are
    slower still.
    """
    kernel = tf.cast(kernel, x.dtype)
    if kernel.shape.rank == 4:
        kernel = tf.reshape(kernel, kernel.shape[2:])
    flat = tf.linalg.matmul(tf.reshape(x, constant([-1, x.shape[-1]])), kernel)
    return tf.reshape(flat, join_dims(dims(x)[:-1], [kernel.shape[-1]]))


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


def torch_depthwise_conv2d(x, kernel, stride=1, dilation=1, padding=0):
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
        return depthwise(pad(x, padding), kernel, stride, "VALID")
    if dilation == 2 and same:
        if stride == 2:
            return depthwise_same(subsample(x), kernel)
        if polyphase_ok(x.shape):
            return from_polyphase(depthwise_same(to_polyphase(x), kernel))
    y = tf.nn.depthwise_conv2d(pad(x, padding), kernel, [1, 1, 1, 1], "VALID", dilations=[dilation, dilation])
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

"""Conv → BN chains with hand-written backward passes, the training-mode form of every conv op.

Every conv op of the DARTS family is made of steps [depthwise k×k →] 1×1 (or a small dense conv) → BN. Left
to autodiff, each step's backward pass is a dozen graph nodes of shape bookkeeping around the three real
kernels (BUILD_NOTES "Conv → BN chains and recomputation"); here it is written out, and decides what is kept:

- ``recompute`` off: each step keeps its input, the depthwise output and the BN input (what autodiff keeps);
- ``recompute`` on: a chain keeps only its input and recomputes the rest in the backward pass, so the activation
  memory of a cell is its state tensors (for large batches: BUILD_NOTES "Conv → BN chains and recomputation").

``weight_gradients`` off (the architecture step of a search) leaves the kernel gradients out of the graph. On
several replicas (synchronized BN) the chains are plain ops differentiated by TF, through the all-reduce.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from tensorflow.python.eager import record

from hdas_tf.nn.batch_stats import fused_batch_norm, fused_batch_norm_grad, normalize_batch
from hdas_tf.nn.convolutions import depthwise, depthwise_backward, depthwise_forward, pointwise
from hdas_tf.nn.tracing import constant, crop, dims, join_dims, ones_vector, option, pad, single_replica, zeros_vector


def _pointwise_backward(a, dz, kernel, kernel_gradient: bool):
    """Gradients of z = a·kernel (a 1×1 convolution, ``kernel`` [C_in, C_out]) w.r.t. a and, if asked, the
    kernel: an Einsum over the channels and a 2-D matmul over the pixels (see ``pointwise``)."""
    # ∂a as one Einsum node: it contracts the channels of the 4-D dz as one 2-D matmul (as fast as
    # reshape → MatMul → reshape, measured) and saves the two Reshape nodes; graph nodes cost tracing time and
    # ~15 KB of memory each (BUILD_NOTES "Graph size, threads and what was measured"). The kernel gradient
    # stays a MatMul of the flattened tensors: the Einsum of that contraction ran 1.1–1.9× slower.
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
class ConvBNStep:
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
    """One conv → BN block: ``chain(x, [ConvBNStep(...)])`` (see :class:`ConvBNStep` and :func:`chain` for the
    arguments)."""
    out = chain(x, [ConvBNStep(pointwise_kernel, depthwise_kernel, stride, padding, conv_kernel, conv_stride, scale,
                          offset, pointwise_4d)], weight=weight, statistics=statistics, epsilon=epsilon, source=source,
                weight_scale=weight_scale)
    if not statistics:
        return out
    y, stats = out
    return (y, *stats[0])


def chain(x, steps, weight=None, statistics: bool = False, epsilon: float = 1e-5, source=None, weight_scale=None):
    """steps[0](x) → ReLU → steps[1] → ReLU → … in training mode (batch statistics): one tape operation.

    A separable conv is a chain of two steps, a dilated conv or a cell preprocessing one. ``x`` is the input
    already rectified where the op starts with a ReLU (a search cell computes one ReLU per state for all its
    edges). The backward pass is written out (see the module docstring); with ``recompute`` on it keeps only its input
    and recomputes every intermediate, including the ReLU between the steps.

    Args:
      source: optional ``(h, pad)`` with ``x = relu(h)`` padded by ``pad`` on each side (the ReLU of a cell
        state, shared by the state's edges; padded for a strided first depthwise conv): the chain then
        differentiates w.r.t. ``h`` and, with ``recompute`` on, keeps ``h`` (which the cell keeps anyway)
        instead of ``x``, recomputing the ReLU in the backward pass.
      weight: optional scalar: y = weight·BN_last(...), computed as the last BN with scale·weight — a search
        edge's op weight w_o (DARTS Eq. 2) at no extra pass over the tensor, forward or backward.
      statistics: also return, per step, (batch mean, unbiased batch variance) for running averages (they
        carry no gradient): ``(y, [(mean, var), ...])``.
      weight_scale: optional [C_out] float32 vector weight·1, for a non-affine last BN: a caller with many
        weighted chains (a search cell) computes them all in one op instead of one Mul per chain.
    """
    dtype = x.dtype
    n = len(steps)
    weighted = weight is not None
    if weighted:
        weight = tf.cast(weight, tf.float32)
    prepared = []
    for st in steps:
        cast = {k: None if getattr(st, k) is None else tf.cast(getattr(st, k), dtype)
                for k in ("pointwise", "depthwise", "conv", "pointwise_4d")}
        affine = st.scale is not None
        prepared.append(dataclasses.replace(
            st, **cast, scale=tf.cast(st.scale, tf.float32) if affine else None,
            offset=tf.cast(st.offset, tf.float32) if affine else None))
    steps = prepared

    def bn_parameters(i, scale, offset, w):
        st = steps[i]
        c_out = (st.pointwise if st.conv is None else st.conv).shape[-1]
        if scale is None:
            scale, offset = ones_vector(c_out), zeros_vector(c_out)
            if w is not None:
                scale = scale * w if weight_scale is None else weight_scale
        elif w is not None:
            scale, offset = scale * w, offset * w
        return scale, offset

    def conv_part(st, h, dw, pw_4d, conv):
        a = h if dw is None else depthwise_forward(h, dw, st.stride, st.padding)
        if conv is None:
            return a, _pointwise_conv(a, pw_4d)
        return a, tf.raw_ops.Conv2D(input=a, filter=conv, strides=[1, st.conv_stride, st.conv_stride, 1],
                                    padding="VALID")

    if not single_replica():  # synchronized BN: plain ops, differentiated by TF (through the all-reduce)
        h, stats = x, []
        for i, st in enumerate(steps):
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
                  else tf.reshape(st.pointwise, constant([1, 1, *st.pointwise.shape])) for st in steps]
    recompute = option("recompute", False)
    weight_gradients = option("weight_gradients", True)
    # The differentiable inputs, in order: x (or the source h), then per step γ/β (affine), the weight, then
    # per step kernels.
    inputs = [x if source is None else source[0]]
    for st in steps:
        if st.scale is not None:
            inputs += [st.scale, st.offset]
    if weighted:
        inputs.append(weight)
    for st in steps:
        inputs += [k for k in (st.depthwise, st.pointwise, st.conv) if k is not None]

    # The BN scale/offset of each step (w_o folded into the last), computed once: a recomputation reuses them.
    with record.stop_recording():  # the chain's gradient w.r.t. w_o, γ and β is written out in backward()
        bn_params = [bn_parameters(i, st.scale, st.offset, weight if i == n - 1 else None)
                     for i, st in enumerate(steps)]

    def forward(x):
        """Every intermediate: per step (input h, depthwise output a, BN input z, BN outputs)."""
        h, trace = x, []
        for i, st in enumerate(steps):
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
                    trace = forward(x if source is None else pad(tf.nn.relu(source[0]), source[1]))
            else:
                trace = kept
            g = dy
            affine_grads, kernel_grads, d_weight = [], [], None
            for i in reversed(range(n)):
                st = steps[i]
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
                        input_sizes=join_dims(dims(a)), filter=st.conv, out_backprop=dz,
                        strides=[1, st.conv_stride, st.conv_stride, 1], padding="VALID")
                grads = []
                if st.depthwise is None:
                    dh = da
                else:
                    dh, d_dw = depthwise_backward(h, st.depthwise, da, st.stride, st.padding, weight_gradients)
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
                g = crop(g, p)
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

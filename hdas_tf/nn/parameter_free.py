"""The parameter-free ops a search-cell or stage state shares between its edges (pooling + BN, identity),
computed once per state as one tape operation, and the weighted sums of DARTS Eq. 2 as matmuls."""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.eager import record

from hdas_tf.nn.batch_stats import fused_batch_norm, fused_batch_norm_grad, normalize_batch
from hdas_tf.nn.tracing import (constant, crop, custom_kernels, dims, join_dims, ones_vector, option, pad,
                                single_replica, zeros_vector)
from hdas_tf.space.op_registry import op_spec


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
        hp = pad(h, 1, float("-inf"))
        return tf.raw_ops.MaxPool(input=hp, ksize=_POOL_KSIZE, strides=s, padding="VALID"), (hp, None)
    hp = pad(h, 1)
    ones = pad(tf.ones_like(h[:1, :, :, :1]), 1)
    count = tf.raw_ops.AvgPool(value=ones, ksize=_POOL_KSIZE, strides=s, padding="VALID")
    return tf.raw_ops.AvgPool(value=hp, ksize=_POOL_KSIZE, strides=s, padding="VALID") / count, (hp, count)


def _pool_backward(kind, stride, pooled, out, dout):
    h_in, count = pooled
    padding = "SAME" if stride == 1 else "VALID"
    s = [1, stride, stride, 1]
    lib = custom_kernels(h_in)
    if kind == "max" and lib is not None:  # 'SAME' at stride 1 is padding 1; at stride 2 h_in is padded
        d = lib.hdas_max_pool_grad(h_in, out, dout, ksize=3, stride=stride, pad=1 if stride == 1 else 0)
    elif kind == "max":
        d = tf.raw_ops.MaxPoolGrad(orig_input=h_in, orig_output=out, grad=dout, ksize=_POOL_KSIZE, strides=s,
                                   padding=padding)
    else:
        d = tf.raw_ops.AvgPoolGrad(orig_input_shape=join_dims(dims(h_in)), grad=dout if count is None else dout / count,
                                   ksize=_POOL_KSIZE, strides=s, padding=padding)
    return d if stride == 1 else crop(d, 1)


def _flat_stack(tensors):
    return tf.reshape(tf.stack(tensors), constant([len(tensors), -1]))


def weighted_sums(weights, tensors):
    """[Σ_o W[e, o]·T_o for each row e] as ONE matmul of the [E, O] weights with the stacked [O, size] maps:
    two to three times faster here than E·O scalar products and E sums of same-shaped tensors (and one
    graph node instead of E·(O + 1)). Differentiable by TF (stack/matmul/unstack)."""
    shape = dims(tensors[0])
    out = tf.linalg.matmul(tf.cast(weights, tensors[0].dtype), _flat_stack(tensors))
    return tf.unstack(tf.reshape(out, join_dims([weights.shape[0]], shape)))


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

    if not single_replica():  # synchronized BN: plain ops, differentiated by TF
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
        kept = None if option("recompute", False) else maps

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
                                           join_dims([len(used)], dims(outputs[0]))))
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

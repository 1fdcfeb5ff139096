"""Training-mode batch normalisation with the batch statistics: the fused kernel and its gradient on one
replica, a synchronized (all-reduced) form on several."""

from __future__ import annotations

import tensorflow as tf

from hdas_tf.nn.tracing import custom_kernels, graph_constant


def fused_batch_norm(x, scale, offset, epsilon):
    """Training-mode BN with the batch statistics, as ``FusedBatchNormV3(is_training=True)``'s six outputs
    (y, mean, unbiased variance, three reserve spaces for :func:`fused_batch_norm_grad`), on hdas_tf's kernel
    where it is in use."""
    lib = custom_kernels(x)
    empty = graph_constant("empty", lambda: tf.zeros((0,), tf.float32))
    if lib is not None:
        return tuple(lib.hdas_batch_norm(x, scale, offset, epsilon=epsilon)) + (empty,)
    return tf.raw_ops.FusedBatchNormV3(x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=epsilon,
                                       is_training=True)


def fused_batch_norm_grad(dy, x, scale, reserve, epsilon):
    """(dx, dscale, doffset) of :func:`fused_batch_norm` from its three reserve spaces."""
    lib = custom_kernels(x)
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

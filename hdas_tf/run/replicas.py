"""The per-replica pieces of a step that make one device and several replicas give the same update
(BUILD_NOTES "Keras 3 specifics", "Optimiser parity"):

- losses and accuracies are averaged over the *global* batch, so their sums over replicas are the global values;
- weight gradients are all-reduced *before* the global-norm clip (Keras' ``global_clipnorm`` clips per replica);
- L2 weight decay is coupled (added to the gradient, PyTorch-style): Keras' ``weight_decay`` is decoupled.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdas_tf.run.optimizers import FlatSGD


def average_loss(labels, logits):
    """Mean cross-entropy over the *global* batch: summed over replicas it is the global mean."""
    per_example = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32), from_logits=True)
    n = tf.distribute.get_strategy().num_replicas_in_sync
    global_batch = tf.shape(labels)[0] * n
    return tf.reduce_sum(per_example) / tf.cast(global_batch, tf.float32)


def correct_share(labels, logits):
    """Correct predictions divided by the global batch: summed over replicas it is the accuracy."""
    n = tf.distribute.get_strategy().num_replicas_in_sync
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    correct = tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(labels, tf.int32)), tf.float32))
    return correct / tf.cast(tf.shape(labels)[0] * n, tf.float32)


def all_reduce_sum(values) -> list:
    """The sum over replicas of each value (the values themselves outside a replica context or on one replica)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return list(values)
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(values))


def apply_weight_gradients(optimizer, grads, variables, grad_clip: float, weight_decay: float) -> None:
    """The PyTorch-parity weight update, per replica: all-reduce the global-batch gradient shares, clip the
    global norm (after aggregation — Keras' clipnorm would clip per replica), add coupled L2, step.

    ``optimizer``: a ``FlatSGD`` (what the search and training jobs use: torch.optim.SGD on one flat vector) or
    any Keras optimizer, whose ``apply_gradients`` sums over replicas again, hence the division by the
    replica count (BUILD_NOTES "Optimiser parity")."""
    if isinstance(optimizer, FlatSGD):
        optimizer.apply(grads, variables, grad_clip, weight_decay)
        return
    n = tf.distribute.get_strategy().num_replicas_in_sync
    grads = all_reduce_sum(grads)
    if grad_clip:
        grads, _ = tf.clip_by_global_norm(grads, grad_clip)
    grads = [(g + weight_decay * v) / n for g, v in zip(grads, variables)]
    optimizer.apply_gradients(zip(grads, variables))

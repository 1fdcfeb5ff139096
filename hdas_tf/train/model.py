"""Training a derived network from scratch: the genotype to train and the ``TrainingModel`` whose
``train_step`` adds the weighted auxiliary loss (BUILD_NOTES "Evaluation networks and training recipes").

The step is the search model's weight step (``hdas_tf.run.replicas``), so one device and several replicas
give the same update; coupled L2 applies to every trainable variable, as in the DARTS reference.

Loss (DARTS ``train.py``): CE(logits) + auxiliary_weight · CE(aux_logits), both with the same label
smoothing (ImageNet recipe: 0.1, as the reference applies its smoothed criterion to both heads).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdas_tf.errors import GenotypeError
from hdas_tf.nn import tracing
from hdas_tf.nn.eval_networks import ChainNetwork, StageNetwork, as_genotype
from hdas_tf.space.genotypes import Genotype
from hdas_tf.run.replicas import apply_weight_gradients, correct_share


# === the genotype ===


def combine_genotypes(genotype, stage_genotype=None) -> Genotype:
    """The genotype to build: ``genotype``'s cells, with the stage DAGs of ``stage_genotype`` when given.

    Args:
      genotype: a registry name, a genotype file, a Genotype or its dict. Must carry cells; it may also
        carry stage DAGs (or stage lengths), which make the network a stage network.
      stage_genotype: optional, same forms. Its stage DAGs (or stage lengths) add to or replace those of
        ``genotype``, so any published cell combines with any searched DAG (the paper's "H^s-DAS with
        cell in P-DARTS").
    """
    cells = as_genotype(genotype)
    if cells.cells is None:
        raise GenotypeError(f"genotype {cells.name!r} has stage DAGs but no cells; pass a cell genotype "
                            f"(e.g. DARTS_V2) as the genotype and this one as the stage genotype")
    if stage_genotype is None:
        return cells
    stages = as_genotype(stage_genotype)
    if stages.stages is None and stages.stage_lengths is None:
        raise GenotypeError(f"stage genotype {stages.name!r} has no stage DAGs and no stage lengths")
    return cells.with_stages(stages)


# === the model ===


def _smoothed_average_loss(labels, logits, label_smoothing):
    """Cross-entropy with label smoothing (targets (1 − ε)·onehot + ε/K) summed over this replica's examples
    and divided by the *global* batch: summed over replicas it is the global mean."""
    logits = tf.cast(logits, tf.float32)
    targets = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1])
    per_example = keras.losses.categorical_crossentropy(targets, logits, from_logits=True,
                                                        label_smoothing=label_smoothing)
    n = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.reduce_sum(per_example) / tf.cast(tf.shape(labels)[0] * n, tf.float32)


class TrainingModel(keras.Model):
    """An evaluation network with its optimizer and the supervised ``train_step`` / ``test_step``.

    The network (``ChainNetwork`` or ``StageNetwork``) is what is saved as ``model.keras``; this wrapper
    only adds the training recipe and is not serialised.

    Args:
      network: ChainNetwork or StageNetwork.
      auxiliary_weight: float. Weight of the auxiliary head's loss (DARTS: 0.4). Used when the network has
        the head.
      weight_decay: float. Coupled L2 on every trainable variable. Defaults to 3e-4.
      grad_clip: float. Global-norm clip after cross-replica aggregation; 0 disables. Defaults to 5.
      label_smoothing: float. ε of both losses. Defaults to 0.
      recompute: bool. Keep only the inputs of each conv → BN block for the backward pass and recompute the
        rest there (``hdas_tf.nn.chains``): less activation memory for some extra forward work. Defaults to False.
    """

    def __init__(self, network, auxiliary_weight: float = 0.4, weight_decay: float = 3e-4, grad_clip: float = 5.0,
                 label_smoothing: float = 0.0, recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(network, (ChainNetwork, StageNetwork)):
            raise ValueError(f"TrainingModel expects a ChainNetwork or StageNetwork, received {type(network).__name__}")
        for name, value in dict(auxiliary_weight=auxiliary_weight, weight_decay=weight_decay,
                                grad_clip=grad_clip).items():
            if value < 0:
                raise ValueError(f"TrainingModel: {name} must be >= 0, received {value}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"TrainingModel: label_smoothing must be in [0, 1), received {label_smoothing}")
        self.network = network
        self.auxiliary_weight, self.weight_decay = float(auxiliary_weight), float(weight_decay)
        self.grad_clip, self.label_smoothing = float(grad_clip), float(label_smoothing)
        self.recompute = bool(recompute)
        self.w_optimizer = None

    def call(self, images, training=None):
        return self.network(images, training=training)

    def build_all(self, image_shape, optimizer):
        """Creates every variable from shapes and the optimizer's slots. Call inside the strategy scope:
        building lazily inside ``strategy.run`` fails (BUILD_NOTES "Keras 3 specifics")."""
        self.network.build((None, *image_shape))
        self.built = True
        self.w_optimizer = optimizer
        optimizer.build(self.network.trainable_variables)

    def losses_of(self, labels, outputs):
        """(total, main, auxiliary) loss shares of one replica for the network's training outputs, and the
        main logits. Without an auxiliary head the total is the main loss and the auxiliary share is 0."""
        if isinstance(outputs, (tuple, list)):
            logits, aux_logits = outputs
        else:
            logits, aux_logits = outputs, None
        main = _smoothed_average_loss(labels, logits, self.label_smoothing)
        if aux_logits is None:
            return main, main, tf.zeros_like(main), logits
        aux = _smoothed_average_loss(labels, aux_logits, self.label_smoothing)
        return main + self.auxiliary_weight * aux, main, aux, logits

    def train_step(self, data):
        """One SGD step on a per-replica ``(images, labels)`` batch.

        Returns per-replica *shares* that sum over replicas to the global value: ``loss`` (the optimised
        total), ``loss_main``, ``loss_aux`` and ``acc`` (of the main logits).
        """
        images, labels = data
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape, tracing.options(recompute=self.recompute):
            outputs = self.network(images, training=True)
            loss, main, aux, logits = self.losses_of(labels, outputs)
            # float16: the optimizer's dynamic loss scale (FlatSGD divides the aggregated gradient by it).
            loss_scale = getattr(self.w_optimizer, "loss_scale", None)
            scaled = loss if loss_scale is None else loss * loss_scale.scale
        grads = tape.gradient(scaled, [v.value for v in variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        apply_weight_gradients(self.w_optimizer, grads, variables, self.grad_clip, self.weight_decay)
        return {"loss": loss, "loss_main": main, "loss_aux": aux, "acc": correct_share(labels, logits)}

    def test_step(self, data):
        """Inference (no auxiliary head, no drop path, BN running statistics) on a per-replica batch.

        Returns per-replica *sums* (not shares: the last evaluation batch may be partial): ``loss_sum``
        (plain cross-entropy, no smoothing), ``correct`` and ``count``.
        """
        images, labels = data
        logits = tf.cast(self.network(images, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(labels, tf.int32)), tf.float32))
        return {"loss_sum": tf.reduce_sum(per_example), "correct": correct,
                "count": tf.cast(tf.shape(labels)[0], tf.float32)}

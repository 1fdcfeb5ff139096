"""The run's tf.distribute strategy and the step function that runs per replica and sums the replicas' outputs.

TensorFlow is imported inside the functions: ``STRATEGIES`` is read by the configs and the flag definitions,
which must stay light.
"""

from __future__ import annotations

STRATEGIES = ("default", "mirrored", "multi_worker")

_MIRRORED: dict = {}


def make_strategy(kind: str = "default"):
    """One strategy object for the whole run (DESIGN §7).

    "mirrored" uses every visible GPU, or every logical CPU when there is no GPU (how the tests and
    CPU machines exercise the multi-replica code path); "multi_worker" reads TF_CONFIG.
    """
    import tensorflow as tf

    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = tuple(d.name for d in (gpus or tf.config.list_logical_devices("CPU")))
        # One per process and device set: a second MirroredStrategy over the same devices starts its collective
        # instance keys where the first did, and the collective runtime then mixes the two (shape mismatches).
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
        return _MIRRORED[devices]
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {kind!r}; choose default, mirrored or multi_worker")


def distributed_step(strategy, fn):
    """A tf.function running ``fn`` per replica and summing its per-replica outputs: the search and training
    steps return per-replica shares (or sums) of global values, so their sum over replicas is the value."""
    import tensorflow as tf

    @tf.function
    def step(batch):
        per_replica = strategy.run(fn, args=(batch,))
        return tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica)

    return step

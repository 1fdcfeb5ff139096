"""The run's tf.distribute strategy and the step function that runs per replica and sums the replicas' outputs.

TensorFlow is imported inside the functions: ``STRATEGIES`` is read by the configs and the flag definitions,
which must stay light.
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("default", "mirrored", "multi_worker")

_MIRRORED: dict = {}


def make_strategy(kind: str = "default"):
    """One strategy object for the whole run (BUILD_NOTES "Synchronized BN and distribution strategies").

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
        # One per process, created before any other TensorFlow op runs (the mains make it before the data opens).
        if kind not in _MIRRORED:
            _MIRRORED[kind] = tf.distribute.MultiWorkerMirroredStrategy()
        return _MIRRORED[kind]
    raise ValueError(f"unknown strategy {kind!r}; choose default, mirrored or multi_worker")


def check_run_options(strategy: str, jit_compile: bool) -> None:
    """Refuses the combinations that cannot work, with one line each (the configs call it)."""
    if jit_compile and strategy != "default":
        raise ValueError(f"--jit_compile works with --strategy=default only: XLA fails under the {strategy} "
                         "strategy's cross-device variables; drop one of the two")


def worker_task() -> tuple[str, int, bool]:
    """(task type, task index, is chief) of this process in TF_CONFIG; ("", 0, True) without one.

    TensorFlow's rule: the chief is the "chief" task, or worker 0 when the cluster has no chief."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "", 0, True
    try:
        config = json.loads(raw)
        task = config.get("task", {})
        kind, index = str(task.get("type", "")), int(task.get("index", 0))
        has_chief = bool(config.get("cluster", {}).get("chief"))
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not valid JSON of a cluster and a task ({e}); see README \"Several machines\"")
    return kind, index, kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def distributed_step(strategy, fn, jit_compile: bool = False):
    """A tf.function running ``fn`` per replica and summing its per-replica outputs: the search and training
    steps return per-replica shares (or sums) of global values, so their sum over replicas is the value.

    ``jit_compile``: compile the step with XLA (one device only: ``check_run_options``). XLA cannot compile
    hdas_tf's CPU kernels, so the step is traced with TensorFlow's (``tracing.options(native_kernels=True)``).
    """
    import tensorflow as tf

    from hdas_tf.nn import tracing

    @tf.function(jit_compile=jit_compile or None)
    def step(batch):
        with tracing.options(native_kernels=True if jit_compile else None):
            per_replica = strategy.run(fn, args=(batch,))
        return tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica)

    return step


def sum_over_workers(strategy):
    """A tf.function ``total(value)``: the sum over every replica of the run of the host value each process passes
    in (each process's value counts once per local replica). It is how the workers of a multi-worker run agree
    on a host decision at the same step (``run.loop``, ``run.checkpoints.WorkerAgreement``)."""
    import tensorflow as tf

    @tf.function
    def total(value):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(value)), axis=None)

    return total

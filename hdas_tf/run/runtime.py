"""Process-wide settings of a run (thread pools, Grappler, op tracebacks, seed, determinism, logical CPUs)
and the process's peak memory."""

from __future__ import annotations

import os
import resource

import keras
import tensorflow as tf
from absl import logging

from hdas_tf.run import op_tracebacks


def configure_runtime(cfg) -> None:
    """Process-wide settings; call before any graph is built (``cfg``: a SearchConfig or TrainConfig)."""
    # Grappler's graph optimisation took minutes on a supernet's first step and did not make the step
    # faster here (BUILD_NOTES "Graph size, threads and what was measured"), so it is off unless asked for.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not cfg.grappler})
    # The per-op Python stack traces cost seconds of the first step and hundreds of MiB (op_tracebacks).
    op_tracebacks.set_enabled(cfg.op_tracebacks)
    configure_threads(cfg.inter_op_threads, cfg.intra_op_threads, cfg.batch_size)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


# Global batch from which ops get two threads each when the thread pools are automatic (see configure_threads).
LARGE_BATCH = 64


def configure_threads(inter_op: int = 0, intra_op: int = 0, batch_size: int | None = None) -> tuple[int, int]:
    """TF's thread pools; 0 = automatic. On a CPU-only host: one op per core at a time, and one thread per op
    for batches below ``LARGE_BATCH``, two from it on; with a GPU, TF's defaults.

    A supernet step is thousands of small ops: running independent ops side by side uses the cores better
    than splitting each op, until the ops are large enough that the critical path of big ones dominates.
    On 2 cores one thread per op was fastest below batch 64 (BUILD_NOTES "Graph size, threads and what was
    measured"; the figures are in benchmarks/LOG.md). Returns the (inter, intra) settings in force.
    """
    if not tf.config.list_physical_devices("GPU"):
        cores = os.cpu_count() or 1
        inter_op = inter_op or cores
        intra_op = intra_op or (min(2, cores) if batch_size and batch_size >= LARGE_BATCH else 1)
    try:
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError as e:  # TF already started (e.g. a test process): the pools are fixed by now
        logging.warning("thread pools left as they are (%s)", e)
    return (tf.config.threading.get_inter_op_parallelism_threads(),
            tf.config.threading.get_intra_op_parallelism_threads())


def split_cpu(logical_cpus: int) -> None:
    """Splits the first CPU into ``logical_cpus`` logical devices (to run "mirrored" on a CPU); 0 leaves it whole.
    Call before anything initialises TensorFlow's devices."""
    if logical_cpus:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * logical_cpus)


def cpu_model() -> str | None:
    """The CPU's model name as /proc/cpuinfo gives it (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

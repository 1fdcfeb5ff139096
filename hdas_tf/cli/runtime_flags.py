"""The flags of how a job runs on its host — threads, graph optimisation, recomputation, devices, precision,
XLA, checkpoint intervals — shared by
``hdas_tf.search`` and ``hdas_tf.train`` (one definition, so the two mains cannot drift). Each main adopts
them as its key flags (``flags.adopt_module_key_flags``), so they are written to ``RUN_DIR/flags.cfg``.

Light on purpose: absl, ``hdas_tf.run.strategy`` and ``hdas_tf.run.precision`` only; TensorFlow is imported when
``split_cpu`` runs.
"""

from __future__ import annotations

import sys

from absl import flags

from hdas_tf.run.precision import PRECISIONS
from hdas_tf.run.strategy import STRATEGIES

FLAGS = flags.FLAGS

flags.DEFINE_boolean("grappler", False, "Enable TF graph optimisation (slower start; see BUILD_NOTES "
                     '"Graph size, threads and what was measured").')
flags.DEFINE_boolean("op_tracebacks", False, "Keep TensorFlow's Python stack trace of every graph op, for the 'defined "
                     "at' lines of runtime op errors (off: a faster first step and less memory; see BUILD_NOTES "
                     '"Graph size, threads and what was measured").')
flags.DEFINE_integer("inter_op_threads", 0, "Ops run side by side; 0 = automatic (one per core on a CPU-only host).",
                     lower_bound=0)
flags.DEFINE_integer("intra_op_threads", 0, "Threads per op; 0 = automatic (on a CPU-only host 1 below a batch of "
                     "64 — a supernet's many small ops parallelise better across ops — and 2 from 64 on).",
                     lower_bound=0)
flags.DEFINE_boolean("recompute", False, "Recompute conv activations in the backward pass instead of keeping them: "
                     "much less memory (large batches), some extra compute.")
flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy (multi_worker: one process per worker, "
                  "each with its TF_CONFIG; see README 'Several machines').")
flags.DEFINE_enum("mixed_precision", "off", PRECISIONS, "Compute the weights' layers in bfloat16 (bf16: CPUs, TPUs, "
                  "recent GPUs) or float16 with dynamic loss scaling (fp16: GPUs); α/β, softmaxes, losses and BN "
                  "statistics stay float32, and so do exports.")
flags.DEFINE_boolean("jit_compile", False, "Compile the step with XLA (meant for GPUs; slower on CPUs; "
                     "--strategy=default only).")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also write a checkpoint every N steps (0 = only at epoch ends).",
                     lower_bound=0)
flags.DEFINE_float("checkpoint_every_minutes", 0.0, "Also write a checkpoint when M minutes have passed since the "
                   "last one (0 = off). SIGTERM/SIGINT always write one after the current step.", lower_bound=0.0)
flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (to run 'mirrored' on CPU).",
                     lower_bound=0)


def split_cpu() -> None:
    """Applies ``--logical_cpus`` (before anything initialises TensorFlow's devices)."""
    if FLAGS.logical_cpus:
        from hdas_tf.run.runtime import split_cpu as split

        split(FLAGS.logical_cpus)


def key_flag_lines(module_name: str, exclude=()) -> list[str]:
    """The key flags of main module ``module_name`` that have a value, as flag-file lines (for flags.cfg)."""
    key_flags = FLAGS.get_key_flags_for_module(sys.modules[module_name])
    return [fl.serialize() for fl in key_flags if fl.value is not None and fl.name not in exclude]

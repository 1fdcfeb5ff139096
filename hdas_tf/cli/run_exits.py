"""How the search and training mains end a run that stops early: one log line and an exit code, no traceback.

- SIGTERM / SIGINT (``run.checkpoints.Interrupted``): the checkpoint written after the step in flight, and the
  exact command that resumes the run; exit code 128 + the signal number (143 for SIGTERM, 130 for SIGINT).
- Out of memory (``run.loop.OutOfMemoryError``, or TensorFlow's ResourceExhaustedError while the model is
  built or the step traced): the flags that lower the memory a step needs; exit code 1.
"""

from __future__ import annotations

import contextlib

from absl import logging

# The exit code of a run that ran out of memory.
OUT_OF_MEMORY_EXIT = 1


@contextlib.contextmanager
def clean_exits(module: str, run_dir: str):
    """Turns an interrupted or out-of-memory run of ``python -m module --run_dir=run_dir`` into a log line and
    ``SystemExit``."""
    import tensorflow as tf

    from hdas_tf.run.checkpoints import Interrupted, resume_command
    from hdas_tf.run.loop import OutOfMemoryError, out_of_memory_message

    try:
        yield
    except Interrupted as e:
        logging.error("%s. Resume with: %s", e, resume_command(module, run_dir))
        raise SystemExit(e.exit_code) from None
    except OutOfMemoryError as e:
        logging.error("%s", e)
        raise SystemExit(OUT_OF_MEMORY_EXIT) from None
    except tf.errors.ResourceExhaustedError as e:
        logging.error("%s", out_of_memory_message("while building the model or tracing its step", e))
        raise SystemExit(OUT_OF_MEMORY_EXIT) from None

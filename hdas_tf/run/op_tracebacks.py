"""TensorFlow's per-op Python stack traces: off by default while hdas_tf builds its graphs.

TensorFlow keeps the Python call stack of every op it adds to a graph (``ops._create_c_op`` →
``TF_SetOpStackTrace``). It uses them for one thing only: the "defined at (most recent call last)" lines
of an error raised by an op while the graph runs. Shape and type errors are raised while tracing, as plain
Python exceptions with their own tracebacks, so they do not need them. A search step is ~27–35 k nodes,
traced through deep Keras and custom-gradient stacks. Capturing the stacks, and the runtime's handling of
them when it instantiates the function, cost the full cell supernet at batch 16 (BUILD_NOTES "Graph size, threads and what was measured"):

- without ``--recompute``: 3.5 s of its first step and 240 MiB of peak memory;
- with ``--recompute``: 12 s and 280 MiB.

Runtime errors keep their type and message (the op's name and what went wrong); only the Python location of
the failing op is missing. ``--op_tracebacks`` turns the stacks back on for debugging.

The switch replaces ``tensorflow.python.framework.ops._create_c_op`` with a wrapper that passes
``extract_traceback=False``. That function is private, so the switch first checks that the parameter is
there (TensorFlow 2.21, as pinned in requirements.txt). If it is not, the switch warns and leaves TensorFlow
untouched.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

from absl import logging
from tensorflow.python.framework import ops as _tf_ops

_ORIGINAL = _tf_ops._create_c_op


def _supported(fn) -> bool:
    try:
        return "extract_traceback" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.wraps(_ORIGINAL)
def _create_c_op_without_traceback(*args, **kwargs):
    kwargs["extract_traceback"] = False
    return _ORIGINAL(*args, **kwargs)


def enabled() -> bool:
    """Whether TensorFlow records a Python stack trace for each op it creates (its default)."""
    return _tf_ops._create_c_op is not _create_c_op_without_traceback


def set_enabled(on: bool) -> bool:
    """Turns the per-op stack traces on (TensorFlow's default) or off for every graph built afterwards in this
    process. Returns whether they are on after the call. If this TensorFlow's private op constructor does not
    take ``extract_traceback``, a request to turn them off is refused with a warning and changes nothing."""
    if on:
        _tf_ops._create_c_op = _ORIGINAL
        return True
    if not _supported(_ORIGINAL):
        logging.warning("op tracebacks left on: this TensorFlow's ops._create_c_op has no extract_traceback "
                        "parameter (written for TensorFlow 2.21)")
        return enabled()
    _tf_ops._create_c_op = _create_c_op_without_traceback
    return False


@contextlib.contextmanager
def setting(on: bool):
    """``set_enabled(on)`` inside the block. On exit, the state from before the block comes back."""
    before = enabled()
    set_enabled(on)
    try:
        yield
    finally:
        set_enabled(before)

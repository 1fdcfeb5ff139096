"""Trace-time machinery of the hand-written blocks: their options (recompute, weight gradients, native
kernels), one constant per graph and value, and shape helpers that add no graph nodes when shapes are static.

Tracing costs ~0.5 ms per graph node on the CPU, so a supernet's step is built from as few nodes as possible
(BUILD_NOTES "Graph size, threads and what was measured").
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

from hdas_tf.nn import cpu_kernels

_OPTIONS = threading.local()


def option(name: str, default: bool) -> bool:
    """The value of option ``name`` in the innermost ``options`` context, else ``default``."""
    return getattr(_OPTIONS, name, default)


@contextlib.contextmanager
def options(recompute: bool | None = None, weight_gradients: bool | None = None, native_kernels: bool | None = None):
    """Trace-time options of the blocks built inside the context (``chains`` says what each does).
    ``native_kernels``: TF's own kernels even where hdas_tf's CPU kernels are in use (graphs that leave the
    process: SavedModel, TFLite)."""
    given = {"recompute": recompute, "weight_gradients": weight_gradients, "native_kernels": native_kernels}
    saved = {k: getattr(_OPTIONS, k, None) for k in given}
    try:
        for k, v in given.items():
            if v is not None:
                setattr(_OPTIONS, k, bool(v))
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                if hasattr(_OPTIONS, k):
                    delattr(_OPTIONS, k)
            else:
                setattr(_OPTIONS, k, v)


def single_replica() -> bool:
    """Whether BN statistics are local (one replica, or outside a replica context): the fused kernels apply."""
    return tf.distribute.get_strategy().num_replicas_in_sync == 1 or tf.distribute.get_replica_context() is None


def graph_constant(key, make):
    """One constant per graph and key: a supernet has hundreds of BNs that would each add their own
    ones/zeros/empty constants, and every graph node costs tracing time
    (BUILD_NOTES "Graph size, threads and what was measured").

    The cache is an attribute of the graph, so it dies with the graph (a module-level map keyed by graph
    would keep every graph alive through its values' tensors)."""
    if tf.executing_eagerly():
        return make()
    graph = tf.compat.v1.get_default_graph()
    cache = getattr(graph, "_hdas_constants", None)
    if cache is None:
        cache = {}
        graph._hdas_constants = cache
    if key not in cache:
        with tf.control_dependencies(None):  # shared by every user: it must not wait for the first one's inputs
            cache[key] = make()
    return cache[key]


def constant(value, dtype=tf.int32):
    """A shape, axes or paddings constant, one Const node per graph and value (they are many otherwise)."""
    return graph_constant(("const", tf.as_dtype(dtype).name, repr(value)), lambda: tf.constant(value, dtype))


def ones_vector(c: int):
    return graph_constant(("ones", c), lambda: tf.ones((c,), tf.float32))


def zeros_vector(c: int):
    return graph_constant(("zeros", c), lambda: tf.zeros((c,), tf.float32))


def custom_kernels(x):
    """hdas_tf's CPU ops (``cpu_kernels``) where they apply to ``x`` (float32, not in an exported graph), else
    None (TF's)."""
    if x.dtype != tf.float32 or option("native_kernels", False):
        return None
    return cpu_kernels.library()


def crop(x, p: int):
    """x[:, p:-p, p:-p, :] as a Slice whose begin/size are shared constants (a strided slice adds three
    constants of its own) when the shape is static."""
    if p == 0:
        return x
    _, h, w, _ = x.shape
    if h is None or w is None:
        return x[:, p:-p, p:-p, :]
    return tf.slice(x, constant([0, p, p, 0]), constant([-1, h - 2 * p, w - 2 * p, -1]))


def pad(x, p: int, value: float = 0.0):
    if p == 0:
        return x
    return tf.pad(x, constant([[0, 0], [p, p], [p, p], [0, 0]]), constant_values=value)


def dims(x):
    """Static dimensions where known (no graph nodes), dynamic ones otherwise."""
    static = x.shape.as_list()
    if all(d is not None for d in static):
        return static
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def join_dims(*parts):
    """A shape from static and dynamic dimensions: a shared constant when all are static."""
    dims = [d for part in parts for d in part]
    return constant(dims) if all(isinstance(d, int) for d in dims) else tf.stack(dims)

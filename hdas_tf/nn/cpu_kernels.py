"""hdas_tf's own CPU kernels (``hdas_tf/nn/csrc``: depthwise convolution, training-mode batch normalisation and
the max-pool gradient, with their gradients): built with the machine's C++ compiler on first use, cached, and
loaded as TensorFlow ops. Why: BUILD_NOTES "CPU kernels and their build".

``HDAS_TF_KERNELS`` chooses: ``auto`` (default: these kernels where they build and no GPU is visible, else TF's
with a warning), ``custom`` (these or an error), ``native`` (TF's). Graphs that leave the process are traced
with TF's ops (``tracing.options(native_kernels=True)``). The library is cached in ``$HDAS_TF_KERNEL_CACHE``
(default ``~/.cache/hdas_tf/kernels``) under a key of the sources, TF, compiler and CPU (``-march=native``);
``python -m hdas_tf.cli.build_kernels`` builds it ahead of time.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import threading
import time

import tensorflow as tf
from absl import logging

from hdas_tf.files import atomic_path

MODE_ENV = "HDAS_TF_KERNELS"
CACHE_ENV = "HDAS_TF_KERNEL_CACHE"
MODES = ("auto", "custom", "native")
SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
SOURCES = tuple(os.path.join(SOURCE_DIR, name) for name in ("depthwise_conv.cc", "batch_norm.cc", "max_pool_grad.cc"))
HEADERS = (os.path.join(SOURCE_DIR, "common.h"),)


class KernelBuildError(RuntimeError):
    """The custom kernels could not be compiled or loaded."""


def mode() -> str:
    value = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={os.environ[MODE_ENV]!r}: expected one of {', '.join(MODES)}")
    return value


def cache_dir() -> str:
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hdas_tf", "kernels")


def _compiler() -> str:
    return os.environ.get("CXX") or "g++"


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _command(output: str) -> list:
    return ([_compiler(), "-O3", "-march=native", "-shared", "-fPIC", "-w", *SOURCES, "-o", output]
            + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def library_path() -> str:
    """Where the library for these sources, TF, compiler and CPU lives (built or not)."""
    parts = []
    for source in SOURCES + HEADERS:
        with open(source, "rb") as f:
            parts.append(f.read())
    compiler = shutil.which(_compiler()) or _compiler()
    parts += [tf.__version__.encode(), " ".join(_command("OUT")).encode(), compiler.encode(), _cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return os.path.join(cache_dir(), f"hdas_kernels_{key}.so")


def build() -> str:
    """Compiles the library unless the cache has it; returns its path. The compiler writes a temporary file
    that is renamed into place, so a failed or concurrent build never leaves a partial library."""
    path = library_path()
    if os.path.exists(path):
        return path
    if shutil.which(_compiler()) is None:
        raise KernelBuildError(f"no C++ compiler '{_compiler()}' on PATH (set CXX, or {MODE_ENV}=native)")
    start = time.monotonic()
    with atomic_path(path, suffix=".so.tmp") as tmp:
        done = subprocess.run(_command(tmp), capture_output=True, text=True)
        if done.returncode != 0:
            raise KernelBuildError(f"compiling {SOURCE_DIR} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    logging.info("built hdas_tf's CPU kernels in %.1f s: %s", time.monotonic() - start, path)
    return path


_LOCK = threading.Lock()
_STATE: dict = {}


def _register_gradients(lib) -> None:
    """The ops are linear in each input, so every gradient is one of the three ops (adjoint pairs):
    y = F(x, f), dx = B_in(f, dy), df = B_f(x, dy) with <F(x, f), dy> = <x, B_in(f, dy)> = <f, B_f(x, dy)>."""

    def attrs(op):
        return {"stride": op.get_attr("stride"), "pad": op.get_attr("pad")}

    def k_of(filter_tensor):
        k = filter_tensor.shape[0]
        if k is None:
            raise ValueError("the custom depthwise kernels need a filter of static size")
        return int(k)

    @tf.RegisterGradient("HdasDepthwiseConv2d")
    def _forward_grad(op, dy):
        x, f = op.inputs
        a = attrs(op)
        return [lib.hdas_depthwise_conv2d_backprop_input(tf.shape(x), f, dy, **a),
                lib.hdas_depthwise_conv2d_backprop_filter(x, dy, k=k_of(f), **a)]

    @tf.RegisterGradient("HdasDepthwiseConv2dBackpropInput")
    def _input_grad_grad(op, g):
        _, f, dy = op.inputs
        a = attrs(op)
        return [None, lib.hdas_depthwise_conv2d_backprop_filter(g, dy, k=k_of(f), **a),
                lib.hdas_depthwise_conv2d(g, f, **a)]

    @tf.RegisterGradient("HdasDepthwiseConv2dBackpropFilter")
    def _filter_grad_grad(op, g):
        x, dy = op.inputs
        a = attrs(op)
        return [lib.hdas_depthwise_conv2d_backprop_input(tf.shape(x), g, dy, **a), lib.hdas_depthwise_conv2d(x, g, **a)]

    @tf.RegisterGradient("HdasBatchNorm")
    def _batch_norm_grad(op, dy, *_):
        # As TF's FusedBatchNormV3 gradient: only y is differentiated (the statistics feed running averages).
        x, scale, _ = op.inputs
        return list(lib.hdas_batch_norm_grad(dy, x, scale, op.outputs[3], op.outputs[4],
                                             epsilon=op.get_attr("epsilon")))


def _load():
    path = build()
    try:
        lib = tf.load_op_library(path)
    except Exception as e:  # a stale or foreign file: say which
        raise KernelBuildError(f"loading {path} failed: {e}") from e
    _register_gradients(lib)
    return lib


def library():
    """The loaded op library, or None where TF's kernels are to be used (see the module docstring)."""
    chosen = mode()
    if chosen == "native":
        return None
    with _LOCK:
        if "lib" not in _STATE:
            if chosen == "auto" and tf.config.list_physical_devices("GPU"):
                _STATE.update(lib=None, why="a GPU is visible (hdas_tf's kernels are CPU-only)")
            else:
                try:
                    _STATE.update(lib=_load(), why=None)
                except KernelBuildError as e:
                    if chosen == "custom":
                        raise
                    _STATE.update(lib=None, why=str(e))
                    logging.warning("using TensorFlow's kernels instead of hdas_tf's: %s", e)
        if _STATE["lib"] is None and chosen == "custom":
            raise KernelBuildError(f"{MODE_ENV}=custom but {_STATE['why']}")
        return _STATE["lib"]


def in_use() -> str:
    """'custom' or 'native': what this process's search and training graphs get (for benchmark records)."""
    return "native" if library() is None else "custom"

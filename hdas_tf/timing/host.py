"""What a result was measured on: the machine (CPU, memory, library versions) and the code (git commit)."""

from __future__ import annotations

import os
import platform
import subprocess


def machine_facts() -> dict:
    """CPU model, logical cores, total memory and library versions: what a number was measured on."""
    import keras
    import numpy as np
    import tensorflow as tf

    from hdas_tf.run.runtime import cpu_model as read_cpu_model

    cpu_model = read_cpu_model()
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = next((int(line.split()[1]) for line in f if line.startswith("MemTotal:")), None)
        memory_gib = None if kib is None else round(kib / 2**20, 2)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu_model or platform.processor() or None, "logical_cores": os.cpu_count(),
            "usable_cores": usable, "memory_total_gib": memory_gib, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def code_version() -> str | None:
    """The commit of the checkout holding this file (``git describe --always``), with ``-dirty`` when tracked
    files other than ``benchmarks/`` differ from it, or None outside a git checkout.

    ``benchmarks/`` is left out of the check because a standard run rewrites its own results there after every
    row: a run from a clean checkout would otherwise call every row after the first one dirty.
    """
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("describe", "--always")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmarks")
    return commit + "-dirty" if changed is None or changed else commit

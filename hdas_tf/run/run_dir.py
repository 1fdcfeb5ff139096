"""The run directory: a fresh run or the resumption of one, flags.cfg, the log file, the config as JSON, the
epoch history a resumed run continues, and the directory each worker of a multi-worker run writes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging as std_logging
import os
import shutil
import tempfile

from absl import logging

from hdas_tf.errors import RunDirError
from hdas_tf.files import write_json_atomic, write_text_atomic


def check_run_dir(run_dir: str, resume: bool) -> None:
    """Everything about ``run_dir`` that can be checked before a run writes anything: it is given, it is (or can
    be made) a directory this process can write to, and it holds no other run unless resuming. Raises
    RunDirError."""
    if not run_dir:
        raise RunDirError("no run directory given: pass --run_dir=DIR (a new directory, or a run's to --resume it)")
    path = os.path.abspath(os.fspath(run_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"run directory {run_dir} is a file, not a directory; choose another --run_dir")
    existing = path
    while not os.path.exists(existing):  # the nearest existing ancestor is the one that must be writable
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunDirError(f"cannot create run directory {run_dir}: {existing} is a file; choose another --run_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to run directory {run_dir}: {existing} is not writable; choose a "
                          "--run_dir you can write to")
    ensure_fresh_or_resume(run_dir, resume)


def ensure_fresh_or_resume(run_dir: str, resume: bool) -> None:
    """Refuses to mix a new run into a directory that holds another run's checkpoints (RunDirError)."""
    import tensorflow as tf  # only here: the mains call this before anything else needs TensorFlow

    ckpt = os.path.join(run_dir, "checkpoints")
    has = tf.train.latest_checkpoint(ckpt) is not None if os.path.isdir(ckpt) else False
    if has and not resume:
        raise RunDirError(f"{run_dir} already holds a run's checkpoints; pass --resume to continue it, "
                          "or choose a new --run_dir")


def start(run_dir: str, resume: bool, flag_lines, log_name: str, keep_flags_on_resume: bool = False) -> None:
    """Opens ``run_dir`` for a main: checks it (``check_run_dir``), writes ``flags.cfg`` from
    ``flag_lines`` (kept as it is when ``keep_flags_on_resume`` and the run resumes) and sends the progress log
    to ``RUN_DIR/log_name`` as well as stderr. Raises RunDirError, before writing anything, for a refused run."""
    check_run_dir(run_dir, resume)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "flags.cfg")
    if not (keep_flags_on_resume and resume and os.path.exists(path)):
        write_text_atomic(path, "\n".join(flag_lines) + "\n")
    log_to_file(os.path.join(run_dir, log_name))


def log_to_file(path: str) -> None:
    """Adds ``path`` to the absl logger's outputs (appending: a resumed run continues its log) at level INFO."""
    handler = std_logging.FileHandler(path)
    handler.setFormatter(logging.PythonFormatter())
    logging.get_absl_logger().addHandler(handler)
    logging.set_verbosity(logging.INFO)


def json_ready(cfg) -> dict:
    """A config dataclass as a JSON-ready dict (tuples as lists), as ``config.json`` and ``run.json`` hold it."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def write_config(run_dir: str, cfg) -> None:
    """``RUN_DIR/config.json``."""
    write_json_atomic(os.path.join(run_dir, "config.json"), json_ready(cfg))


def load_history(run_dir: str, keep) -> list:
    """The entries of ``RUN_DIR/history.json`` for which ``keep(entry)`` holds ([] without the file): a resumed
    run continues the history of the epochs its checkpoint covers."""
    path = os.path.join(run_dir, "history.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [h for h in json.load(f) if keep(h)]


@contextlib.contextmanager
def worker_directory(run_dir: str, strategy: str):
    """Yields the directory this process writes its run files to: ``run_dir`` itself, except on a non-chief
    worker of a multi-worker run (TF_CONFIG), which writes to a temporary directory removed on exit.

    TensorFlow's convention (BUILD_NOTES "Synchronized BN and distribution strategies"): every worker runs the
    same code — it saves checkpoints, TensorBoard events and the epoch files, which keeps any collective op a
    save may run in step — but only the chief's land in the run directory, so workers that share a file
    system do not overwrite each other's files."""
    from hdas_tf.run.strategy import worker_task

    kind, index, chief = worker_task() if strategy == "multi_worker" else ("", 0, True)
    if chief:
        yield run_dir
        return
    temp = tempfile.mkdtemp(prefix=f"hdas_tf_{kind}{index}_")
    logging.info("%s %d is not the chief: its run files go to %s (removed at the end); the chief writes %s",
                 kind, index, temp, run_dir)
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)

"""Atomic file writes: a reader, or a run resumed after a crash, never sees a half-written file.

Every write goes to a temporary file in the target's own folder (so the rename stays on one file system), then
``os.replace`` puts it in place. Standard library and NumPy only, so every package of hdas_tf may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yields a temporary path beside ``path``; on success it replaces ``path``, on any error it is removed.

    The file is made world-readable (mkstemp creates 0600) since run artefacts are ordinary shared files.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` (UTF-8) and flushes it to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, obj) -> None:
    """Writes ``obj`` as indented JSON with sorted keys and a final newline."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npz_atomic(path, arrays: dict) -> None:
    """Writes ``arrays`` as an uncompressed ``.npz`` (NumPy appends .npz to names without it, hence the suffix)."""
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)

"""The same configurations in plain PyTorch (``torch_reference/darts_torch.py``), timed on the same host right
before their rows, because the fixed reference figures come from one unnamed host and hosts differ by up to 3×
(BUILD_NOTES "Benchmark method")."""

from __future__ import annotations

import json
import os
import subprocess
import time

from benchmarks.rows import GENOTYPE_FILE, QUICK_STEPS, QUICK_WARMUP, StandardRow, flag_value

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference", "darts_torch.py")


def pytorch_command(row: StandardRow, python: str, genotype_file: str, passed: list[str], quick: bool) -> list[str]:
    """The command that times ``row``'s configuration in plain PyTorch: ``TORCH_SCRIPT`` under ``python``
    with the row's PyTorch arguments and the same timed and warm-up step counts as the row."""
    counts = [f"--steps={QUICK_STEPS}", f"--warmup={QUICK_WARMUP}"] if quick else []
    counts += [a for a in passed if a.startswith(("--steps=", "--warmup="))]
    return [python, TORCH_SCRIPT, *(a.replace(GENOTYPE_FILE, genotype_file) for a in row.pytorch), *counts]


def run_pytorch(command: list[str]) -> dict:
    """Runs one PyTorch timing process; its JSON result with ``command`` and ``process_wall_s``, or
    ``{"command", "error"}`` when it failed (the row's own measurement goes on)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:  # the interpreter is missing or not executable
        return {"command": command[1:], "error": str(e)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        return {"command": command[1:], "error": f"exit status {proc.returncode}: {tail}"}
    return {**json.loads(lines[-1]), "command": command[1:], "process_wall_s": time.perf_counter() - t0}


def genotype_files(rows: list[StandardRow], directory: str) -> dict[str, str]:
    """A JSON file per ``--genotype`` the rows' PyTorch commands read (the PyTorch script reads files only)."""
    from hdas_tf.space import registry

    files = {}
    for row in rows:
        name = flag_value(row, "genotype")
        if any(GENOTYPE_FILE in a for a in row.pytorch) and name not in files:
            files[name] = os.path.join(directory, f"genotype_{len(files)}.json")
            with open(files[name], "w") as f:
                f.write(registry.resolve(name).to_json())
    return files


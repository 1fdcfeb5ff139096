"""A standard run: each row in its own ``python -m hdas_tf.benchmark`` process (peak RSS is per process), paired
with its PyTorch run when asked, into ``results.json`` and the ``README.md`` rendered from it."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import pytorch_pairing
from benchmarks.render import render_readme
from benchmarks.rows import QUICK_STEPS, QUICK_WARMUP, ROWS_BY_NAME, STANDARD_ROWS, StandardRow, flag_value
from hdas_tf.files import write_json_atomic, write_text_atomic
from hdas_tf.timing.host import machine_facts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def row_command(row: StandardRow, passed: list[str], quick: bool) -> list[str]:
    """The subprocess command line of a standard row: its flags, then ``passed`` (which win), ``--json``."""
    quick_args = [f"--steps={QUICK_STEPS}", f"--warmup={QUICK_WARMUP}"] if quick else []
    return [sys.executable, "-m", "hdas_tf.benchmark", *row.args, *quick_args, *passed, "--json"]


def run_row(row: StandardRow, passed: list[str], quick: bool) -> dict:
    """Runs one standard row in a fresh subprocess; returns its result dict (``error`` set if it failed)."""
    command = row_command(row, passed, quick)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    base = {"row": row.name, "description": row.description, "command": command[1:], "process_wall_s": wall,
            "reference": None if row.reference is None else dataclasses.asdict(row.reference)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        return {**base, "error": f"exit status {proc.returncode}: {tail}", "batch": flag_value(row, "batch")}
    return {**base, **json.loads(lines[-1])}


def run_standard(names: list[str] | None, out_dir: str, passed: list[str], quick: bool = False,
                 pytorch_python: str | None = None) -> list[dict]:
    """Runs standard rows (all, or ``names``) one after another, each in its own process, rewriting
    ``out_dir/results.json`` and ``out_dir/README.md`` after every row. A subset merges into an existing
    ``results.json`` (rows not rerun are kept). Returns the rows' results in standard order.

    With ``pytorch_python`` (an interpreter with torch installed), each row that has a PyTorch counterpart is
    timed in PyTorch as well, in its own process right before the row, so that the pair sees the same host
    state; the result is the row's ``pytorch`` entry. Rows with the same PyTorch configuration (with and
    without ``--recompute``) share one PyTorch run.
    """
    rows = [ROWS_BY_NAME[n] for n in names] if names else list(STANDARD_ROWS)
    path = os.path.join(out_dir, "results.json")
    kept = {}
    if names and os.path.exists(path):
        with open(path) as f:
            kept = {r["row"]: r for r in json.load(f).get("results", [])}
    machine = machine_facts()
    with tempfile.TemporaryDirectory() as scratch:
        genotype_files = pytorch_pairing.genotype_files(rows, scratch) if pytorch_python else {}
        torch_runs = {}
        for i, row in enumerate(rows, 1):
            torch_result = None
            if pytorch_python and row.pytorch:
                command = pytorch_pairing.pytorch_command(row, pytorch_python,
                                                          genotype_files.get(flag_value(row, "genotype"), ""), passed,
                                                          quick)
                if tuple(row.pytorch) not in torch_runs:
                    print(f"[{i}/{len(rows)}] {row.name}: PyTorch {' '.join(row.pytorch)} ...", file=sys.stderr,
                          flush=True)
                    torch_runs[tuple(row.pytorch)] = pytorch_pairing.run_pytorch(command)
                torch_result = torch_runs[tuple(row.pytorch)]
                print(f"[{i}/{len(rows)}] {row.name}: PyTorch "
                      + (f"FAILED: {torch_result['error']}" if "error" in torch_result else
                         f"{torch_result['step_s_median']:.3f} s/step, peak RSS "
                         f"{torch_result['peak_rss_mib'] / 1024:.2f} GiB"), file=sys.stderr, flush=True)
            kept[row.name] = _one_row(i, len(rows), row, passed, quick, torch_result)
            _write_run(out_dir, path, machine, quick, [kept[r.name] for r in STANDARD_ROWS if r.name in kept])
    return [kept[r.name] for r in rows]


def _one_row(i: int, n: int, row: StandardRow, passed: list[str], quick: bool, torch_result: dict | None) -> dict:
    """Runs one row of a standard run (with its PyTorch result attached, if any) and reports it on stderr."""
    print(f"[{i}/{n}] {row.name}: {row.description} ...", file=sys.stderr, flush=True)
    result = run_row(row, passed, quick)
    if torch_result is not None:
        result["pytorch"] = torch_result
    if "error" in result:
        print(f"[{i}/{n}] {row.name} FAILED: {result['error']}", file=sys.stderr, flush=True)
    else:
        print(f"[{i}/{n}] {row.name}: {result['step_s_median']:.3f} s/step, {result['img_per_s']:.2f} img/s, peak "
              f"RSS {result['peak_rss_step_mib'] / 1024:.2f} GiB, first step {result['first_step_s']:.1f} s (process "
              f"{result['process_wall_s']:.0f} s)", file=sys.stderr, flush=True)
    return result


def _write_run(out_dir: str, path: str, machine: dict, quick: bool, ordered: list[dict]) -> None:
    """results.json and README.md of the run so far (rewritten after every row: a stopped run keeps its rows)."""
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(path, {"format": "hdas_tf.benchmark/1", "date": date, "machine": machine, "quick": quick,
                             "results": ordered})
    write_text_atomic(os.path.join(out_dir, "README.md"), render_readme(ordered, machine))

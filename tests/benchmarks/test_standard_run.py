"""A standard run: the tables built from result dicts, results.json and README.md, the PyTorch pairing, and the
flags of ``python -m benchmarks.standard``."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import pytorch_pairing, runner
from benchmarks.render import PYTORCH_HEADER, TABLE_HEADER, pytorch_table, render_readme, standard_table
from benchmarks.rows import QUICK_STEPS, QUICK_WARMUP, ROWS_BY_NAME, flag_value

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _standard_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "benchmarks.standard", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _error_line(stderr: str) -> str:
    """absl's message: the flag-parsing error line, else (UsageError, printed after the usage text) the last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("FATAL Flags parsing error")), lines[-1])


def _result(row, step, rss_mib, first, overhead=None, batch=None):
    r = {"row": row, "batch": batch or int(flag_value(ROWS_BY_NAME[row], "batch")), "order": 1,
         "steps": 10, "warmup": 3, "step_s_median": step, "first_step_s": first, "peak_rss_mib": rss_mib + 100.0,
         "peak_rss_step_mib": rss_mib, "code_version": "abc1234"}
    r["img_per_s"] = r["batch"] / step
    if overhead is not None:
        r["overhead_ratio"] = overhead
    return r


def test_standard_table_from_result_dicts():
    results = [{**_result("cell_o1_b16", 4.0, 2048.0, 61.0, overhead=1.5),
                "cpu_during_steps": {"steal": 0.123, "idle": 0.2, "busy": 0.677}},
               _result("inference_b1", 0.0125, 512.0, 7.5),
               {"row": "stage_o2_b64", "error": "exit status 1: boom", "batch": "64"}]
    results[1]["order"] = None
    lines = standard_table(results).splitlines()
    assert lines[0] == TABLE_HEADER and lines[1] == "|" + "---|" * 15
    # 16/4.0 = 4 img/s against the reference's 2.24: 1.79× faster; 2.00 GiB against 2.6: 0.77.
    assert lines[2] == ("| cell_o1_b16 | DARTS cell supernet C=16 L=8, first order | 16 | 1 | 4.00 | 4.00 | 2.00 | "
                        "61.0 | 1.50 | 7.14 | 2.24 | 2.6 | 1.79× | 0.77 | 12.3 |")
    assert lines[3] == ("| inference_b1 | DARTS_V2 evaluation network C=36 L=20, inference | 1 | — | 0.0125 | 80.0 | "
                        "0.50 | 7.50 | — | — | — | — | — | — | — |")
    assert lines[4].startswith("| stage_o2_b64 | H^s-DAS stage supernet (DARTS_V2 cells) C=16 L=20 (6-6-6), second "
                               "order | 64 | — | failed (see results.json) |")
    assert lines[4].endswith("| 31.5 | 2.03 | 9.6 | — | — | — |")
    assert len(lines) == 5 and all(line.count("|") == 16 for line in lines)


def test_readme_and_results_of_a_standard_run(tmp_path, monkeypatch):
    ran = []

    def fake_row(row, passed, quick):
        ran.append((row.name, tuple(passed), quick))
        return {**_result(row.name, 2.0, 1024.0, 30.0), "process_wall_s": 40.0, "description": row.description}

    monkeypatch.setattr(runner, "run_row", fake_row)
    runner.run_standard(["train_b32"], str(tmp_path), ["--grappler"], quick=True)
    runner.run_standard(["cell_o1_b16"], str(tmp_path), [], quick=False)  # merged, in standard order
    assert ran == [("train_b32", ("--grappler",), True), ("cell_o1_b16", (), False)]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["row"] for r in saved["results"]] == ["cell_o1_b16", "train_b32"]
    assert saved["machine"]["logical_cores"] >= 1 and saved["date"]
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Benchmarks") and TABLE_HEADER in readme
    assert "| train_b32 | DARTS_V2 evaluation network C=36 L=20 with aux, training step | 32 |" in readme
    assert "Timed steps after warm-up: 10 after 3" in readme


def test_readme_leaves_code_versions_and_dates_to_results_json():
    results = [{**_result("train_b32", 2.0, 1024.0, 30.0), "date": "2026-12-04T10:00:47+00:00"}]
    machine = {"cpu_model": "AMD EPYC", "logical_cores": 2, "memory_total_gib": 23.54, "tensorflow": "2.21.0",
               "keras": "3.15.1", "python": "3.11.7"}
    lines = render_readme(results, machine).splitlines()
    assert "Machine: AMD EPYC, 2 logical cores, 23.54 GiB; TensorFlow 2.21.0, Keras 3.15.1, Python 3.11.7." in lines
    assert "Timed steps after warm-up: 10 after 3." in lines
    assert not any("abc1234" in line or "2026" in line or "Code:" in line for line in lines)

def test_committed_benchmarks_readme_is_the_rendering_of_the_committed_results():
    # README.md is generated from results.json (or says nothing ran when there is none): never edited by hand.
    results_path = os.path.join(ROOT, "benchmarks", "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            run = json.load(f)
        expected = render_readme(run["results"], run["machine"])
        assert run["results"] and TABLE_HEADER in expected
    else:
        expected = render_readme([])
    with open(os.path.join(ROOT, "benchmarks", "README.md")) as f:
        assert f.read() == expected


def _fake_python(tmp_path, status=0):
    """An executable standing in for the PyTorch interpreter: it logs its arguments (and the genotype file it
    was handed) and prints the JSON line of darts_torch.py, or fails with ``status``."""
    log = tmp_path / "torch_calls.log"
    script = tmp_path / "fake_python"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
for a in "$@"; do case "$a" in --genotype=*) tr -d ' \\n' < "${{a#--genotype=}}" | head -c 40 >> {log}; echo >> {log};; esac; done
[ {status} -eq 0 ] || {{ echo "torch is not installed" >&2; exit {status}; }}
echo '{{"config": "x", "torch": "2.13.0+cpu", "threads": 2, "step_s_median": 8.0, "peak_rss_mib": 4096.0}}'
""")
    script.chmod(0o755)
    return str(script), log


def test_standard_run_times_each_row_in_pytorch_right_before_it(tmp_path, monkeypatch):
    order = []

    def fake_row(row, passed, quick):
        order.append(("hdas_tf", row.name))
        return {**_result(row.name, 2.0, 1024.0, 30.0), "process_wall_s": 40.0, "description": row.description}

    monkeypatch.setattr(runner, "run_row", fake_row)
    real_run_pytorch = pytorch_pairing.run_pytorch
    monkeypatch.setattr(pytorch_pairing, "run_pytorch", lambda command: order.append(("torch", command[2:])) or
                        real_run_pytorch(command))
    python, log = _fake_python(tmp_path)
    results = runner.run_standard(["cell_o1_b16", "cell_o1_b16_recompute", "train_b32", "input_b64"],
                                     str(tmp_path), ["--steps=4"], quick=True, pytorch_python=python)
    # PyTorch right before its row; the two batch-16 cell rows share one PyTorch run; no counterpart, no run.
    assert [o[0] for o in order] == ["torch", "hdas_tf", "hdas_tf", "torch", "hdas_tf", "hdas_tf"]
    assert order[0][1] == ["--config=cell_search", "--cells=shared", "--order=1", "--batch=16", "--steps=2",
                           "--warmup=1", "--steps=4"]  # the quick counts, then the passed ones (which win)
    train_args = order[3][1]
    assert train_args[0] == "--config=train" and train_args[1].startswith("--genotype=/")
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and calls[0].split()[0] == pytorch_pairing.TORCH_SCRIPT
    assert calls[2].startswith('{"format":"hdas_tf.genotype/1"')  # the DARTS_V2 file existed during the run
    assert not os.path.exists(train_args[1].split("=", 1)[1])  # and was removed after it
    by_row = {r["row"]: r for r in results}
    assert by_row["cell_o1_b16"]["pytorch"]["step_s_median"] == 8.0
    assert by_row["cell_o1_b16"]["pytorch"] == by_row["cell_o1_b16_recompute"]["pytorch"]
    assert "pytorch" not in by_row["input_b64"]
    readme = (tmp_path / "README.md").read_text()
    assert "## The same rows in PyTorch on this host" in readme and "torch 2.13.0+cpu, 2 threads" in readme
    # 8.0 s against 2.0 s: 4.00× (cell b16 goal 4×: met; training 2×: met); 1.00 GiB against 4.00 GiB: 0.25.
    assert "| cell_o1_b16 | 2.00 | 8.00 | 4.00× | ≥ 4× met | 1.00 | 4.00 | 0.25 | ≤ 0.5 met |" in readme
    assert "| train_b32 | 2.00 | 8.00 | 4.00× | ≥ 2× met | 1.00 | 4.00 | 0.25 | — |" in readme
    assert "| input_b64 | 2.00 |" not in readme.split("## The same rows")[1]


def test_pytorch_table_reports_failures_and_goals_not_met(tmp_path):
    python, _ = _fake_python(tmp_path, status=3)
    command = pytorch_pairing.pytorch_command(ROWS_BY_NAME["stage_o1_b16"], python, "/g.json", [], quick=False)
    assert command[:3] == [python, pytorch_pairing.TORCH_SCRIPT, "--config=stage_search"] and "--genotype=/g.json" in command
    failed = pytorch_pairing.run_pytorch(command)
    assert failed["error"].startswith("exit status 3: ") and failed["error"].endswith("torch is not installed")
    missing = pytorch_pairing.run_pytorch([str(tmp_path / "no_python"), pytorch_pairing.TORCH_SCRIPT])
    assert "error" in missing and "no_python" in missing["error"]
    results = [{**_result("stage_o1_b16", 2.0, 3072.0, 30.0), "pytorch": failed},
               {**_result("cell_o1_b64_keep", 10.0, 6144.0, 30.0),
                "pytorch": {"step_s_median": 25.0, "peak_rss_mib": 10240.0}},
               {"row": "train_b32", "error": "exit status 1: boom", "batch": "32",
                "pytorch": {"step_s_median": 3.0, "peak_rss_mib": 3000.0}}]
    lines = pytorch_table(results).splitlines()
    assert lines[0] == PYTORCH_HEADER and len(lines) == 5
    assert lines[2] == "| stage_o1_b16 | 2.00 | failed (see results.json) | — | ≥ 3× | 3.00 | — | — | — |"
    # 25 s against 10 s: 2.50× (goal 3×); 6 GiB against 10 GiB: 0.60 (goal 0.5).
    assert lines[3] == "| cell_o1_b64_keep | 10.0 | 25.0 | 2.50× | ≥ 3× NOT met | 6.00 | 10.00 | 0.60 | ≤ 0.5 NOT met |"
    assert lines[4] == "| train_b32 | failed | 3.00 | — | ≥ 2× | — | 2.93 | — | — |"


def test_pytorch_python_must_be_an_executable():
    proc = _standard_cli("--rows=input_b64", "--pytorch_python=/no/such/python")
    assert proc.returncode != 0 and _error_line(proc.stderr).startswith("--pytorch_python=/no/such/python: not an")


def test_standard_refuses_per_row_flags():
    proc = _standard_cli("--batch=8")
    assert proc.returncode != 0 and _error_line(proc.stderr).startswith("--batch: every standard row fixes")


@pytest.mark.slow  # ~20 s: two processes (the parent and one row) import TensorFlow
def test_standard_subset_runs_each_row_in_its_own_process(tmp_path):
    proc = _standard_cli("--rows=input_b64", "--quick", f"--out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "results.json").read_text())
    (r,) = saved["results"]
    assert r["row"] == "input_b64" and r["config"] == "input" and r["batch"] == 64 and saved["quick"] is True
    assert r["steps"] == QUICK_STEPS and r["warmup"] == QUICK_WARMUP
    assert "[1/1] input_b64:" in proc.stderr
    assert "| input_b64 | search input pipeline" in (tmp_path / "README.md").read_text()


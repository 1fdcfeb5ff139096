"""`python -m hdas_tf.benchmark`: prints one JSON object, bad flag values name the flag, and the standard set's
flags are not its own."""

import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "hdas_tf.benchmark", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def _error_line(stderr: str) -> str:
    """absl's message: the flag-parsing error line, else (UsageError, printed after the usage text) the last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("FATAL Flags parsing error")), lines[-1])


def test_cli_prints_exactly_one_json_object():
    proc = _cli("--config=inference", "--init_channels=2", "--layers=3", "--batch=2", "--steps=2", "--warmup=1",
                "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)  # the whole of stdout is one object: logs went to stderr
    assert r["config"] == "inference" and r["init_channels"] == 2 and r["layers"] == 3
    assert r["img_per_s"] == r["batch"] / r["step_s_median"] == 2 / statistics.median(r["step_s"])


@pytest.mark.slow
def test_cli_cell_search_of_the_issue():
    proc = _cli("--config=cell_search", "--init_channels=2", "--layers=3", "--batch=2", "--steps=2", "--warmup=1",
                "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert r["config"] == "cell_search" and r["cells"] == "shared" and r["layers"] == 3
    assert r["arch_params"] == 2 * 14 * 8  # normal + reduce α, 14 edges, 8 ops
    assert r["overhead_ratio"] == pytest.approx(
        r["overhead_step_s_median"] / (r["fwdbwd_val_s_median"] + r["fwdbwd_train_s_median"]), rel=1e-12)
    assert 0 < r["build_s"] <= r["first_step_s"] and r["peak_rss_mib"] > 0


@pytest.mark.parametrize("args, flag", [
    (["--batch=0"], "--batch"),
    (["--config=stage_search", "--stage_lengths=6,6"], "--stage_lengths"),
    (["--config=nope"], "--config"),
    (["--config=train", "--order=2"], "--order"),
    (["--recompute=maybe"], "--recompute"),
])
def test_bad_flag_values_exit_nonzero_naming_the_flag(args, flag):
    proc = _cli(*args)
    assert proc.returncode != 0 and "{" not in proc.stdout
    assert flag in _error_line(proc.stderr), proc.stderr[-600:]


def test_the_standard_set_flags_are_not_flags_of_one_configuration():
    # They belong to python -m benchmarks.standard (tests/benchmarks/test_standard_run.py).
    for flag in ("--pytorch_python=/usr/bin/env", "--standard", "--rows=input_b64", "--list_rows"):
        proc = _cli(flag)
        assert proc.returncode != 0 and "{" not in proc.stdout
        assert f"Unknown command line flag '{flag[2:].split('=')[0]}'" in _error_line(proc.stderr), proc.stderr[-600:]


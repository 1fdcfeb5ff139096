"""`python -m hdas_tf.benchmark`: tiny real configurations report consistent timings and sizes, the CLI prints
one JSON object, bad flag values name the flag, and the standard-set table is built from result dicts."""

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest

from hdas_tf import benchmarking as benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(steps=2, warmup=1, batch=2, init_channels=2)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "hdas_tf.benchmark", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def _error_line(stderr: str) -> str:
    """absl's message: the flag-parsing error line, else (UsageError, printed after the usage text) the last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("FATAL Flags parsing error")), lines[-1])


def _check_timings(r, spec):
    """The relations every result must satisfy."""
    assert r["config"] == spec.config and r["batch"] == spec.global_batch
    assert r["steps"] == spec.steps and r["warmup"] == spec.warmup
    assert len(r["step_s"]) == spec.steps and all(t > 0 for t in r["step_s"])
    assert r["step_s_median"] > 0 and r["step_s_median"] == statistics.median(r["step_s"])
    assert r["img_per_s"] == r["batch"] / r["step_s_median"]
    assert 0 < r["build_s"] <= r["first_step_s"]
    assert r["first_call_s"] > 0 and r["first_step_s"] >= r["first_call_s"]
    assert 0 < r["peak_rss_step_mib"] <= r["peak_rss_mib"]
    assert r["machine"]["logical_cores"] >= 1 and r["machine"]["tensorflow"].startswith("2.")
    assert r["kernels"] in ("custom", "native")
    json.dumps(r)  # JSON-ready as it is


def test_stage_search_reports_step_parts_and_overhead_ratio():
    from hdas_tf.space.search_space import SearchSpace

    spec = benchmark.BenchmarkSpec(config="stage_search", stage_lengths=(1, 1, 1), image_size=16, **TINY)
    r = benchmark.run_benchmark(spec)
    _check_timings(r, spec)
    assert r["order"] == 1 and r["stage_lengths"] == [1, 1, 1] and r["layers"] == 3 * 1 + 2
    assert r["search_config"]["search"] == "stage" and r["search_config"]["unrolled"] is False
    space = SearchSpace(stage="stage_specific", stage_lengths=(1, 1, 1), layers=5, init_channels=2)
    assert r["arch_params"] == space.num_arch_params() > 0
    assert r["weight_params"] > 0
    for part in ("arch", "weight", "fwdbwd_val", "fwdbwd_train"):
        assert len(r[f"{part}_s"]) == spec.steps
        assert r[f"{part}_s_median"] == statistics.median(r[f"{part}_s"]) > 0
        assert r[f"{part}_first_s"] > 0
    # The ratio's step is the one timed in rounds with the two passes, not the first block of steps.
    assert len(r["overhead_step_s"]) == spec.steps
    assert r["overhead_step_s_median"] == statistics.median(r["overhead_step_s"]) > 0
    assert r["overhead_ratio"] == pytest.approx(
        r["overhead_step_s_median"] / (r["fwdbwd_val_s_median"] + r["fwdbwd_train_s_median"]), rel=1e-12)
    assert all(np.isfinite(v) for v in r["last_step"].values())
    assert {"loss_w", "loss_a", "acc_w", "acc_a"} <= set(r["last_step"])


def test_train_step_of_an_evaluation_network():
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.nn.macs import count_params

    spec = benchmark.BenchmarkSpec(config="train", layers=3, **TINY)
    r = benchmark.run_benchmark(spec)
    _check_timings(r, spec)
    assert r["order"] is None and "overhead_ratio" not in r
    assert "arch_s_median" not in r and r["arch_params"] is None
    net = build_eval_network("DARTS_V2", 10, 2, 3, auxiliary=True, drop_path=True, input_shape=(32, 32, 3))
    assert r["params"] == count_params(net) and r["weight_params"] == count_params(net, include_aux=True)
    assert r["train_config"]["drop_path_rate"] == 0.2 and r["drop_path_rate"] == 0.2
    assert set(r["last_step"]) == {"loss", "loss_main", "loss_aux", "acc"}


def test_inference_and_input_pipeline():
    spec = benchmark.BenchmarkSpec(config="inference", layers=3, steps=2, warmup=1, batch=1, init_channels=2)
    r = benchmark.run_benchmark(spec)
    _check_timings(r, spec)
    assert r["batch"] == 1 and r["macs"] > 0
    with pytest.raises(benchmark.SpecError, match=r"--batch=3 must be divisible by the 2 replicas"):
        benchmark.run_benchmark(benchmark.BenchmarkSpec(config="inference", strategy="mirrored", batch=3))

    spec = benchmark.BenchmarkSpec(config="input", batch=4, steps=3, warmup=1)
    r = benchmark.run_benchmark(spec)
    _check_timings(r, spec)
    assert r["dataset"] == "digits" and r["image_shape"] == [32, 32, 3] and r["images_per_element"] == 8


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


@pytest.mark.slow
def test_second_order_distribution_search_and_two_replicas():
    spec = benchmark.BenchmarkSpec(config="distribution_search", max_cells=3, min_cells=2, order=2, skip_parts=True,
                                   image_size=16, **TINY)
    r = benchmark.run_benchmark(spec)
    _check_timings(r, spec)
    assert r["max_cells"] == 3 and r["layers"] == 3 * 3 + 2 and r["search_config"]["unrolled"] is True
    assert "overhead_ratio" not in r
    spec = benchmark.BenchmarkSpec(config="train", layers=3, strategy="mirrored", **TINY)
    r = benchmark.run_benchmark(spec)
    _check_timings(r, spec)
    assert r["replicas"] == 2


# === flags and errors (no model is built) ===


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


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_cells=5, max_cells=4), "--min_cells=5 must not exceed --max_cells=4"),
    (dict(config="train", genotype="NO_SUCH"), "--genotype: unknown genotype 'NO_SUCH'"),
    (dict(order=3), "--order=3"),
    (dict(warmup=-1), "--warmup=-1"),
    (dict(overrides=(("batch_size", "8"),)), "--config_override=batch_size=...: set it with --batch"),
    (dict(overrides=(("no_such_field", "1"),)), "SearchConfig has no field 'no_such_field'"),
    (dict(overrides=(("epochs", "many"),)), "--config_override=epochs=many: cannot parse as int"),
    (dict(config="input", overrides=(("epochs", "3"),)), "the input configuration has no model configuration"),
])
def test_spec_validation_names_the_flag(kwargs, message):
    with pytest.raises(ValueError) as e:
        benchmark.BenchmarkSpec(**kwargs)
    assert message in str(e.value)


def test_overrides_are_parsed_by_the_config_field_type():
    spec = benchmark.BenchmarkSpec(overrides=(("epochs", "7"), ("theta", "flops"), ("deterministic", "true"),
                                              ("max_steps", "none"), ("w_lr", "0.5")))
    cfg = benchmark.search_config(spec)
    assert (cfg.epochs, cfg.theta, cfg.deterministic, cfg.max_steps, cfg.w_lr) == (7, "flops", True, None, 0.5)
    tcfg = benchmark.train_config(benchmark.BenchmarkSpec(config="train", overrides=(("label_smoothing", "0.1"),)))
    assert tcfg.label_smoothing == 0.1 and tcfg.init_channels == 36 and tcfg.layers == 20 and tcfg.batch_size == 32
    cfg = benchmark.search_config(benchmark.BenchmarkSpec(config="stage_search", order=2, batch=16))
    assert cfg.stage_lengths == (6, 6, 6) and cfg.genotype == "DARTS_V2" and cfg.unrolled and cfg.batch_size == 16


def test_measure_times_only_the_steps_after_the_warmup():
    calls = []

    def fn(batch):
        calls.append(batch)
        return {"loss": np.float32(batch)}

    t = benchmark.measure(fn, iter(range(100)), steps=4, warmup=2)
    assert calls == list(range(7))  # one tracing call, 2 warm-up, 4 timed; one batch each
    assert len(t["step_s"]) == 4 and t["median_s"] == statistics.median(t["step_s"])
    assert t["last"] == {"loss": 6.0} and t["first_s"] > 0
    if benchmark.cpu_times() is not None:  # Linux: the CPU shares of the timed calls are recorded
        assert t["cpu"] is None or sum(t["cpu"].values()) == pytest.approx(1.0)


def test_measure_rounds_alternates_the_parts():
    calls = []

    def make(name):
        def fn(batch):
            calls.append((name, batch))
            return np.float32(batch)
        return fn

    t = benchmark.measure_rounds({"a": (make("a"), iter(range(100))), "b": (make("b"), iter(range(100, 200)))},
                                 steps=3, warmup=1)
    # One first round, one warm-up round, 3 timed rounds; a and b alternate, each with its own batches.
    assert calls == [c for i in range(5) for c in (("a", i), ("b", 100 + i))]
    for part in t.values():
        assert part["first_s"] > 0 and len(part["step_s"]) == 3
        assert part["median_s"] == statistics.median(part["step_s"])


def test_cpu_shares_from_proc_stat_lines(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 300 10 0 0 70 0 0\ncpu0 50 0 10 150 5 0 0 35 0 0\n")
    before = benchmark.cpu_times(str(stat))
    assert before == {"user": 100, "nice": 0, "system": 20, "idle": 300, "iowait": 10, "irq": 0, "softirq": 0,
                      "steal": 70}
    stat.write_text("cpu  400 0 50 350 10 0 0 170 0 0\n")
    # Δ: user 300, system 30, idle 50, steal 100 → 480 ticks: steal 100/480, idle 50/480, busy 330/480.
    shares = benchmark.cpu_shares(before, benchmark.cpu_times(str(stat)))
    assert shares == pytest.approx({"steal": 100 / 480, "idle": 50 / 480, "busy": 330 / 480})
    assert benchmark.cpu_shares(before, before) is None and benchmark.cpu_shares(None, before) is None
    stat.write_text("intr 1 2 3\n")
    assert benchmark.cpu_times(str(stat)) is None and benchmark.cpu_times(str(tmp_path / "missing")) is None


# === the standard set ===


def _result(row, step, rss_mib, first, overhead=None, batch=None):
    r = {"row": row, "batch": batch or int(benchmark._flag_value(benchmark.ROWS_BY_NAME[row], "batch")), "order": 1,
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
    lines = benchmark.standard_table(results).splitlines()
    assert lines[0] == benchmark.TABLE_HEADER and lines[1] == "|" + "---|" * 15
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

    monkeypatch.setattr(benchmark, "run_row", fake_row)
    benchmark.run_standard(["train_b32"], str(tmp_path), ["--grappler"], quick=True)
    benchmark.run_standard(["cell_o1_b16"], str(tmp_path), [], quick=False)  # merged, in standard order
    assert ran == [("train_b32", ("--grappler",), True), ("cell_o1_b16", (), False)]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["row"] for r in saved["results"]] == ["cell_o1_b16", "train_b32"]
    assert saved["machine"]["logical_cores"] >= 1 and saved["date"]
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Benchmarks") and benchmark.TABLE_HEADER in readme
    assert "| train_b32 | DARTS_V2 evaluation network C=36 L=20 with aux, training step | 32 |" in readme
    assert "Timed steps after warm-up: 10 after 3" in readme


def test_committed_benchmarks_readme_is_the_rendering_of_the_committed_results():
    # README.md is generated from results.json (or says nothing ran when there is none): never edited by hand.
    results_path = os.path.join(ROOT, "benchmarks", "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            run = json.load(f)
        expected = benchmark.render_readme(run["results"], run["machine"], run["date"])
        assert run["results"] and benchmark.TABLE_HEADER in expected
    else:
        expected = benchmark.render_readme([])
    with open(os.path.join(ROOT, "benchmarks", "README.md")) as f:
        assert f.read() == expected


def test_standard_rows_carry_the_reference_and_parse_as_specs():
    refs = [row for row in benchmark.STANDARD_ROWS if row.reference is not None]
    assert len(refs) == 14 and len(benchmark.STANDARD_ROWS) == 18
    for row in refs:  # the reference's images/s is its batch over its s/step
        batch = int(benchmark._flag_value(row, "batch"))
        assert row.reference.img_per_s == pytest.approx(batch / row.reference.step_s, rel=0.01)
    command = benchmark.row_command(benchmark.ROWS_BY_NAME["distribution_n6_o1_b64"], ["--steps=5"], quick=True)
    assert command[1:3] == ["-m", "hdas_tf.benchmark"] and command[-1] == "--json"
    assert "--max_cells=6" in command and command.index("--steps=2") < command.index("--steps=5")  # explicit wins


def test_standard_rows_name_their_pytorch_counterpart():
    """Every row with a reference is timed in PyTorch at the same configuration: kind, batch, order, α groups,
    and the candidate stage lengths of the distribution rows."""
    for row in benchmark.STANDARD_ROWS:
        if row.reference is None and not row.pytorch:
            continue
        assert row.pytorch, row.name
        ours = dict(a[2:].split("=", 1) for a in row.args if "=" in a)
        theirs = dict(a[2:].split("=", 1) for a in row.pytorch)
        assert theirs["config"] == ours["config"] and theirs["batch"] == ours["batch"], row.name
        for name in ("order", "cells", "max_cells", "min_cells"):
            if name in theirs or (name in ours and ours[name] != {"order": "1", "cells": "shared"}.get(name)):
                assert theirs.get(name) == ours.get(name), (row.name, name)
        if "genotype" in ours:
            assert theirs["genotype"] == benchmark.GENOTYPE_FILE and ours["genotype"] == "DARTS_V2"
    # The issue's goals, as data.
    goals = {row.name: (row.reference.speedup_goal, row.reference.memory_goal)
             for row in benchmark.STANDARD_ROWS if row.reference}
    assert goals["cell_o1_b16"] == (4.0, 0.5) and goals["cell_o1_b64_keep"] == (3.0, 0.5)
    assert goals["train_b32"] == (2.0, None) and goals["stage_o2_b64"] == (3.0, None)


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

    monkeypatch.setattr(benchmark, "run_row", fake_row)
    real_run_pytorch = benchmark.run_pytorch
    monkeypatch.setattr(benchmark, "run_pytorch", lambda command: order.append(("torch", command[2:])) or
                        real_run_pytorch(command))
    python, log = _fake_python(tmp_path)
    results = benchmark.run_standard(["cell_o1_b16", "cell_o1_b16_recompute", "train_b32", "input_b64"],
                                     str(tmp_path), ["--steps=4"], quick=True, pytorch_python=python)
    # PyTorch right before its row; the two batch-16 cell rows share one PyTorch run; no counterpart, no run.
    assert [o[0] for o in order] == ["torch", "hdas_tf", "hdas_tf", "torch", "hdas_tf", "hdas_tf"]
    assert order[0][1] == ["--config=cell_search", "--cells=shared", "--order=1", "--batch=16", "--steps=2",
                           "--warmup=1", "--steps=4"]  # the quick counts, then the passed ones (which win)
    train_args = order[3][1]
    assert train_args[0] == "--config=train" and train_args[1].startswith("--genotype=/")
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and calls[0].split()[0] == benchmark.TORCH_SCRIPT
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
    command = benchmark.pytorch_command(benchmark.ROWS_BY_NAME["stage_o1_b16"], python, "/g.json", [], quick=False)
    assert command[:3] == [python, benchmark.TORCH_SCRIPT, "--config=stage_search"] and "--genotype=/g.json" in command
    failed = benchmark.run_pytorch(command)
    assert failed["error"].startswith("exit status 3: ") and failed["error"].endswith("torch is not installed")
    missing = benchmark.run_pytorch([str(tmp_path / "no_python"), benchmark.TORCH_SCRIPT])
    assert "error" in missing and "no_python" in missing["error"]
    results = [{**_result("stage_o1_b16", 2.0, 3072.0, 30.0), "pytorch": failed},
               {**_result("cell_o1_b64_keep", 10.0, 6144.0, 30.0),
                "pytorch": {"step_s_median": 25.0, "peak_rss_mib": 10240.0}},
               {"row": "train_b32", "error": "exit status 1: boom", "batch": "32",
                "pytorch": {"step_s_median": 3.0, "peak_rss_mib": 3000.0}}]
    lines = benchmark.pytorch_table(results).splitlines()
    assert lines[0] == benchmark.PYTORCH_HEADER and len(lines) == 5
    assert lines[2] == "| stage_o1_b16 | 2.00 | failed (see results.json) | — | ≥ 3× | 3.00 | — | — | — |"
    # 25 s against 10 s: 2.50× (goal 3×); 6 GiB against 10 GiB: 0.60 (goal 0.5).
    assert lines[3] == "| cell_o1_b64_keep | 10.0 | 25.0 | 2.50× | ≥ 3× NOT met | 6.00 | 10.00 | 0.60 | ≤ 0.5 NOT met |"
    assert lines[4] == "| train_b32 | failed | 3.00 | — | ≥ 2× | — | 2.93 | — | — |"


def test_pytorch_python_must_be_an_executable_and_needs_standard():
    proc = _cli("--standard", "--rows=input_b64", "--pytorch_python=/no/such/python")
    assert proc.returncode != 0 and _error_line(proc.stderr).startswith("--pytorch_python=/no/such/python: not an")
    proc = _cli("--pytorch_python=/usr/bin/env")
    assert proc.returncode != 0 and "--pytorch_python only apply with --standard" in _error_line(proc.stderr)


def test_standard_refuses_per_row_flags():
    proc = _cli("--standard", "--batch=8")
    assert proc.returncode != 0 and _error_line(proc.stderr).startswith("--batch: every standard row fixes")


@pytest.mark.slow  # ~20 s: two processes (the parent and one row) import TensorFlow
def test_standard_subset_runs_each_row_in_its_own_process(tmp_path):
    proc = _cli("--standard", "--rows=input_b64", "--quick", f"--out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "results.json").read_text())
    (r,) = saved["results"]
    assert r["row"] == "input_b64" and r["config"] == "input" and r["batch"] == 64 and saved["quick"] is True
    assert r["steps"] == benchmark.QUICK_STEPS and r["warmup"] == benchmark.QUICK_WARMUP
    assert "[1/1] input_b64:" in proc.stderr
    assert "| input_b64 | search input pipeline" in (tmp_path / "README.md").read_text()


def test_code_version_ignores_the_benchmark_outputs_only(tmp_path, monkeypatch):
    """A standard run rewrites benchmarks/ after every row: that must not mark the code dirty, other edits must."""
    repo = tmp_path / "repo"
    (repo / "hdas_tf").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    shutil.copy(benchmark.__file__, repo / "hdas_tf" / "benchmarking.py")
    (repo / "benchmarks" / "results.json").write_text("{}\n")
    (repo / "README.md").write_text("x\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "init"], check=True)
    spec = importlib.util.spec_from_file_location("copied_benchmarking", repo / "hdas_tf" / "benchmarking.py")
    copied = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copied)  # its dataclasses look their module up there
    spec.loader.exec_module(copied)
    clean = copied.code_version()
    assert clean and not clean.endswith("-dirty")
    (repo / "benchmarks" / "results.json").write_text('{"results": []}\n')
    assert copied.code_version() == clean
    (repo / "README.md").write_text("y\n")
    assert copied.code_version() == clean + "-dirty"


def test_text_report_names_the_step_of_the_overhead_ratio():
    result = {"config": "stage_search", "batch": 16, "order": 1, "init_channels": 16, "layers": 20, "replicas": 1,
              "first_call_s": 15.0, "step_s_median": 0.8, "build_s": 2.0, "first_step_s": 17.0,
              "peak_rss_mib": 2048.0, "peak_rss_step_mib": 1024.0, "step_s": [0.8], "overhead_ratio": 0.6 / 0.7,
              "overhead_step_s_median": 0.6}
    for half, median in (("val", 0.3), ("train", 0.4)):
        result.update({f"fwdbwd_{half}_first_s": 5.0, f"fwdbwd_{half}_s_median": median})
    text = benchmark.format_report(result)
    assert "overhead ratio (step 0.6000 s / (fwd+bwd val + fwd+bwd train), timed in rounds): 0.86" in text
    del result["overhead_step_s_median"]  # a row of 8da2abf or older: the ratio divides s/step
    result["overhead_ratio"] = 0.8 / 0.7
    assert "overhead ratio (step 0.8000 s / (fwd+bwd val + fwd+bwd train)): 1.14" in benchmark.format_report(result)

"""The benchmark clock: which calls are timed, rounds of several parts, CPU shares from /proc/stat."""

import statistics

import numpy as np
import pytest

from hdas_tf.timing.measure import cpu_shares, cpu_times, measure, measure_rounds


def test_measure_times_only_the_steps_after_the_warmup():
    calls = []

    def fn(batch):
        calls.append(batch)
        return {"loss": np.float32(batch)}

    t = measure(fn, iter(range(100)), steps=4, warmup=2)
    assert calls == list(range(7))  # one tracing call, 2 warm-up, 4 timed; one batch each
    assert len(t["step_s"]) == 4 and t["median_s"] == statistics.median(t["step_s"])
    assert t["last"] == {"loss": 6.0} and t["first_s"] > 0
    if cpu_times() is not None:  # Linux: the CPU shares of the timed calls are recorded
        assert t["cpu"] is None or sum(t["cpu"].values()) == pytest.approx(1.0)


def test_measure_rounds_alternates_the_parts():
    calls = []

    def make(name):
        def fn(batch):
            calls.append((name, batch))
            return np.float32(batch)
        return fn

    t = measure_rounds({"a": (make("a"), iter(range(100))), "b": (make("b"), iter(range(100, 200)))},
                                 steps=3, warmup=1)
    # One first round, one warm-up round, 3 timed rounds; a and b alternate, each with its own batches.
    assert calls == [c for i in range(5) for c in (("a", i), ("b", 100 + i))]
    for part in t.values():
        assert part["first_s"] > 0 and len(part["step_s"]) == 3
        assert part["median_s"] == statistics.median(part["step_s"])


def test_cpu_shares_from_proc_stat_lines(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 300 10 0 0 70 0 0\ncpu0 50 0 10 150 5 0 0 35 0 0\n")
    before = cpu_times(str(stat))
    assert before == {"user": 100, "nice": 0, "system": 20, "idle": 300, "iowait": 10, "irq": 0, "softirq": 0,
                      "steal": 70}
    stat.write_text("cpu  400 0 50 350 10 0 0 170 0 0\n")
    # Δ: user 300, system 30, idle 50, steal 100 → 480 ticks: steal 100/480, idle 50/480, busy 330/480.
    shares = cpu_shares(before, cpu_times(str(stat)))
    assert shares == pytest.approx({"steal": 100 / 480, "idle": 50 / 480, "busy": 330 / 480})
    assert cpu_shares(before, before) is None and cpu_shares(None, before) is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(str(stat)) is None and cpu_times(str(tmp_path / "missing")) is None


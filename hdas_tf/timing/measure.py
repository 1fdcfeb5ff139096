"""The clock of a benchmark: calls timed one after another, each blocking on its result, and the machine's CPU
shares over the timed calls (/proc/stat)."""

from __future__ import annotations

import statistics
import time


def _block(out) -> dict | float:
    """Waits for a step's outputs by converting them to Python floats."""
    if isinstance(out, dict):
        return {k: float(v) for k, v in out.items()}
    return float(out)


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times(stat_path: str = "/proc/stat") -> dict | None:
    """The machine's cumulative CPU time by kind (clock ticks, all cores) from the ``cpu`` line of /proc/stat,
    or None where there is none (not Linux)."""
    try:
        with open(stat_path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 1 + len(CPU_FIELDS):
        return None
    return dict(zip(CPU_FIELDS, (int(v) for v in fields[1:1 + len(CPU_FIELDS)])))


def cpu_shares(before: dict | None, after: dict | None) -> dict | None:
    """Shares of the machine's CPU time between two ``cpu_times`` snapshots: ``steal`` (time the hypervisor
    ran other guests on our virtual CPUs: a contended host, the numbers are pessimistic), ``idle`` (cores
    this benchmark left unused) and ``busy`` (the rest: this process and anything else running)."""
    if before is None or after is None:
        return None
    delta = {k: after[k] - before[k] for k in CPU_FIELDS}
    total = sum(delta.values())
    if total <= 0:
        return None
    idle = (delta["idle"] + delta["iowait"]) / total
    return {"steal": delta["steal"] / total, "idle": idle, "busy": 1.0 - idle - delta["steal"] / total}


def measure(fn, batches, steps: int, warmup: int) -> dict:
    """Calls ``fn(next(batches))`` once (tracing), ``warmup`` more times, then ``steps`` timed times.

    Each call blocks on its result and its batch is fetched before the clock starts. Returns ``first_s``
    (the first call), ``first_end`` (``time.perf_counter()`` at its end), ``step_s`` (the timed calls),
    ``median_s``, ``last`` (the last call's outputs as floats) and ``cpu`` (``cpu_shares`` over the timed
    calls, None where /proc/stat is missing).
    """
    return measure_rounds({"fn": (fn, batches)}, steps, warmup)["fn"]


def measure_rounds(parts: dict, steps: int, warmup: int) -> dict:
    """:func:`measure` for several functions at once, in rounds: each round calls every ``fn(next(batches))``
    of ``parts`` (name → (fn, batches)) once, in order, so that a drift of the host over the minutes of a
    measurement weighs on all of them alike. One first round and ``warmup`` untimed rounds, then ``steps``
    timed rounds. Returns name → :func:`measure`'s fields (``cpu`` is over all timed rounds)."""
    out = {name: {"first_s": None, "first_end": None, "step_s": [], "last": None} for name in parts}
    ticks = None
    for i in range(1 + warmup + steps):
        for name, (fn, batches) in parts.items():
            batch = next(batches)
            if i == warmup + 1 and ticks is None:
                ticks = cpu_times()
            t0 = time.perf_counter()
            last = _block(fn(batch))
            t1 = time.perf_counter()
            part = out[name]
            part["last"] = last
            if i == 0:
                part["first_s"], part["first_end"] = t1 - t0, t1
            elif i > warmup:
                part["step_s"].append(t1 - t0)
    cpu = cpu_shares(ticks, cpu_times())
    for part in out.values():
        part.update(median_s=statistics.median(part["step_s"]), cpu=cpu)
    return out

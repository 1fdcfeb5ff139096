"""The markdown of a standard run: its table against the reference figures, the same-host PyTorch comparison,
and ``benchmarks/README.md`` around them."""

from __future__ import annotations

import math

from benchmarks.rows import ROWS_BY_NAME, flag_value


def _sig(value, digits: int = 3) -> str:
    """``digits`` significant figures, never in exponent notation."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


TABLE_HEADER = ("| row | configuration | batch | order | s/step | img/s | peak RSS GiB | first step s | overhead | "
                "ref s/step | ref img/s | ref RSS GiB | speed-up | memory ratio | steal % |")


def standard_table(results: list[dict]) -> str:
    """The markdown table of a standard run: one line per result dict (``row`` names its ``STANDARD_ROWS``
    entry, whose reference is looked up; a dict with ``error`` is a failed row).

    Peak RSS is ``peak_rss_step_mib`` (the process's peak after the timed steps, before the part measurements),
    the number comparable with the reference's run of search steps. speed-up = img/s ÷ reference img/s;
    memory ratio = peak RSS ÷ reference peak RSS.
    """
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for r in results:
        row = ROWS_BY_NAME.get(r.get("row"))
        description = row.description if row else r.get("description", r.get("config", "?"))
        ref = row.reference if row else None
        batch = r.get("batch") or flag_value(row, "batch")
        if "error" in r:
            cells = [r.get("row", "?"), description, batch, "—", "failed (see results.json)"] + ["—"] * 4
            ours_img = ours_gib = None
        else:
            ours_img = r["img_per_s"]
            ours_gib = r.get("peak_rss_step_mib", r["peak_rss_mib"]) / 1024
            cells = [r.get("row", "—"), description, r["batch"], r.get("order") or "—", _sig(r["step_s_median"]),
                     _sig(ours_img), f"{ours_gib:.2f}", _sig(r["first_step_s"]), _sig(r.get("overhead_ratio"))]
        if ref is None:
            cells += ["—"] * 5
        else:
            cells += [_sig(ref.step_s), _sig(ref.img_per_s), f"{ref.peak_rss_gib:.1f}",
                      "—" if ours_img is None else f"{ours_img / ref.img_per_s:.2f}×",
                      "—" if ours_gib is None else f"{ours_gib / ref.peak_rss_gib:.2f}"]
        cpu = r.get("cpu_during_steps")
        cells.append("—" if not cpu else f"{100 * cpu['steal']:.1f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


PYTORCH_HEADER = ("| row | s/step | PyTorch s/step | speed-up | speed goal | peak RSS GiB | PyTorch peak RSS GiB | "
                  "memory ratio | memory goal |")

PYTORCH_INTRO = """## The same rows in PyTorch on this host

The PyTorch reference figures above come from one unnamed host, and the hosts this project has run on differ
by up to 3× in either library's step times (BUILD_NOTES "Benchmark method"). Here each row's configuration was also
timed in plain PyTorch (`benchmarks/torch_reference/darts_torch.py`, torch {torch}, {threads} threads, the
same step counts), in its own process right before the row, so that both see the same host. speed-up =
PyTorch s/step ÷ hdas_tf s/step (the batches are equal, so it is the img/s ratio); memory ratio = hdas_tf peak
RSS ÷ PyTorch peak RSS. The goals are the issue's, applied to the PyTorch run of this host.
"""


def _goal(value: float | None, goal: float | None, at_least: bool, unit: str = "") -> str:
    if goal is None:
        return "—"
    bound = f"{'≥' if at_least else '≤'} {goal:g}{unit}"
    if value is None:
        return bound
    met = value >= goal if at_least else value <= goal
    return f"{bound} {'met' if met else 'NOT met'}"


def pytorch_table(results: list[dict]) -> str:
    """The same-host comparison of a standard run: one line per result that carries a ``pytorch`` entry."""
    lines = [PYTORCH_HEADER, "|" + "---|" * (PYTORCH_HEADER.count("|") - 1)]
    for r in results:
        torch_r = r.get("pytorch")
        if torch_r is None:
            continue
        row = ROWS_BY_NAME.get(r.get("row"))
        ref = row.reference if row else None
        ours_ok, torch_ok = "error" not in r, "error" not in torch_r
        ours_gib = r.get("peak_rss_step_mib", r.get("peak_rss_mib", 0)) / 1024 if ours_ok else None
        torch_gib = torch_r["peak_rss_mib"] / 1024 if torch_ok else None
        speedup = torch_r["step_s_median"] / r["step_s_median"] if ours_ok and torch_ok else None
        ratio = ours_gib / torch_gib if ours_ok and torch_ok else None
        cells = [r.get("row", "—"), _sig(r["step_s_median"]) if ours_ok else "failed",
                 _sig(torch_r["step_s_median"]) if torch_ok else "failed (see results.json)",
                 "—" if speedup is None else f"{speedup:.2f}×",
                 _goal(speedup, ref.speedup_goal if ref else None, True, "×"),
                 "—" if ours_gib is None else f"{ours_gib:.2f}", "—" if torch_gib is None else f"{torch_gib:.2f}",
                 "—" if ratio is None else f"{ratio:.2f}", _goal(ratio, ref.memory_goal if ref else None, False)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


README_INTRO = """# Benchmarks

Written by `bash scripts/benchmark.sh` (= `python -m benchmarks.standard --out_dir=benchmarks` from the
repository root); `results.json` beside it holds every row's full result (per-step times, part timings, model
sizes, machine, code version, date). Do not edit by hand: rerun the standard set (or `--rows=NAME,...` to redo
some rows, which merges them into the existing `results.json`).

Method (`hdas_tf/timing/`, the rows in `benchmarks/rows.py`; BUILD_NOTES "Benchmark method"): each row runs in its own
process (`python -m hdas_tf.benchmark`), one after another (peak RSS is per process). The real model and step
are built and fed seeded synthetic 32×32×3 batches with 10 classes. The first step (tracing, graph
optimisation, first run) is followed by warm-up steps, then the timed steps; every call blocks on its result.

- s/step: the median of the timed steps. img/s: the batch divided by that median (training images; the
  architecture half of a search batch is not counted).
- peak RSS: the process's peak resident memory right after the timed steps (before the part measurements).
- first step s: from the start of model construction to the end of the first step.
- overhead: search step ÷ (plain forward+backward of the supernet on the validation batch + the same on the
  training batch), medians of the three timed in rounds (step, validation pass, training pass) in the same
  process, so that the host's drift weighs on both sides (rows without `overhead_step_s_median` in
  `results.json` come from code that timed the passes after the step, and divide s/step).
- ref: the PyTorch reference on this kind of machine (2 cores, median of 10 steps after 3 warm-up).
  speed-up = img/s ÷ ref img/s (above 1 is faster); memory ratio = peak RSS ÷ ref peak RSS (below 1 is
  smaller).
- steal %: the share of the machine's CPU time the hypervisor gave to other guests during the timed steps
  (/proc/stat; "—" where it was not recorded). Above a few per cent the host was contended and the row's
  times are pessimistic. `benchmarks/LOG.md` says under what conditions the committed run was taken.
"""


def render_readme(results: list[dict], machine: dict | None = None) -> str:
    """``benchmarks/README.md``: the method, the machine and the table (or a note that nothing was run yet).

    The code version and date of each row stay in ``results.json``: the page shows what was measured.
    """
    parts = [README_INTRO]
    if not results:
        parts.append("No results yet: they are written here by a real run of the standard set on the machine it "
                     "describes.\n")
        return "\n".join(parts)
    if machine:
        parts.append(f"Machine: {machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores, "
                     f"{machine.get('memory_total_gib')} GiB; TensorFlow {machine.get('tensorflow')}, Keras "
                     f"{machine.get('keras')}, Python {machine.get('python')}.")
    done = [r for r in results if "error" not in r]
    counts = sorted({(r["steps"], r["warmup"]) for r in done})
    if counts:
        parts.append("Timed steps after warm-up: " + "; ".join(f"{s} after {w}" for s, w in counts) + ".")
    parts.append("\n" + standard_table(results) + "\n")
    timed = [r["pytorch"] for r in results if "error" not in r.get("pytorch", {"error": None})]
    if timed:
        parts.append(PYTORCH_INTRO.format(torch=timed[0].get("torch"), threads=timed[0].get("threads")))
        parts.append(pytorch_table(results) + "\n")
    return "\n".join(parts)

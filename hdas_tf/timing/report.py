"""One benchmark result as a readable table (what ``python -m hdas_tf.benchmark`` prints without ``--json``)."""

from __future__ import annotations


def format_report(result: dict) -> str:
    """A one-run result as a readable table (what the main prints without ``--json``)."""
    title = f"{result['config']}: batch {result['batch']}"
    if result.get("order"):
        title += f", order {result['order']}"
    if result.get("init_channels"):
        title += f", C={result['init_channels']}, L={result['layers']}"
    lines = [f"{title}, {result['replicas']} replica(s)",
             f"{'part':<22}{'first call s':>14}{'median s':>12}{'img/s':>10}"]

    def row(name, first, median):
        lines.append(f"{name:<22}{_num(first, 2):>14}{_num(median, 4):>12}{_num(result['batch'] / median, 2):>10}")

    row("step", result["first_call_s"], result["step_s_median"])
    for part, label in (("arch", "architecture step"), ("weight", "weight step"),
                        ("fwdbwd_val", "fwd+bwd (val batch)"), ("fwdbwd_train", "fwd+bwd (train batch)")):
        if f"{part}_s_median" in result:
            row(label, result[f"{part}_first_s"], result[f"{part}_s_median"])
    if result.get("overhead_ratio") is not None:
        rounds = "overhead_step_s_median" in result  # results from before the rounds divide s/step
        step = result["overhead_step_s_median"] if rounds else result["step_s_median"]
        lines.append(f"overhead ratio (step {step:.4f} s / (fwd+bwd val + fwd+bwd train)"
                     f"{', timed in rounds' if rounds else ''}): {result['overhead_ratio']:.2f}")
    lines.append(f"build {result['build_s']:.1f} s, first step {result['first_step_s']:.1f} s after the start of "
                 f"construction; peak RSS {result['peak_rss_mib'] / 1024:.2f} GiB (after the steps "
                 f"{result['peak_rss_step_mib'] / 1024:.2f} GiB)")
    if result.get("weight_params") is not None:
        lines.append(f"weights {result['weight_params']:,}"
                     + (f", architecture scalars {result['arch_params']:,}" if result.get("arch_params") else ""))
    lines.append("step times (s): " + ", ".join(f"{t:.4f}" for t in result["step_s"]))
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"

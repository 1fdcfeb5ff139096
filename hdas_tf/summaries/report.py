"""``report.md``: a one-page account of a search or training run, written into its run directory at the end
(BUILD_NOTES "TensorBoard and inspection").

It holds the phases and their wall time, steps, images/s, peak memory, the final genotype (drawings in
``RUN_DIR/report/`` and tables), its evaluation network's parameters and MACs, and the run's cost in
device-hours on the machine it ran on (wall time × devices in sync: GPUs, or the host CPU as one device).
"""

from __future__ import annotations

import os
import platform

from hdas_tf.files import atomic_path, write_text_atomic
from hdas_tf.space import genotypes as gt
from hdas_tf.summaries.logger import genotype_markdown

# The paper's evaluation networks (C, L) by kind, as ``hdas_tf.inspect`` reports them for the CIFAR layout.
EVAL_CHANNELS, EVAL_LAYERS = 36, 20


def machine() -> dict:
    """The devices of this process: GPU names (if any), the CPU model and its logical cores."""
    import tensorflow as tf

    from hdas_tf.run.runtime import cpu_model as read_cpu_model

    cpu = read_cpu_model()
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(details.get("device_name", device.name))
    return {"cpu": cpu or platform.processor() or "unknown CPU", "logical_cores": os.cpu_count(), "gpus": gpus}


def eval_network_sizes(genotype: gt.Genotype, num_classes: int, image_shape) -> dict:
    """Parameters (auxiliary head excluded) and MACs per image of ``genotype``'s CIFAR-layout evaluation
    network (C=36; L=20 for a chain, the DAGs' cells for a stage network), built from shapes only."""
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.nn.macs import count_macs, count_params

    chain = genotype.stages is None and genotype.stage_lengths is None
    net = build_eval_network(genotype, num_classes, EVAL_CHANNELS, EVAL_LAYERS if chain else None, "cifar",
                             auxiliary=True, drop_path=False)
    net.build((None, *image_shape))
    return {"params": count_params(net), "macs": count_macs(net, tuple(image_shape)),
            "network": f"{type(net).__name__}, C={EVAL_CHANNELS}" + (f", L={EVAL_LAYERS}" if chain else ""),
            "image_shape": list(image_shape), "num_classes": int(num_classes)}


def _seconds(s) -> str:
    if s is None:
        return "–"
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def _number(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _cost_lines(wall_s: float, replicas: int, host: dict) -> list[str]:
    devices = max(int(replicas or 1), 1)
    hours = wall_s / 3600.0 * devices
    if host["gpus"]:
        kind = ", ".join(host["gpus"][:devices])
        lines = [f"- **{hours:.3f} GPU-hours** ({hours / 24:.4f} GPU-days): {_seconds(wall_s)} × {devices} GPU(s) "
                 f"({kind})"]
    else:
        lines = [f"- **{hours:.3f} device-hours**: {_seconds(wall_s)} × {devices} device(s), no GPU: the host CPU "
                 f"{host['cpu']} ({host['logical_cores']} logical cores)"]
    return lines


def _genotype_section(run_dir: str, genotype: gt.Genotype, engine: str) -> list[str]:
    from hdas_tf.summaries.drawing import genotype_pngs

    lines = ["## Final genotype", ""]
    folder = os.path.join(run_dir, "report")
    os.makedirs(folder, exist_ok=True)
    for key, png in genotype_pngs(genotype, engine).items():
        path = os.path.join(folder, f"{key}.png")
        with atomic_path(path, suffix=".png") as tmp:
            with open(tmp, "wb") as f:
                f.write(png)
        lines.append(f"![{key}](report/{key}.png)")
    lines += ["", genotype_markdown(genotype)]
    return lines


def _sizes_lines(sizes: dict | None) -> list[str]:
    if not sizes:
        return []
    lines = ["## Evaluation network", "", f"- network: {sizes.get('network', '–')}"]
    if "image_shape" in sizes:
        lines.append(f"- input {'×'.join(str(d) for d in sizes['image_shape'])}, {sizes['num_classes']} classes")
    lines.append(f"- parameters: {sizes['params']:,} ({sizes['params'] / 1e6:.2f} M, auxiliary head excluded)")
    if "params_with_aux" in sizes:
        lines.append(f"- parameters with the auxiliary head: {sizes['params_with_aux']:,}")
    lines.append(f"- MACs per image: {sizes['macs']:,} ({sizes['macs'] / 1e6:.1f} M)")
    return lines + [""]


def search_report(run_dir: str, run: dict, genotype: gt.Genotype, sizes: dict | None, engine: str = "auto") -> str:
    """Writes ``RUN_DIR/report.md`` of a search from its ``run.json`` dict; returns the path."""
    cfg, search = run.get("config", {}), run["phases"]["search"]
    title = f"{cfg.get('search', '?')} search" + (f", {cfg.get('cells')} cells" if cfg.get("search") == "cell" else "")
    lines = [f"# Search report: {os.path.basename(os.path.abspath(run_dir))}", "",
             f"{title} on {cfg.get('dataset', '?')}; strategy {run.get('strategy')}, {run.get('replicas')} replica(s).",
             "", "## Run", "", "| phase | wall time |", "|---|---|",
             f"| set-up (data, run directory) | {_seconds(run['phases'].get('setup_s'))} |",
             f"| build (supernet, optimizers) | {_seconds(run['phases'].get('build_s'))} |",
             f"| search loop (this process) | {_seconds(search.get('wall_s'))} |",
             f"| total | {_seconds(run.get('wall_s'))} |", "",
             f"- steps: {run.get('steps')} ({search.get('steps_this_run')} in this process), "
             f"epochs: {search.get('epochs')}",
             f"- images/s (training images, the first step excluded): {_number(run.get('images_per_s'))}",
             f"- time to the first step: {_seconds(run.get('first_step_s'))}",
             f"- peak memory (resident): {_number(run.get('peak_rss_mib'))} MiB",
             f"- supernet: {run.get('weight_params', 0):,} weights, {run.get('arch_params', 0):,} architecture scalars"]
    if run.get("stopped_early"):
        lines.append(f"- stopped early: {run['stopped_early']}")
    lines += ["", "## Search cost", ""] + _cost_lines(run.get("wall_s", 0.0), run.get("replicas", 1), machine())
    lines += [""] + _genotype_section(run_dir, genotype, engine) + [""] + _sizes_lines(sizes)
    path = os.path.join(run_dir, "report.md")
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path


def train_report(run_dir: str, summary: dict, genotype: gt.Genotype, metrics: dict | None,
                 engine: str = "auto") -> str:
    """Writes ``RUN_DIR/report.md`` of a training run from its ``run.json`` dict and ``metrics.json``."""
    cfg = summary.get("config", {})
    lines = [f"# Training report: {os.path.basename(os.path.abspath(run_dir))}", "",
             f"{genotype.name or 'genotype'} as a {summary.get('network')} on {cfg.get('dataset', '?')}; strategy "
             f"{summary.get('strategy')}, {summary.get('replicas')} replica(s).", "", "## Run", "",
             "| phase | wall time |", "|---|---|",
             f"| set-up (data, run directory) | {_seconds(summary.get('setup_s'))} |",
             f"| build (network, optimizer) | {_seconds(summary.get('build_s'))} |",
             f"| training steps | {_seconds(summary.get('train_s'))} |",
             f"| evaluation | {_seconds(summary.get('eval_s'))} |",
             f"| total | {_seconds(summary.get('wall_s'))} |", "",
             f"- steps: {summary.get('steps')} ({summary.get('steps_per_epoch')} per epoch), epochs: "
             f"{summary.get('epochs')} ({summary.get('epochs_this_run')} in this process)",
             f"- images/s (training images, the first step excluded): {_number(summary.get('images_per_s'))}",
             f"- time to the first step: {_seconds(summary.get('first_step_s'))}",
             f"- peak memory (resident): {_number(summary.get('peak_rss_mib'))} MiB"]
    if metrics:
        final, best = metrics["final"], metrics["best"]
        lines += [f"- {metrics['split']} accuracy after the last epoch: {final['accuracy']:.4f} "
                  f"(best {best['accuracy']:.4f} at epoch {best['epoch']}), {metrics['eval_examples']} examples"]
    lines += ["", "## Training cost", ""] + _cost_lines(summary.get("wall_s", 0.0), summary.get("replicas", 1),
                                                       machine())
    sizes = {"network": summary.get("network"), "params": summary["params"],
             "params_with_aux": summary.get("params_with_aux"), "macs": summary["macs"]}
    lines += [""] + _genotype_section(run_dir, genotype, engine) + [""] + _sizes_lines(sizes)
    path = os.path.join(run_dir, "report.md")
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path

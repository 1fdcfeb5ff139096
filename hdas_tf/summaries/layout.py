"""The Custom Scalars layout of a search (TensorBoard's ``custom_scalars`` plugin; BUILD_NOTES "TensorBoard
and inspection"): one multi-line chart per edge (a line per op) grouped by cell group or stage, one chart
per stage for β (a line per candidate length), and charts of the losses and the diagnostics.

The lines are ordinary scalars whose tags start with ``ALPHA_PREFIX`` / ``BETA_PREFIX``. Those prefixes sort
after every other scalar group, and TensorBoard's Scalars dashboard opens only its first three groups, so the
hundreds of one-line charts stay folded there.
"""

from __future__ import annotations

import re

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata

from hdas_tf.summaries.figures import cell_edge_labels, stage_edge_labels

ALPHA_PREFIX = "zz_alpha"
BETA_PREFIX = "zz_beta"
DIAGNOSTICS = ("alpha_entropy", "skip_connections", "changed_edges", "expected_depth", "dead_cells",
               "hessian_eigenvalue")


def alpha_tag(group: str, edge: int, op: str) -> str:
    """Scalar tag of softmax(α)[edge, op] of α group ``group`` (short name: "normal", "stage2", …)."""
    return f"{ALPHA_PREFIX}/{group}/edge{edge}/{op}"


def beta_tag(stage: str, length: int) -> str:
    """Scalar tag of softmax(β)[n] of stage ``stage`` ("stage1", …) for candidate length n."""
    return f"{BETA_PREFIX}/{stage}/n={length}"


def short_name(name: str) -> str:
    """"alpha_normal" → "normal", "beta_stage2" → "stage2" (``SearchSpace.arch_shapes`` names)."""
    for prefix in ("alpha_", "beta_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def edge_labels(space, name: str) -> list[str]:
    """"node ← source" labels of the rows of α ``name`` of ``space``."""
    if not name.startswith("alpha_stage"):
        return cell_edge_labels(space.steps)
    s = name[len("alpha_stage"):]
    n = max(space.cells_per_stage) if not s else space.cells_per_stage[int(s) - 1]
    return stage_edge_labels(n, space.window)


def _chart(title: str, *patterns: str) -> layout_pb2.Chart:
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(patterns)))


def search_layout(space, hessian: bool = False) -> layout_pb2.Layout:
    """The layout of a search over ``space`` (a ``SearchSpace``); ``hessian``: the run logs the Hessian's
    dominant eigenvalue."""
    categories = []
    stage_search = space.stage != "chain"
    for name in (n for n in space.arch_shapes() if n.startswith("alpha_")):
        group = short_name(name)
        charts = [_chart(f"{group} edge {e}: {label}", "^" + re.escape(f"{ALPHA_PREFIX}/{group}/edge{e}/") + "[^/]+$")
                  for e, label in enumerate(edge_labels(space, name))]
        categories.append(layout_pb2.Category(title=f"α {group}: softmax per op, one chart per edge", chart=charts))
    if space.max_cells is not None:
        categories.append(layout_pb2.Category(title="β: softmax per candidate stage length", chart=[
            _chart(f"β {s}", "^" + re.escape(f"{BETA_PREFIX}/{s}/"))
            for s in (short_name(n) for n in space.arch_shapes() if n.startswith("beta_"))]))
    diag = ["alpha_entropy"] + (["expected_depth", "dead_cells"] if stage_search else ["skip_connections"])
    diag += ["changed_edges"] + (["hessian_eigenvalue"] if hessian else [])
    charts = [_chart(d, rf"^diagnostics/{d}/") for d in diag]
    charts += [_chart("losses (steps)", r"^step/loss_"), _chart("accuracies (steps)", r"^step/acc_")]
    categories.append(layout_pb2.Category(title="search diagnostics", chart=charts))
    return layout_pb2.Layout(category=categories)


def write_layout(writer, layout: layout_pb2.Layout) -> None:
    """Writes ``layout`` with ``writer`` (a ``tf.summary`` file writer) at step 0, as the plugin expects."""
    with writer.as_default():
        tf.summary.write(cs_metadata.CONFIG_SUMMARY_TAG, tf.constant(layout.SerializeToString()), step=0,
                         metadata=cs_metadata.create_summary_metadata().SerializeToString())

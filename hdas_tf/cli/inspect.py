"""`python -m hdas_tf.inspect`: sizes of evaluation networks (parameters, multiply-accumulates) and of
supernets (weight parameters, architecture scalars), and a genotype as DOT text.

What is inspected:

- ``--genotype`` (with optional ``--stage_genotype``, as for ``hdas_tf.train``): the evaluation network of
  that genotype in ``--layout`` — a chain network, or a stage network when the genotype carries stage DAGs.
  Reports ``params`` (trainable, auxiliary head excluded: the published figure), ``params_with_aux``,
  ``aux_params`` and ``macs`` (convolutions and dense layers per image, auxiliary head excluded).
- ``--supernet=cell`` (the default when no genotype is given): the cell supernet of a search, reporting
  ``params`` (weights) and ``arch_params`` (α scalars). A supernet searches the cells, so it takes no
  ``--genotype``. ``--stacnas=clusters`` (with ``--clusters``) or ``--stacnas=members --edge_clusters=FILE``
  reports StacNAS's stage-1 or stage-2 supernet, as ``hdas_tf.search`` would build it.
- ``--supernet=stage`` / ``--supernet=distribution`` with ``--genotype`` (the fixed cells): the H^s-DAS
  stage-DAG or cell-distribution supernet of ``hdas_tf.search --search=stage|distribution`` with the same
  flags (``--stage``, ``--stage_lengths``, ``--window``, ``--min_cells``, ``--max_cells``), reporting
  ``params`` and ``arch_params`` (α and β scalars).
- ``--dot`` (with ``--genotype``): the genotype's cells and stage DAGs as Graphviz DOT text instead of the
  counts (pipe into ``dot -Tpng -O``); with ``--json`` the counts gain a ``dot`` entry instead.
- ``--ri --searched=RUN --random=RUN1,RUN2,...``: the relative improvement of a searched architecture's
  training run over random ones' (``hdas_tf.train.relative_improvement``); no network is built.
- ``--draw=OUT.png|OUT.svg`` (with ``--genotype``): the genotype drawn into one file (``hdas_tf.summaries.drawing``).

Networks are built from shapes only (no forward pass): C=36, L=20 takes seconds.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from hdas_tf.cli.errors import run_main
from hdas_tf.errors import ConfigError, GenotypeError, UserError

FLAGS = flags.FLAGS

SUPERNETS = ("cell", "stage", "distribution")
flags.DEFINE_enum("supernet", None, [*SUPERNETS, "none"],
                  "cell: report the cell supernet of a search (the default without --genotype); stage / distribution: "
                  "the H^s-DAS stage-DAG / cell-distribution supernet on the cells of --genotype, as hdas_tf.search "
                  "--search=stage|distribution builds it; none: report the evaluation network of --genotype (the "
                  "default with it).")
flags.DEFINE_string("genotype", None, "Cells: a registry name (e.g. DARTS_V2) or a genotype file (which may also carry "
                    "stage DAGs); with --supernet=stage|distribution the supernet's fixed cells.")
flags.DEFINE_string("stage_genotype", None, "Stage DAGs (registry name such as HS_DAS_CIFAR, or a file) added to the "
                    "genotype's cells: the network is then a stage network.")
flags.DEFINE_enum("layout", "cifar", ["cifar", "imagenet"], "Evaluation network layout (BUILD_NOTES \"Evaluation networks and "
                  "training recipes\").")
flags.DEFINE_enum("cells", "shared", ["shared", "stage_specific"], "Cell α sharing of the cell supernet.")
flags.DEFINE_enum("stacnas", "off", ["off", "clusters", "members"], "Cell supernet of a StacNAS stage (see "
                  "hdas_tf.search --help): clusters = stage 1, members = stage 2 (needs --edge_clusters).")
flags.DEFINE_string("clusters", None, "StacNAS stage 1: a cluster-set file (default clusters otherwise).")
flags.DEFINE_string("edge_clusters", None, "StacNAS stage 2: the edge_clusters.json of a stage-1 run.")
# The stage-level flags of hdas_tf.search, with its defaults (--supernet=stage|distribution only).
flags.DEFINE_enum("stage", "stage_specific", ["shared", "stage_specific"],
                  "Stage α of a stage or distribution supernet: one DAG for all stages or one per stage.")
flags.DEFINE_list("stage_lengths", None, "Cells per stage of the stage supernet, e.g. 6,6,6 (default: the "
                  "--genotype file's stage_lengths, else 6,6,6).")
flags.DEFINE_integer("window", 3, "Sliding window m of stage-cell sources.", lower_bound=1)
flags.DEFINE_integer("min_cells", 4, "Shortest candidate stage length of the distribution supernet.", lower_bound=2)
flags.DEFINE_integer("max_cells", 8, "Cells per stage of the distribution supernet (N_max; L = 3·N_max + 2).",
                     lower_bound=2)
STAGE_FLAGS = ("stage", "stage_lengths", "window", "min_cells", "max_cells")
flags.DEFINE_integer("init_channels", None, "C. Defaults: supernet 16; chain network 36 (cifar) / 48 (imagenet); "
                     "stage network 36 (cifar) / 39 (imagenet).", lower_bound=1)
flags.DEFINE_integer("layers", None, "L, cells of a chain network or supernet. Defaults: supernet 8; chain network 20 "
                     "(cifar) / 14 (imagenet). Stage networks take their cells from the DAGs, stage supernets from "
                     "--stage_lengths / --max_cells (--layers, if given, must agree).", lower_bound=3)
flags.DEFINE_integer("num_classes", None, "Classes. Defaults: 10 (cifar layout, supernet), 1000 (imagenet).",
                     lower_bound=2)
flags.DEFINE_integer("image_size", None, "Input height and width. Defaults: 32 (cifar, supernet), 224 (imagenet).",
                     lower_bound=8)
flags.DEFINE_boolean("pool_bn", True, "BN after pooling ops (the H-DAS reference; false = the DARTS evaluation "
                     "network). Affine (γ, β per channel) in evaluation networks and in the fixed cells of stage "
                     "supernets; non-affine in mixed ops.")
flags.DEFINE_boolean("dot", False, "Print the genotype's cells and stage DAGs as DOT text (with --json: a 'dot' "
                     "entry).")
flags.DEFINE_boolean("json", False, "Print one JSON object.")
# RI of a searched architecture over random ones (H-DAS ablation; hdas_tf.train.relative_improvement).
flags.DEFINE_boolean("ri", False, "Print RI = 100 × (Acc_m − Acc_r) / Acc_r of training run --searched over the "
                     "mean of training runs --random (each a run directory or its metrics.json), instead of a network.")
flags.DEFINE_string("searched", None, "--ri: the searched architecture's training run.")
flags.DEFINE_list("random", None, "--ri: the random architectures' training runs, comma-separated.")
flags.DEFINE_enum("ri_accuracy", "final", ["final", "best"], "--ri: compare the last epoch's accuracy (the number "
                  "to report) or the best epoch's.")
flags.DEFINE_string("draw", None, "Draw the genotype's cells and stage DAGs into this .png or .svg file "
                    "(Graphviz when its 'dot' program is on the PATH, matplotlib otherwise) instead of "
                    "reporting sizes.")

# The reference recipes (BUILD_NOTES "Evaluation networks and training recipes"): (init_channels, layers) per network kind and layout.
NETWORK_DEFAULTS = {("chain", "cifar"): (36, 20), ("chain", "imagenet"): (48, 14),
                    ("stage", "cifar"): (36, None), ("stage", "imagenet"): (39, None)}
LAYOUT_DEFAULTS = {"cifar": dict(num_classes=10, image_size=32), "imagenet": dict(num_classes=1000, image_size=224)}


def _built_supernet(cfg, num_classes: int, image_size: int):
    """(space, supernet) exactly as ``hdas_tf.search`` makes them for ``cfg`` (``search.job.search_space``,
    ``search.job.make_supernet``), built from shapes (no forward pass)."""
    from hdas_tf.search.job import make_supernet, search_space

    space = search_space(cfg, num_classes)
    net = make_supernet(cfg, space)
    net.build((None, image_size, image_size, 3))
    return space, net


def _sizes(space, net, log10_size) -> dict:
    """Weights, architecture scalars (the shapes the search model gives its α/β variables) and space size."""
    import numpy as np

    return {
        "params": int(sum(int(np.prod(v.shape)) for v in net.trainable_weights)),
        "arch_params": space.num_arch_params(),
        "arch_shapes": {k: list(v) for k, v in space.arch_shapes().items()},
        "log10_space_size": round(log10_size(space), 3),
    }


def supernet_report(cells: str, init_channels: int, layers: int, num_classes: int, image_size: int = 32,
                    stacnas: str = "off", clusters: str | None = None, edge_clusters: str | None = None,
                    pool_bn: bool = True) -> dict:
    """Weight parameters and architecture scalars of a cell supernet, built from shapes (no forward pass);
    the supernet is the one ``hdas_tf.search`` builds for the same flags."""
    from hdas_tf.search.config import SearchConfig
    from hdas_tf.space.search_space import log10_space_size

    try:
        cfg = SearchConfig(search="cell", cells=cells, layers=layers, init_channels=init_channels, stacnas=stacnas,
                           clusters=clusters, edge_clusters=edge_clusters, pool_bn=pool_bn)
    except ValueError as e:  # the config's own field checks: every one is about a given value
        raise ConfigError(str(e)) from None
    space, net = _built_supernet(cfg, num_classes, image_size)
    return {
        "supernet": "cell",
        "cells": cells,
        "stacnas": stacnas,
        "cell_ops": list(space.cell_ops),
        "init_channels": init_channels,
        "layers": layers,
        "num_classes": num_classes,
        **_sizes(space, net, log10_space_size),
    }


def stage_supernet_report(search: str, genotype: str, stage: str = "stage_specific", init_channels: int = 16,
                          stage_lengths=None, window: int = 3, min_cells: int = 4, max_cells: int = 8,
                          num_classes: int = 10, image_size: int = 32, pool_bn: bool = True,
                          layers: int | None = None) -> dict:
    """Weight parameters and architecture scalars (α per stage edge and stage op, β per candidate length) of
    the H^s-DAS stage-DAG (``search="stage"``) or cell-distribution (``"distribution"``) supernet on the cells
    of ``genotype``, exactly as ``hdas_tf.search --search=...`` builds it for the same flags.

    ``layers``, when given, must equal the cells the supernet has (3 stages + 2 reduction cells): the search
    takes them from the stage lengths (``max_cells`` for a distribution search), not from ``layers``.
    """
    from hdas_tf.search.config import SearchConfig
    from hdas_tf.space.search_space import log10_stage_level_size

    try:
        cfg = SearchConfig(search=search, genotype=genotype, stage=stage, init_channels=init_channels,
                           stage_lengths=None if stage_lengths is None else tuple(stage_lengths), window=window,
                           min_cells=min_cells, max_cells=max_cells, pool_bn=pool_bn)
    except ValueError as e:  # the config's own field checks: every one is about a given value
        raise ConfigError(str(e)) from None
    try:
        space, net = _built_supernet(cfg, num_classes, image_size)
    except GenotypeError:
        raise
    except ValueError as e:  # the search space's checks of the given lengths, window and candidate range
        raise ConfigError(str(e)) from None
    lengths = [stage_layer.n_cells for stage_layer in net.stages]
    cells = sum(lengths) + len(net.reductions)
    if layers is not None and layers != cells:
        source = f"--max_cells={max_cells}" if search == "distribution" else "--stage_lengths (or the genotype's)"
        raise ConfigError(f"--layers={layers} does not match the {search} supernet: {'+'.join(map(str, lengths))} "
                         f"stage cells + {len(net.reductions)} reduction cells = {cells}; its cells come from "
                         f"{source}, not from --layers: drop --layers or set it to {cells}")
    report = {
        "supernet": search,
        "genotype": net.cell_genotype.name,
        "stage": stage,
        "init_channels": init_channels,
        "stage_lengths": lengths,
        "window": window,
        "layers": cells,
        "num_classes": num_classes,
        "pool_bn": bool(pool_bn),
        "stage_ops": list(space.stage_ops),
        **_sizes(space, net, log10_stage_level_size),  # the stage level only: the cells are fixed
    }
    if search == "distribution":
        report.update(min_cells=min_cells, max_cells=max_cells, candidate_lengths=list(space.candidate_lengths))
    return report


def network_report(genotype, stage_genotype=None, layout: str = "cifar", init_channels: int | None = None,
                   layers: int | None = None, num_classes: int | None = None, image_size: int | None = None,
                   pool_bn: bool = True) -> dict:
    """Parameters and MACs of a genotype's evaluation network, built from shapes (no forward pass).

    Arguments left None take the layout's reference values (``NETWORK_DEFAULTS``, ``LAYOUT_DEFAULTS``).
    """
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.nn.macs import count_macs, count_params
    from hdas_tf.train.model import combine_genotypes

    g = combine_genotypes(genotype, stage_genotype)
    kind = "chain" if g.stages is None and g.stage_lengths is None else "stage"
    default_c, default_l = NETWORK_DEFAULTS[(kind, layout)]
    c = init_channels or default_c
    num_classes = num_classes or LAYOUT_DEFAULTS[layout]["num_classes"]
    size = image_size or LAYOUT_DEFAULTS[layout]["image_size"]
    net = build_eval_network(g, num_classes, c, layers or default_l, layout, auxiliary=True, pool_bn=pool_bn,
                             drop_path=False)
    net.build((None, size, size, 3))
    params, with_aux = count_params(net), count_params(net, include_aux=True)
    report = {
        "network": kind,
        "genotype": g.name,
        "layout": layout,
        "init_channels": c,
        "num_classes": num_classes,
        "image_size": size,
        "pool_bn": bool(pool_bn),
        "params": params,
        "params_with_aux": with_aux,
        "aux_params": with_aux - params,
        "macs": count_macs(net, (size, size, 3)),
    }
    if kind == "chain":
        report["layers"] = net.num_cells
    else:
        report["stage_lengths"] = list(net.stage_lengths)
        report["live_cells"] = [len(stage.live_cells) for stage in net.stages]
        report["layers"] = sum(report["live_cells"]) + len(net.reductions)  # cells built, reductions included
    return report


def dot_texts(genotype, stage_genotype=None) -> dict:
    """DOT text of every cell and stage DAG of the combined genotype, keyed by file stem."""
    from hdas_tf.summaries.logger import genotype_dot
    from hdas_tf.train.model import combine_genotypes

    return genotype_dot(combine_genotypes(genotype, stage_genotype))


def _given(name: str) -> bool:
    """Whether a flag was set (on the command line, or to a value other than its default)."""
    flag = FLAGS[name]
    return bool(flag.present) or flag.value != flag.default


def _check_stage_flags(mode: str) -> None:
    """The stage-level flags describe a stage or distribution supernet only: refuse them elsewhere, and check
    --stage_lengths is three positive integers."""
    if mode != "stage_supernet":
        given = [f"--{name}" for name in STAGE_FLAGS if _given(name)]
        if given:
            raise app.UsageError(f"{', '.join(given)} describe a stage or distribution supernet: add "
                                 "--supernet=stage or --supernet=distribution (with --genotype, the fixed cells)")
        return
    if FLAGS.supernet == "stage" and (_given("min_cells") or _given("max_cells")):
        raise app.UsageError("--min_cells and --max_cells set the candidate stage lengths of the distribution "
                             "supernet: use --supernet=distribution, or --stage_lengths for the stage supernet")
    lengths = FLAGS.stage_lengths
    if lengths is not None:
        if FLAGS.supernet == "distribution":
            raise app.UsageError("--stage_lengths sets the stage supernet's cells; the distribution supernet has "
                                 "--max_cells per stage: use --supernet=stage, or --max_cells")
        if len(lengths) != 3 or not all(n.strip().isdigit() and int(n) >= 1 for n in lengths):
            raise app.UsageError(f"--stage_lengths must be three positive integers, e.g. 6,6,6; received "
                                 f"{','.join(lengths)!r}")


def _mode() -> str:
    """'supernet' (cell), 'stage_supernet' or 'network' from the flags; raises UsageError on contradictory flags
    (before heavy imports)."""
    genotype_given = FLAGS.genotype is not None
    if FLAGS.stage_genotype is not None and not genotype_given:
        raise app.UsageError("--stage_genotype needs --genotype (the cells to put in the stage DAGs)")
    stacnas_given = FLAGS.stacnas != "off" or FLAGS.clusters or FLAGS.edge_clusters
    if FLAGS.supernet in ("stage", "distribution"):
        name = f"--supernet={FLAGS.supernet}"
        if not genotype_given:
            raise app.UsageError(f"{name} needs --genotype, the supernet's fixed cells (a registry name such as "
                                 "DARTS_V2, or a cell search's genotype.json)")
        if FLAGS.stage_genotype is not None:
            raise app.UsageError(f"{name} searches the stage DAGs, so it takes no --stage_genotype")
        if stacnas_given:
            raise app.UsageError(f"--stacnas, --clusters and --edge_clusters describe a cell supernet, not {name}")
        if FLAGS.layout != "cifar":
            raise app.UsageError("the stage supernets have the CIFAR layout only; drop --layout")
        if FLAGS.dot:
            raise app.UsageError(f"--dot draws a genotype's evaluation network; drop it with {name}")
        mode = "stage_supernet"
    elif FLAGS.supernet == "cell":
        if genotype_given:
            raise app.UsageError("--supernet=cell reports a search supernet, which takes no --genotype; drop "
                                 "--supernet to inspect the genotype's evaluation network")
        if FLAGS.layout != "cifar":
            raise app.UsageError("the cell supernet has the CIFAR layout only; drop --layout")
        if FLAGS.dot:
            raise app.UsageError("--dot draws a genotype: pass --genotype")
        mode = "supernet"
    else:
        if genotype_given and stacnas_given:
            raise app.UsageError("--stacnas, --clusters and --edge_clusters describe a search supernet, which takes "
                                 "no --genotype")
        if FLAGS.supernet == "none" and not genotype_given:
            raise app.UsageError("--supernet=none reports the evaluation network of --genotype; pass --genotype")
        if not genotype_given and FLAGS.dot:
            raise app.UsageError("--dot draws a genotype: pass --genotype")
        mode = "network" if genotype_given else "supernet"
    _check_stage_flags(mode)
    return mode


def _print_report(report: dict) -> None:
    for k, v in report.items():
        if k in ("params", "params_with_aux", "aux_params"):
            v = f"{v:,} ({v / 1e6:.2f} M)"
        elif k == "macs":
            v = f"{v:,} ({v / 1e6:.1f} M)"
        print(f"{k:>18}: {v}")


def _ri_main() -> None:
    """``--ri``: RI from training runs' metrics.json files (no network is built)."""
    from hdas_tf.train.relative_improvement import ri_report

    if not (FLAGS.ri and FLAGS.searched and FLAGS.random):
        raise app.UsageError("RI needs --ri, --searched=RUN and --random=RUN1,RUN2,... (training run directories or "
                             "their metrics.json)")
    try:
        report = ri_report(FLAGS.searched, FLAGS.random, FLAGS.ri_accuracy)
    except ValueError as e:
        raise app.UsageError(str(e))
    if FLAGS.json:
        print(json.dumps(report, sort_keys=True))
        return
    print(f"{FLAGS.ri_accuracy} {report['split']} accuracy over {report['eval_examples']} examples")
    print(f"searched  {report['searched']['accuracy']:.4f}  {report['searched']['run']}")
    for r in report["random"]:
        print(f"random    {r['accuracy']:.4f}  {r['run']}")
    print(f"Acc_r     {report['random_mean']:.4f}  (mean of {len(report['random'])})")
    print(f"RI        {report['ri']:+.3f} %")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.ri or FLAGS.searched or FLAGS.random:
        return _ri_main()
    if FLAGS.draw is not None:
        if FLAGS.genotype is None or not FLAGS.draw.lower().endswith((".png", ".svg")):
            raise app.UsageError("--draw=OUT.png or --draw=OUT.svg draws the genotype given by --genotype "
                                 "(and --stage_genotype)")
        from hdas_tf.summaries.drawing import draw_genotype
        from hdas_tf.train.model import combine_genotypes

        try:
            engine = draw_genotype(combine_genotypes(FLAGS.genotype, FLAGS.stage_genotype), FLAGS.draw)
        except (ValueError, OSError) as e:  # an unknown genotype, Graphviz failing, an unwritable path, ...
            raise app.UsageError(str(e))
        print(f"drew {FLAGS.genotype} into {FLAGS.draw} with {engine}")
        return
    mode = _mode()
    try:
        if mode == "supernet":
            report = supernet_report(FLAGS.cells, FLAGS.init_channels or 16, FLAGS.layers or 8,
                                     FLAGS.num_classes or 10, FLAGS.image_size or 32, FLAGS.stacnas, FLAGS.clusters,
                                     FLAGS.edge_clusters, FLAGS.pool_bn)
        elif mode == "stage_supernet":
            lengths = None if FLAGS.stage_lengths is None else [int(n) for n in FLAGS.stage_lengths]
            report = stage_supernet_report(FLAGS.supernet, FLAGS.genotype, FLAGS.stage, FLAGS.init_channels or 16,
                                           lengths, FLAGS.window, FLAGS.min_cells, FLAGS.max_cells,
                                           FLAGS.num_classes or 10, FLAGS.image_size or 32, FLAGS.pool_bn,
                                           FLAGS.layers)
        else:
            if FLAGS.dot and not FLAGS.json:
                for text in dot_texts(FLAGS.genotype, FLAGS.stage_genotype).values():
                    sys.stdout.write(text if text.endswith("\n") else text + "\n")
                return
            report = network_report(FLAGS.genotype, FLAGS.stage_genotype, FLAGS.layout, FLAGS.init_channels,
                                    FLAGS.layers, FLAGS.num_classes, FLAGS.image_size, FLAGS.pool_bn)
            if FLAGS.dot:
                report["dot"] = dot_texts(FLAGS.genotype, FLAGS.stage_genotype)
    except UserError as e:  # a bad genotype, cluster file or size: app.UsageError, as for the flags above
        raise app.UsageError(str(e)) from None
    if FLAGS.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print_report(report)


def run():
    """The entry point of ``python -m hdas_tf.inspect``."""
    run_main("inspect", main)

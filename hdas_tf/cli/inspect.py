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
- ``--dot`` (with ``--genotype``): the genotype's cells and stage DAGs as Graphviz DOT text instead of the
  counts (pipe into ``dot -Tpng -O``); with ``--json`` the counts gain a ``dot`` entry instead.
- ``--draw=OUT.png|OUT.svg`` (with ``--genotype``): the genotype drawn into one file (``hdas_tf.summaries.drawing``).

Networks are built from shapes only (no forward pass): C=36, L=20 takes seconds.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_enum("supernet", None, ["cell", "none"],
                  "cell: report the cell supernet of a search (the default without --genotype); none: report the "
                  "evaluation network of --genotype (the default with it).")
flags.DEFINE_string("genotype", None, "Cells: a registry name (e.g. DARTS_V2) or a genotype file (which may also carry "
                    "stage DAGs).")
flags.DEFINE_string("stage_genotype", None, "Stage DAGs (registry name such as HS_DAS_CIFAR, or a file) added to the "
                    "genotype's cells: the network is then a stage network.")
flags.DEFINE_enum("layout", "cifar", ["cifar", "imagenet"], "Evaluation network layout (DESIGN §4).")
flags.DEFINE_enum("cells", "shared", ["shared", "stage_specific"], "Cell α sharing of the cell supernet.")
flags.DEFINE_enum("stacnas", "off", ["off", "clusters", "members"], "Cell supernet of a StacNAS stage (see "
                  "hdas_tf.search --help): clusters = stage 1, members = stage 2 (needs --edge_clusters).")
flags.DEFINE_string("clusters", None, "StacNAS stage 1: a cluster-set file (default clusters otherwise).")
flags.DEFINE_string("edge_clusters", None, "StacNAS stage 2: the edge_clusters.json of a stage-1 run.")
flags.DEFINE_integer("init_channels", None, "C. Defaults: supernet 16; chain network 36 (cifar) / 48 (imagenet); "
                     "stage network 36 (cifar) / 39 (imagenet).", lower_bound=1)
flags.DEFINE_integer("layers", None, "L, cells of a chain network or supernet. Defaults: supernet 8; chain network 20 "
                     "(cifar) / 14 (imagenet). Stage networks take their cells from the DAGs.", lower_bound=3)
flags.DEFINE_integer("num_classes", None, "Classes. Defaults: 10 (cifar layout, supernet), 1000 (imagenet).",
                     lower_bound=2)
flags.DEFINE_integer("image_size", None, "Input height and width. Defaults: 32 (cifar, supernet), 224 (imagenet).",
                     lower_bound=8)
flags.DEFINE_boolean("pool_bn", True, "BN after pooling ops (the H-DAS reference; false = the DARTS evaluation "
                     "network). Adds no trainable parameters.")
flags.DEFINE_boolean("dot", False, "Print the genotype's cells and stage DAGs as DOT text (with --json: a 'dot' "
                     "entry).")
flags.DEFINE_boolean("json", False, "Print one JSON object.")
flags.DEFINE_string("draw", None, "Draw the genotype's cells and stage DAGs into this .png or .svg file "
                    "(Graphviz when its 'dot' program is on the PATH, matplotlib otherwise) instead of "
                    "reporting sizes.")

# The reference recipes (DESIGN §4): (init_channels, layers) per network kind and layout.
NETWORK_DEFAULTS = {("chain", "cifar"): (36, 20), ("chain", "imagenet"): (48, 14),
                    ("stage", "cifar"): (36, None), ("stage", "imagenet"): (39, None)}
LAYOUT_DEFAULTS = {"cifar": dict(num_classes=10, image_size=32), "imagenet": dict(num_classes=1000, image_size=224)}


def supernet_report(cells: str, init_channels: int, layers: int, num_classes: int, image_size: int = 32,
                    stacnas: str = "off", clusters: str | None = None, edge_clusters: str | None = None) -> dict:
    """Weight parameters and architecture scalars of a cell supernet, built from shapes (no forward pass);
    the search space is the one ``hdas_tf.search`` builds for the same flags (``search_job.search_space``)."""
    import numpy as np

    from hdas_tf.search.config import SearchConfig
    from hdas_tf.nn.supernets import ChainSupernet
    from hdas_tf.search.job import search_space
    from hdas_tf.space.search_space import log10_space_size

    cfg = SearchConfig(search="cell", cells=cells, layers=layers, init_channels=init_channels, stacnas=stacnas,
                       clusters=clusters, edge_clusters=edge_clusters)
    space = search_space(cfg, num_classes)
    net = ChainSupernet(space)
    net.build((None, image_size, image_size, 3))
    return {
        "supernet": "cell",
        "cells": cells,
        "stacnas": stacnas,
        "cell_ops": list(space.cell_ops),
        "init_channels": init_channels,
        "layers": layers,
        "num_classes": num_classes,
        "params": int(sum(int(np.prod(v.shape)) for v in net.trainable_weights)),
        "arch_params": space.num_arch_params(),
        "arch_shapes": {k: list(v) for k, v in space.arch_shapes().items()},
        "log10_space_size": round(log10_space_size(space), 3),
    }


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


def _mode() -> str:
    """'supernet' or 'network' from the flags; raises UsageError on contradictory flags (before heavy imports)."""
    genotype_given = FLAGS.genotype is not None
    if FLAGS.stage_genotype is not None and not genotype_given:
        raise app.UsageError("--stage_genotype needs --genotype (the cells to put in the stage DAGs)")
    if FLAGS.supernet == "cell":
        if genotype_given:
            raise app.UsageError("--supernet=cell reports a search supernet, which takes no --genotype; drop "
                                 "--supernet to inspect the genotype's evaluation network")
        if FLAGS.layout != "cifar":
            raise app.UsageError("the cell supernet has the CIFAR layout only; drop --layout")
        if FLAGS.dot:
            raise app.UsageError("--dot draws a genotype: pass --genotype")
        return "supernet"
    if genotype_given and (FLAGS.stacnas != "off" or FLAGS.clusters or FLAGS.edge_clusters):
        raise app.UsageError("--stacnas, --clusters and --edge_clusters describe a search supernet, which takes "
                             "no --genotype")
    if FLAGS.supernet == "none" and not genotype_given:
        raise app.UsageError("--supernet=none reports the evaluation network of --genotype; pass --genotype")
    if not genotype_given:
        if FLAGS.dot:
            raise app.UsageError("--dot draws a genotype: pass --genotype")
        return "supernet"
    return "network"


def _print_report(report: dict) -> None:
    for k, v in report.items():
        if k in ("params", "params_with_aux", "aux_params"):
            v = f"{v:,} ({v / 1e6:.2f} M)"
        elif k == "macs":
            v = f"{v:,} ({v / 1e6:.1f} M)"
        print(f"{k:>18}: {v}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
                                     FLAGS.edge_clusters)
        else:
            if FLAGS.dot and not FLAGS.json:
                for text in dot_texts(FLAGS.genotype, FLAGS.stage_genotype).values():
                    sys.stdout.write(text if text.endswith("\n") else text + "\n")
                return
            report = network_report(FLAGS.genotype, FLAGS.stage_genotype, FLAGS.layout, FLAGS.init_channels,
                                    FLAGS.layers, FLAGS.num_classes, FLAGS.image_size, FLAGS.pool_bn)
            if FLAGS.dot:
                report["dot"] = dot_texts(FLAGS.genotype, FLAGS.stage_genotype)
    except ValueError as e:  # an unknown genotype, a network that does not fit the image size, ...
        raise app.UsageError(str(e))
    if FLAGS.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print_report(report)


def run():
    """The entry point of ``python -m hdas_tf.inspect``."""
    app.run(main)

"""`python -m hdas_tf.inspect`: sizes of supernets and search spaces (parameters, architecture scalars)."""

from __future__ import annotations

import json

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_enum("supernet", "cell", ["cell"], "Which supernet to measure.")
flags.DEFINE_enum("cells", "shared", ["shared", "stage_specific"], "Cell α sharing of the cell supernet.")
flags.DEFINE_integer("init_channels", 16, "C.", lower_bound=1)
flags.DEFINE_integer("layers", 8, "L.", lower_bound=3)
flags.DEFINE_integer("num_classes", 10, "Classes.", lower_bound=2)
flags.DEFINE_integer("image_size", 32, "Input height and width.", lower_bound=8)
flags.DEFINE_boolean("json", False, "Print one JSON object.")


def supernet_report(cells: str, init_channels: int, layers: int, num_classes: int, image_size: int = 32) -> dict:
    """Weight parameters and architecture scalars of a cell supernet, built from shapes (no forward pass)."""
    import numpy as np

    from hdas_tf.networks import ChainSupernet
    from hdas_tf.search_space import SearchSpace, log10_space_size

    space = SearchSpace(cells=cells, layers=layers, init_channels=init_channels, num_classes=num_classes)
    net = ChainSupernet(space)
    net.build((None, image_size, image_size, 3))
    return {
        "supernet": "cell",
        "cells": cells,
        "init_channels": init_channels,
        "layers": layers,
        "num_classes": num_classes,
        "params": int(sum(int(np.prod(v.shape)) for v in net.trainable_weights)),
        "arch_params": space.num_arch_params(),
        "arch_shapes": {k: list(v) for k, v in space.arch_shapes().items()},
        "log10_space_size": round(log10_space_size(space), 3),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    report = supernet_report(FLAGS.cells, FLAGS.init_channels, FLAGS.layers, FLAGS.num_classes, FLAGS.image_size)
    if FLAGS.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for k, v in report.items():
            print(f"{k:>18}: {v}")


if __name__ == "__main__":
    app.run(main)

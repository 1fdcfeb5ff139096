"""`python -m hdas_tf.benchmark`: time one configuration's real step (``hdas_tf.timing``).

Flags → a ``BenchmarkSpec`` → ``run_benchmark`` → a table, or one JSON object with ``--json``. The standard set
of configurations is run from the repository root: ``python -m benchmarks.standard``.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from hdas_tf.cli.errors import run_main
from hdas_tf.timing.report import format_report
from hdas_tf.timing.spec import (CONFIGS, DEFAULT_BATCH, SEARCH_CONFIGS, BenchmarkSpec, SpecError, search_config,
                                 train_config)
from hdas_tf.timing.steps import run_benchmark

FLAGS = flags.FLAGS

flags.DEFINE_enum("config", "cell_search", CONFIGS,
                  "What to measure: cell_search (DARTS / H^c-DAS chain supernet), stage_search (H^s-DAS stage "
                  "supernet), distribution_search (H^s-DAS β supernet), train (evaluation network training step), "
                  "inference (its forward pass at inference), input (the search input pipeline, no model).")
flags.DEFINE_integer("batch", None, f"Global batch. Defaults: {DEFAULT_BATCH}.", lower_bound=1)
flags.DEFINE_integer("order", 1, "Architecture gradient of a search step: 1 (first order) or 2 (second order, "
                     "unrolled).", lower_bound=1, upper_bound=2)
flags.DEFINE_integer("steps", 10, "Timed steps (the medians are over these).", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed warm-up steps after the first (tracing) step.", lower_bound=0)
flags.DEFINE_boolean("json", False, "Print exactly one JSON object on stdout (logs go to stderr).")
flags.DEFINE_enum("cells", "shared", ["shared", "stage_specific"], "cell_search: α groups (DARTS shared normal + "
                  "reduce, or H^c-DAS stage_specific: 5 groups).")
flags.DEFINE_enum("stage", "stage_specific", ["shared", "stage_specific"], "Stage α of stage/distribution searches.")
flags.DEFINE_string("genotype", "DARTS_V2", "Fixed cells of stage/distribution searches; the genotype of train / "
                    "inference (a registry name or a genotype file).")
flags.DEFINE_list("stage_lengths", None, "stage_search: cells per stage, e.g. 6,6,6 (the default).")
flags.DEFINE_integer("min_cells", 4, "distribution_search: shortest candidate stage length.", lower_bound=2)
flags.DEFINE_integer("max_cells", 8, "distribution_search: N_max, cells per stage (L = 3·N_max + 2; 6 gives L=20).",
                     lower_bound=2)
flags.DEFINE_integer("init_channels", None, "C. Defaults: 16 for searches, 36 for train / inference.", lower_bound=1)
flags.DEFINE_integer("layers", None, "L of the cell supernet (default 8) or the evaluation network (default 20); stage "
                     "and distribution supernets take theirs from the stage lengths.", lower_bound=3)
flags.DEFINE_integer("image_size", 32, "Height and width of the synthetic images.", lower_bound=8)
flags.DEFINE_integer("num_classes", 10, "Classes of the synthetic labels.", lower_bound=2)
flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and the model.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "tf.distribute strategy.")
flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (to run 'mirrored' on CPU).",
                     lower_bound=0)
flags.DEFINE_boolean("grappler", False, "Enable TF graph optimisation (off by default, as the library).")
flags.DEFINE_boolean("skip_parts", False, "Search configurations: measure only the search step (no architecture-only, "
                     "weight-only or forward+backward timings, no overhead ratio).")
flags.DEFINE_boolean("pool_bn", True, "BN after pooling ops.")
flags.DEFINE_boolean("auxiliary", True, "train / inference: build the auxiliary head.")
flags.DEFINE_float("drop_path_rate", 0.2, "train: drop path rate set in the network (0 builds none).",
                   lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_string("dataset", "digits", "input: the data set of the search pipeline (see hdas_tf.search --help).")
flags.DEFINE_string("data_dir", None, "input: TFDS data directory.")
flags.DEFINE_string("recompute", None, "Forwarded as the 'recompute' field of SearchConfig (or TrainConfig) when this "
                    "version has that field; an error otherwise.")
flags.DEFINE_multi_string("config_override", [], "FIELD=VALUE: set any other SearchConfig (searches) or TrainConfig "
                          "(train, inference) field, checked against the dataclass and parsed by its type. Repeatable.")


def spec_from_flags() -> BenchmarkSpec:
    """The BenchmarkSpec of the command line; raises UsageError naming the flag on a bad value."""
    lengths = None
    if FLAGS.stage_lengths:
        try:
            lengths = tuple(int(n) for n in FLAGS.stage_lengths)
        except ValueError:
            raise app.UsageError(f"--stage_lengths={','.join(FLAGS.stage_lengths)}: expected three integers, "
                                 "e.g. 6,6,6") from None
    overrides = []
    for item in FLAGS.config_override:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise app.UsageError(f"--config_override={item}: expected FIELD=VALUE")
        overrides.append((name.strip(), value))
    if FLAGS.recompute is not None:
        overrides.append(("recompute", FLAGS.recompute))
    if FLAGS["layers"].present and FLAGS.config in ("stage_search", "distribution_search", "input"):
        raise app.UsageError(f"--layers does not apply to --config={FLAGS.config} (a stage supernet has "
                             "3·max(stage lengths)+2 cells: use --stage_lengths or --max_cells)")
    try:
        spec = BenchmarkSpec(
            config=FLAGS.config, batch=FLAGS.batch, order=FLAGS.order, steps=FLAGS.steps, warmup=FLAGS.warmup,
            cells=FLAGS.cells, stage=FLAGS.stage, genotype=FLAGS.genotype, stage_lengths=lengths,
            min_cells=FLAGS.min_cells, max_cells=FLAGS.max_cells, init_channels=FLAGS.init_channels,
            layers=FLAGS.layers, image_size=FLAGS.image_size, num_classes=FLAGS.num_classes, seed=FLAGS.seed,
            strategy=FLAGS.strategy, grappler=FLAGS.grappler, skip_parts=FLAGS.skip_parts, pool_bn=FLAGS.pool_bn,
            auxiliary=FLAGS.auxiliary, drop_path_rate=FLAGS.drop_path_rate, dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir, overrides=tuple(overrides))
        # The config classes check their own fields (e.g. a value given through --config_override).
        if spec.config in SEARCH_CONFIGS:
            search_config(spec)
        elif spec.config != "input":
            train_config(spec)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    return spec


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    spec = spec_from_flags()
    if FLAGS.logical_cpus:
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
    from hdas_tf.data import DataError

    try:
        result = run_benchmark(spec)
    except SpecError as e:  # e.g. a batch the replicas cannot split
        raise app.UsageError(str(e)) from None
    except DataError as e:  # the input configuration's data set is missing or too small for the batch
        raise app.UsageError(f"--dataset={spec.dataset}, --batch={spec.global_batch}: {e}") from None
    if FLAGS.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_report(result))
    return 0


def run():
    """The entry point of ``python -m hdas_tf.benchmark``."""
    run_main("benchmark", main)

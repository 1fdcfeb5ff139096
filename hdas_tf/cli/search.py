"""`python -m hdas_tf.search`: architecture search from absl flags (or a --flagfile from flags/)."""

from __future__ import annotations

import dataclasses

from absl import app, flags

from hdas_tf.search import config as configs
from hdas_tf import data
from hdas_tf.cli import runtime_flags
from hdas_tf.cli.errors import run_main
from hdas_tf.errors import ConfigError

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "Run directory: flags.cfg, checkpoints/, tb/, genotype.json, genotypes/, "
                    "alphas.npz, run.json are written here.")
flags.DEFINE_enum("search", "cell", configs.SEARCH_KINDS,
                  "cell: DARTS / H^c-DAS cell search; distribution: H^s-DAS cell-distribution (β) search; "
                  "stage: H^s-DAS stage-DAG search.")
flags.DEFINE_enum("cells", "shared", ["shared", "stage_specific"],
                  "Cell α: shared (DARTS: normal + reduce) or stage_specific (H^c-DAS: normal1/2/3 + reduce1/2).")
flags.DEFINE_enum("stacnas", "off", configs.STACNAS_MODES,
                  "StacNAS mode of a cell search: off; clusters (stage 1: one representative op per operator "
                  "cluster, writes RUN_DIR/edge_clusters.json); members (stage 2: each edge searches the members of "
                  "the cluster it won in stage 1 + none; needs --edge_clusters).")
flags.DEFINE_string("clusters", None, "StacNAS stage 1: a hdas_tf.clusters/1 JSON file of operator clusters "
                    "(default: pooling {max, avg}, skip, separable {sep3, sep5}, dilated {dil3, dil5}).")
flags.DEFINE_string("edge_clusters", None, "StacNAS stage 2: the edge_clusters.json of a stage-1 run.")
flags.DEFINE_enum("stage", "stage_specific", ["shared", "stage_specific"],
                  "Stage α of a stage search: one DAG for all stages (H^s-DAS*) or one per stage (H^s-DAS).")
flags.DEFINE_string("genotype", None, "Fixed cell genotype of a stage or distribution search: a registry name "
                    "(e.g. DARTS_V2) or a genotype.json.")
flags.DEFINE_list("stage_lengths", None, "Cells per stage of a stage search, e.g. 6,6,6.")
flags.DEFINE_integer("window", 3, "Sliding window m of stage-cell sources.", lower_bound=1)
flags.DEFINE_integer("min_cells", 4, "Shortest candidate stage length of the distribution search.", lower_bound=2)
flags.DEFINE_integer("max_cells", 8, "Cells per stage of the distribution search (N_max).", lower_bound=2)
flags.DEFINE_float("depth_weight", 1.0, "δ, weight of the depth loss (paper Eq. 6).")
flags.DEFINE_float("complexity_weight", 0.4, "γ, weight of the complexity loss (paper Eq. 6).")
flags.DEFINE_enum("theta", "uniform", ["uniform", "flops"], "θ_s of the complexity loss (Eq. 5).")
flags.DEFINE_string("dataset", "digits", data.DATASETS_HELP)
flags.DEFINE_string("data_dir", None, "TFDS data directory (prepared data sets, or archives under downloads/manual).")
flags.DEFINE_string("manual_dir", None, "Directory holding manually downloaded archives (ImageNet).")
flags.DEFINE_boolean("download", False, "Allow TFDS to download the data set (needs internet).")
flags.DEFINE_integer("image_size", None, "Resize images to this size.", lower_bound=8)
flags.DEFINE_integer("num_examples", None, "Use only this many training examples (quick runs).", lower_bound=2)
flags.DEFINE_float("train_portion", 0.5, "Share of the training set for weights; the rest trains α (bilevel). "
                   "With --update=one_level, 1 uses the whole training set.")
flags.DEFINE_enum("update", "bilevel", configs.UPDATES,
                  "bilevel: α steps on the validation half, weights on the training half (DARTS); one_level: one "
                  "forward/backward pass on a training batch gives both gradients, Adam steps α and SGD the weights "
                  "(StacNAS).")
flags.DEFINE_enum("augment", None, data.AUGMENTATIONS,
                  "Augmentation of both halves of the search split (never cutout). Default: cifar (zero-pad 4 + "
                  "random crop, flip, as DARTS, H-DAS and StacNAS search) for CIFAR, folders and tfds:NAME; none for "
                  "the digits (a mirrored digit is another digit); imagenet for imagenet2012.")
flags.DEFINE_integer("batch_size", 64, "Global batch size (split over replicas).", lower_bound=1)
flags.DEFINE_integer("epochs", 50, "Search epochs.", lower_bound=1)
flags.DEFINE_integer("max_steps", None, "Stop after this many steps in total (checkpoint at the end).", lower_bound=1)
flags.DEFINE_boolean("resume", False, "Continue the run in --run_dir from its latest checkpoint.")
flags.DEFINE_integer("init_channels", 16, "C of the supernet.", lower_bound=1)
flags.DEFINE_integer("layers", 8, "L, cells of the chain supernet.", lower_bound=3)
flags.DEFINE_boolean("pool_bn", True, "BN after pooling ops.")
flags.DEFINE_float("w_lr", 0.025, "Initial weight learning rate (cosine-annealed per epoch).")
flags.DEFINE_float("w_lr_min", 0.001, "Final weight learning rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 3e-4, "Coupled L2 weight decay of the weights.")
flags.DEFINE_float("grad_clip", 5.0, "Global-norm clip of the weight gradient (after aggregation); 0 = off.")
flags.DEFINE_float("a_lr", 3e-4, "Adam learning rate of the architecture variables.")
flags.DEFINE_float("a_beta1", 0.5, "Adam β1 of the architecture variables.")
flags.DEFINE_float("a_beta2", 0.999, "Adam β2 of the architecture variables.")
flags.DEFINE_float("a_weight_decay", 1e-3, "Coupled L2 weight decay of the architecture variables.")
flags.DEFINE_boolean("unrolled", False, "Second-order architecture gradient (DARTS Eq. 7-8).")
flags.DEFINE_enum("edge_ranking", "softmax", configs.EDGE_RANKINGS,
                  "Rank edges by softmax probability (default) or raw α (as the H-DAS code).")
flags.DEFINE_enum("genotype_selection", "last", configs.SELECTIONS,
                  "Final genotype: the last epoch's, or the epoch with the best supernet validation accuracy.")
flags.DEFINE_integer("seed", 0, "Seed of weights, α and the data split/order.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops (bit-identical resume).")
flags.adopt_module_key_flags(runtime_flags)  # grappler, threads, recompute, strategy, logical_cpus
flags.DEFINE_integer("log_every", 10, "Log and write step summaries every N steps.", lower_bound=1)
flags.DEFINE_integer("hessian_every", 0, "Log the dominant eigenvalue of the architecture Hessian (power iteration "
                     "on one validation batch) every N epochs as diagnostics/hessian_eigenvalue/arch; 0 = off.",
                     lower_bound=0)
flags.DEFINE_integer("stop_on_skips", 0, "Cell search: end the search (genotype files written) after the first epoch "
                     "whose derived normal cell holds at least K skip connections (DARTS+ early stopping); 0 = off.",
                     lower_bound=0)


def config_from_flags() -> configs.SearchConfig:
    lengths = tuple(int(n) for n in FLAGS.stage_lengths) if FLAGS.stage_lengths else None
    names = [f.name for f in dataclasses.fields(configs.SearchConfig)]
    values = {n: getattr(FLAGS, n) for n in names if n in FLAGS and n != "stage_lengths"}
    return configs.SearchConfig(stage_lengths=lengths, **values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.stage_lengths and not all(n.strip().isdigit() for n in FLAGS.stage_lengths):
        raise ConfigError(f"--stage_lengths={','.join(FLAGS.stage_lengths)}: expected three positive integers, "
                          "e.g. 6,6,6")
    runtime_flags.split_cpu()
    try:
        cfg = config_from_flags()
    except ValueError as e:  # the config's own field checks: every one is about a flag value
        raise ConfigError(str(e)) from None
    from hdas_tf.run import run_dir  # heavy imports after flag checks
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.search.job import open_inputs, run_search

    from hdas_tf.cli.run_exits import clean_exits
    from hdas_tf.run.strategy import make_strategy

    configure_runtime(cfg)  # before the data opens: the thread pools are fixed once TensorFlow runs an op
    make_strategy(cfg.strategy)  # so is MultiWorkerMirroredStrategy's collective runtime
    # Everything that can refuse the run, before anything is written (BUILD_NOTES "Errors and exit codes"): the
    # run directory, the files the flags name, the data set.
    run_dir.check_run_dir(FLAGS.run_dir, FLAGS.resume)
    inputs = open_inputs(cfg)
    # This process's run files: RUN_DIR, or a non-chief worker's temporary directory (removed at the end).
    with run_dir.worker_directory(FLAGS.run_dir, cfg.strategy) as out_dir:
        # A resumed search keeps the flags.cfg it started with; progress goes to stderr and RUN_DIR/search.log.
        run_dir.start(out_dir, FLAGS.resume, runtime_flags.key_flag_lines(__name__), "search.log",
                      keep_flags_on_resume=True)
        with clean_exits("hdas_tf.search", FLAGS.run_dir):
            run_search(cfg, FLAGS.run_dir, resume=FLAGS.resume, inputs=inputs, out_dir=out_dir)


def run():
    """The entry point of ``python -m hdas_tf.search``."""
    flags.mark_flag_as_required("run_dir")
    run_main("search", main)

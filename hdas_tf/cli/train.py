"""`python -m hdas_tf.train`: train a genotype from scratch from absl flags (or a --flagfile from flags/)."""

from __future__ import annotations

import dataclasses

from absl import app, flags

from hdas_tf import data
from hdas_tf.cli import runtime_flags
from hdas_tf.cli.errors import run_main
from hdas_tf.errors import ConfigError

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "Run directory: flags.cfg, config.json, genotype.json, checkpoints/, tb/, "
                    "history.json, metrics.json, run.json, model.keras and train.log are written here.")
flags.DEFINE_string("genotype", None, "The cells: a registry name (DARTS_V2, PDARTS, HC_DAS, ...) or a genotype file "
                    "(JSON, or a PyTorch genotype string); a file may also carry stage DAGs.")
flags.DEFINE_string("stage_genotype", None, "Stage DAGs (registry name such as HS_DAS_CIFAR, or a file) that add to "
                    "or replace the genotype's: the network is then a stage network (H^s-DAS).")
flags.DEFINE_enum("layout", "cifar", ["cifar", "imagenet"],
                  "Network layout (BUILD_NOTES \"Evaluation networks and training recipes\").")
flags.DEFINE_integer("init_channels", 36, "C.", lower_bound=1)
flags.DEFINE_integer("layers", 20, "L, cells of a chain network (stage networks take theirs from the DAGs).",
                     lower_bound=3)
flags.DEFINE_boolean("pool_bn", True, "BN after pooling ops (the H-DAS reference; false = the DARTS evaluation "
                     "network).")
flags.DEFINE_boolean("auxiliary", True, "Auxiliary head after the second reduction cell.")
flags.DEFINE_float("auxiliary_weight", 0.4, "Weight of the auxiliary loss.", lower_bound=0.0)
flags.DEFINE_float("drop_path_rate", 0.2, "Drop path rate of the last epoch, ramped linearly from 0 over the epochs; "
                   "0 builds no drop path.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_string("dataset", "digits", data.DATASETS_HELP)
flags.DEFINE_string("data_dir", None, "TFDS data directory (prepared data sets, or archives under downloads/manual).")
flags.DEFINE_string("manual_dir", None, "Directory holding manually downloaded archives (ImageNet).")
flags.DEFINE_boolean("download", False, "Allow TFDS to download the data set (needs internet).")
flags.DEFINE_integer("image_size", None, "Resize images to this size.", lower_bound=8)
flags.DEFINE_integer("num_examples", None, "Use only this many training (and test) examples (quick runs).",
                     lower_bound=2)
flags.DEFINE_float("validation_fraction", 0.0, "Evaluate on this held-out share of the training split instead of the "
                   "test split.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_enum("augment", "cifar", data.AUGMENTATIONS, "Training augmentation: cifar (pad-4 crop, flip, cutout), "
                  "autoaugment (AutoAugment's CIFAR-10 policy, then pad-4 crop, flip, cutout), imagenet "
                  "(random-resized crop, flip, colour jitter) or none.")
flags.DEFINE_integer("cutout", 16, "Cutout side of the cifar and autoaugment augmentations (after normalisation); "
                     "0 = off.", lower_bound=0)
flags.DEFINE_integer("batch_size", 96, "Global batch size (split over replicas).", lower_bound=1)
flags.DEFINE_integer("epochs", 600, "Training epochs (raise it with --resume to train on).", lower_bound=1)
flags.DEFINE_float("lr", 0.025, "Initial SGD learning rate.", lower_bound=0.0)
flags.DEFINE_float("lr_min", 0.0, "Final learning rate of the cosine schedule.", lower_bound=0.0)
flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "exponential"], "cosine: per epoch from --lr to --lr_min; "
                  "exponential: ×--lr_decay per epoch (the DARTS ImageNet recipe).")
flags.DEFINE_float("lr_decay", 0.97, "Per-epoch factor of the exponential schedule.")
flags.DEFINE_integer("warmup_epochs", 0, "Epochs of linear per-step warm-up before the schedule.", lower_bound=0)
flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0)
flags.DEFINE_float("weight_decay", 3e-4, "Coupled L2 weight decay (added to the gradient, as PyTorch SGD).",
                   lower_bound=0.0)
flags.DEFINE_float("grad_clip", 5.0, "Global-norm clip of the gradient (after cross-replica aggregation); 0 = off.",
                   lower_bound=0.0)
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing ε of both losses (ImageNet recipe: 0.1).",
                   lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_boolean("resume", False, "Continue the run in --run_dir from its latest readable checkpoint (an epoch end, "
                     "or a step inside an epoch: --checkpoint_every_steps/_minutes, SIGTERM).")
flags.DEFINE_integer("seed", 0, "Seed of the weights, drop path and the data order.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops.")
flags.adopt_module_key_flags(runtime_flags)  # grappler, threads, recompute, strategy, logical_cpus
flags.DEFINE_integer("log_every", 50, "Log and record step summaries every N steps.", lower_bound=1)


def config_from_flags():
    from hdas_tf.train.config import TrainConfig  # heavy imports (TensorFlow) only once flags parsed

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return TrainConfig(**{n: getattr(FLAGS, n) for n in names})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runtime_flags.split_cpu()
    from hdas_tf.cli.run_exits import clean_exits
    from hdas_tf.run import run_dir
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.run.strategy import make_strategy
    from hdas_tf.train.job import TrainJob

    try:
        cfg = config_from_flags()
    except ValueError as e:  # the config's own field checks: every one is about a flag value
        raise ConfigError(str(e)) from None
    configure_runtime(cfg)  # before the data opens: the thread pools are fixed once TensorFlow runs an op
    make_strategy(cfg.strategy)  # so is MultiWorkerMirroredStrategy's collective runtime
    # This process's run files: RUN_DIR, or a non-chief worker's temporary directory (removed at the end).
    with run_dir.worker_directory(FLAGS.run_dir, cfg.strategy) as out_dir:
        job = TrainJob(cfg, FLAGS.run_dir, resume=FLAGS.resume, out_dir=out_dir)  # resolves the genotype
        # Everything that can refuse the run, before anything is written (BUILD_NOTES "Errors and exit codes"):
        # the run directory, the genotype a resumed run trains, the data set.
        job.prepare()
        # flags.cfg without --resume and --run_dir, so it reproduces the configuration from scratch (a resumed
        # run rewrites it with the flags it continued with); progress goes to stderr and RUN_DIR/train.log.
        lines = runtime_flags.key_flag_lines(__name__, exclude=("resume", "run_dir"))
        run_dir.start(out_dir, FLAGS.resume, lines, "train.log")
        with clean_exits("hdas_tf.train", FLAGS.run_dir):
            job.run()

def run():
    """The entry point of ``python -m hdas_tf.train``."""
    flags.mark_flag_as_required("run_dir")
    flags.mark_flag_as_required("genotype")
    run_main("train", main)

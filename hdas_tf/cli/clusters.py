"""`python -m hdas_tf.clusters`: StacNAS operator clusters proposed from a finished cell search's op correlations
(``hdas_tf.search.correlation``)."""

from __future__ import annotations

from absl import app, flags

from hdas_tf.cli.errors import fail, run_main

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "A finished plain cell search (every op on every edge); op_correlation.json, "
                    "clusters.json and op_correlation.png are written here, the heatmaps to its tb/.")
flags.DEFINE_integer("num_images", 512, "Validation images to run (whole batches): the architecture half of the "
                     "run's split, or its test split when it searched on the whole training set.", lower_bound=2)
flags.DEFINE_integer("batch_size", 64, "Images per forward pass (the cells normalise with batch statistics).",
                     lower_bound=2)
flags.DEFINE_float("threshold", None, "Cut the average-linkage tree at this distance 1 - rho (instead of "
                   "--num_clusters).")
flags.DEFINE_integer("num_clusters", 4, "Clusters to propose (ignored with --threshold).", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.threshold is not None and FLAGS["num_clusters"].present:
        raise app.UsageError("give --threshold or --num_clusters, not both")
    from hdas_tf.search.correlation import correlate_run  # heavy imports after the flag checks

    try:
        doc = correlate_run(FLAGS.run_dir, FLAGS.num_images, FLAGS.batch_size, threshold=FLAGS.threshold,
                            num_clusters=None if FLAGS.threshold is not None else FLAGS.num_clusters)
    except ValueError as e:
        fail("clusters", e)
    for c in doc["clusters"]:
        print(f"{c['name']}: {', '.join(c['ops'])} (representative {c['representative']})")


def run():
    """The entry point of ``python -m hdas_tf.clusters``."""
    flags.mark_flag_as_required("run_dir")
    run_main("clusters", main)

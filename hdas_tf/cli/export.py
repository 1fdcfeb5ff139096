"""`python -m hdas_tf.export`: a trained network as a TF Serving SavedModel (``hdas_tf.serving``)."""

import logging

from hdas_tf.cli.errors import run_main
from hdas_tf.errors import UserError
from hdas_tf.serving import DATA_INFO_FILE, EXTRAS_DIR, MODEL_FILE, RESIZE_METHODS, TFLITE_FILE, export


def _define_flags():
    # Defined only when run as the main program: importing the library must not add flags (other mains
    # define --run_dir too).
    from absl import flags

    flags.DEFINE_string("run_dir", None, f"A training run directory: its final {MODEL_FILE} is exported.")
    flags.DEFINE_string("model", None, "A .keras model file to export (instead of --run_dir).")
    flags.DEFINE_string("export_dir", None, "Base directory (TF Serving's --model_base_path); the version is "
                        "written to EXPORT_DIR/VERSION.")
    flags.DEFINE_integer("version", 1, "Version folder (an integer, as TF Serving requires).", lower_bound=1)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing version.")
    flags.DEFINE_boolean("resize", False, "Accept any image size (H, W unknown in the signature) and resize in the "
                         "graph to the trained size.")
    flags.DEFINE_enum("resize_method", None, list(RESIZE_METHODS), "How --resize resizes; default: as the run "
                      "evaluated (center_crop for --augment=imagenet runs, else resize).")
    flags.DEFINE_boolean("tflite", False, f"Also write {EXTRAS_DIR}/{TFLITE_FILE} in the version folder.")
    flags.DEFINE_list("mean", None, "Per-channel mean on the [0, 1] scale (overrides the data info).")
    flags.DEFINE_list("std", None, "Per-channel std on the [0, 1] scale (overrides the data info).")
    flags.DEFINE_list("image_size", None, "Trained input size: S or H,W (overrides the data info).")
    flags.DEFINE_list("class_names", None, "Class names, comma separated, in label order (overrides the data info).")
    flags.DEFINE_string("data_info", None, f"Data-info JSON (default: {DATA_INFO_FILE} beside the model).")


def main(argv):
    from absl import app, flags
    from absl import logging as absl_logging

    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:  # TF's per-save INFO lines; --verbosity=0 shows them
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        mean, std = ([float(x) for x in v] if v is not None else None for v in (FLAGS.mean, FLAGS.std))
    except ValueError as e:
        raise app.UsageError(f"--mean and --std take numbers: {e}") from None
    try:
        path = export(FLAGS.export_dir, run_dir=FLAGS.run_dir, model=FLAGS.model, version=FLAGS.version,
                      overwrite=FLAGS.overwrite, resize=FLAGS.resize, tflite=FLAGS.tflite, data_info=FLAGS.data_info,
                      mean=mean, std=std, image_size=FLAGS.image_size,
                      class_names=FLAGS.class_names, resize_method=FLAGS.resize_method)
    except FileExistsError as e:  # the version folder is there already (ExportError is reported by run_main)
        raise UserError(str(e)) from None
    print(path)


def run():
    """The entry point of ``python -m hdas_tf.export``."""
    from absl import flags

    _define_flags()
    flags.mark_flag_as_required("export_dir")
    flags.mark_flags_as_mutual_exclusive(["run_dir", "model"], required=True)
    run_main("export", main)

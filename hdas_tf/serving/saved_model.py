"""Export of a trained evaluation network as a TF Serving SavedModel (BUILD_NOTES "Export for TF Serving"),
optionally with a TFLite model.

:func:`export` writes ``BASE/N/`` (the layout TF Serving watches) through a hidden temporary folder renamed into
place, so a server never sees a half-written version. The ``serving_default`` signature takes uint8 ``images``,
normalises them in the graph (optionally resizing them first as the training run's evaluation did) and returns
``logits``, ``probabilities``, ``classes`` and, when known, ``class_names``; ``assets.extra/export.json`` records
what was exported and from where.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from hdas_tf import data
from hdas_tf.nn import tracing
from hdas_tf.serving.metadata import ExportError, ServingSpec, resolve_spec

EXPORT_FORMAT = "hdas_tf.export/1"
MODEL_FILE = "model.keras"
CLASS_NAMES_ASSET = "class_names.txt"
EXTRAS_DIR = "assets.extra"
TFLITE_FILE = "model.tflite"
SIGNATURE = "serving_default"
_TMP_PREFIX = ".tmp-export-"


class _Serving:
    """The serving functions of a model and spec: ``predict`` (no class names) and ``serve`` (the signature)."""

    def __init__(self, model, spec: ServingSpec, resize: bool, asset_path: str | None):
        self.model, self.spec, self.resize = model, spec, bool(resize)
        self.mean = tf.constant(spec.mean, tf.float32)
        self.std = tf.constant(spec.std, tf.float32)
        self.table = None
        if asset_path is not None:
            init = tf.lookup.TextFileInitializer(asset_path, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                                 tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
            self.table = tf.lookup.StaticHashTable(init, default_value="")

    def predict(self, images, resize=None):
        x = tf.cast(images, tf.float32)
        if self.resize if resize is None else resize:
            if self.spec.resize_method == "center_crop":
                x = data.resize_and_center_crop(x, self.spec.image_size, self.spec.crop_fraction)
            else:
                x = data.resize_to(x, self.spec.image_size)
        x = (x / 255.0 - self.mean) / self.std  # data.normalize
        logits = tf.cast(self.model(x, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int64)}

    def serve(self, images):
        out = self.predict(images)
        if self.table is not None:
            out["class_names"] = self.table.lookup(out["classes"])
        return out

    def input_spec(self, resize=None):
        h, w = (None, None) if (self.resize if resize is None else resize) else self.spec.image_size
        return tf.TensorSpec([None, h, w, 3], tf.uint8, name="images")


def _num_classes(model, spec: ServingSpec) -> int:
    n = getattr(model, "num_classes", None)
    if n is None:
        n = model.compute_output_shape((None, *spec.image_size, 3))[-1]
    return int(n)


def _write_tflite(serving: _Serving, path: str) -> list:
    """Writes the fixed-size TFLite model (outputs logits, probabilities, classes); returns the TF ops it needs
    beyond the TFLite builtins (Flex delegate), normally none.

    The function is frozen first (variables → constants): TF 2.21's converter left Keras 3 variables as
    VAR_HANDLE/READ_VARIABLE ops that the interpreter never initialises (NaN outputs)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = serving.input_spec(resize=False)
    fixed = tf.function(lambda images: serving.predict(images, resize=False), input_signature=[spec],
                        autograph=False)
    concrete = fixed.get_concrete_function()
    names = sorted(concrete.structured_outputs)  # the frozen function returns them flat, in nest (sorted) order
    frozen = convert_variables_to_constants_v2(concrete)
    named = tf.function(lambda images: dict(zip(names, frozen(images))), input_signature=[spec], autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([named.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    flat = converter.convert()
    with open(path, "wb") as f:
        f.write(flat)
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated" (still shipped with TF 2.21)
        warnings.simplefilter("ignore")
        ops = {d["op_name"] for d in tf.lite.Interpreter(model_content=flat)._get_ops_details()}
    return sorted(op for op in ops if op.startswith("Flex"))


class _DropTableCollectionWarning(logging.Filter):
    def filter(self, record):
        return "Issue encountered when serializing table_initializer" not in record.getMessage()


@contextlib.contextmanager
def _quiet_table_collection_warning():
    """tf.saved_model.save warns that it cannot serialise the TF1 ``table_initializer`` collection of an eagerly
    created lookup table ("probably safe to ignore"): the table is restored from the object graph anyway."""
    logger, dropper = logging.getLogger("tensorflow"), _DropTableCollectionWarning()
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)


def _write_savedmodel(model, spec: ServingSpec, directory: str, resize: bool, tflite: bool, source: str) -> None:
    """The SavedModel, assets and extras of one version into the (empty) ``directory``."""
    import keras

    with tempfile.TemporaryDirectory(prefix="hdas-export-") as scratch:
        asset = None
        if spec.class_names is not None:
            asset = os.path.join(scratch, CLASS_NAMES_ASSET)
            with open(asset, "w", encoding="utf-8") as f:
                f.write("\n".join(spec.class_names) + "\n")
        serving = _Serving(model, spec, resize, asset)
        archive = keras.export.ExportArchive()
        if serving.table is not None:
            archive.track(serving.table)  # the table and its asset file (no model variables: only used ones)
        archive.add_endpoint(SIGNATURE, serving.serve, input_signature=[serving.input_spec()])
        with _quiet_table_collection_warning():
            archive.write_out(directory, verbose=False)
    extras = os.path.join(directory, EXTRAS_DIR)
    os.makedirs(extras, exist_ok=True)
    with _quiet_table_collection_warning():  # the TFLite converter saves a SavedModel of its own
        flex_ops = _write_tflite(serving, os.path.join(extras, TFLITE_FILE)) if tflite else None
    outputs = ["logits", "probabilities", "classes"] + (["class_names"] if spec.class_names is not None else [])
    doc = {"format": EXPORT_FORMAT, "source": source, "signature": SIGNATURE, "input": "images",
           "input_dtype": "uint8", "outputs": outputs, "image_size": list(spec.image_size),
           "resize": bool(resize), "resize_method": spec.resize_method if resize else None,
           "crop_fraction": spec.crop_fraction if resize and spec.resize_method == "center_crop" else None,
           "mean": list(spec.mean), "std": list(spec.std),
           "class_names": None if spec.class_names is None else list(spec.class_names),
           "num_classes": _num_classes(model, spec), "metadata_sources": spec.sources,
           "tflite": TFLITE_FILE if tflite else None, "tflite_flex_ops": flex_ops,
           "tensorflow": tf.__version__, "keras": keras.__version__,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with open(os.path.join(extras, "export.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def version_dir(export_dir: str, version: int) -> str:
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 1:
        raise ExportError(f"version must be an integer >= 1 (TF Serving reads only integer folders), "
                          f"received {version!r}")
    return os.path.join(export_dir, str(int(version)))


def _check_free(target: str, overwrite: bool) -> None:
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite (overwrite=True) to replace it, or "
                              "choose another --version")


def export_model(model, spec: ServingSpec, export_dir: str, version: int = 1, *, resize: bool = False,
                 overwrite: bool = False, tflite: bool = False, source: str = "") -> str:
    """Writes ``export_dir/version/`` atomically (module docstring) and returns its path.

    Args:
      model: a built Keras model whose ``call(images, training=False)`` returns logits for normalised float
        images (``ChainNetwork``, ``StageNetwork``).
      spec: ServingSpec.
      resize: accept any image size and bring it to ``spec.image_size`` in the graph.
      overwrite: replace an existing version.
      tflite: also write ``assets.extra/model.tflite``.
      source: recorded in export.json (the model file or run directory).
    """
    target = version_dir(export_dir, version)
    _check_free(target, overwrite)
    n = _num_classes(model, spec)
    if spec.class_names is not None and len(spec.class_names) != n:
        raise ExportError(f"{len(spec.class_names)} class names for a model with {n} classes")
    made_base = not os.path.isdir(export_dir)
    os.makedirs(export_dir, exist_ok=True)
    # Hidden and not an integer: TF Serving never takes it for a version.
    tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=export_dir)
    try:
        # TF's own kernels in the exported graphs: TF Serving and TFLite know none of hdas_tf's CPU ops.
        with tracing.options(native_kernels=True):
            _write_savedmodel(model, spec, tmp, resize, tflite, source)
        _check_free(target, overwrite)
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=f".old-{version}-", dir=export_dir)
            os.rename(target, os.path.join(old, "v"))
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(os.path.join(old, "v"), target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_base and not os.listdir(export_dir):
            os.rmdir(export_dir)
        raise
    return target


def run_model_path(run_dir: str) -> str:
    """The final trained model of a training run; ExportError (saying why) if there is none."""
    if not os.path.isdir(run_dir):
        raise ExportError(f"run directory {run_dir} does not exist")
    path = os.path.join(run_dir, MODEL_FILE)
    if os.path.isfile(path):
        return path
    ckpt = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    state = (f"it holds checkpoints (latest {ckpt}) but training has not finished; finish it (python -m "
             f"hdas_tf.train --flagfile={os.path.join(run_dir, 'flags.cfg')} --run_dir={run_dir} --resume)"
             if ckpt else "it holds no training checkpoints either; is it a training run directory?")
    raise ExportError(f"{run_dir} has no trained model ({MODEL_FILE}, written at the end of training): {state}")


def load_model(path: str):
    """Loads a ``.keras`` evaluation network (registers the hdas_tf layers first)."""
    import keras

    import hdas_tf.nn.eval_networks  # noqa: F401  (registers the serializable layers)

    if not os.path.isfile(path):
        raise ExportError(f"model file {path} does not exist")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot load {path} as a Keras model: {e}") from e


def export(export_dir: str, *, run_dir: str | None = None, model: str | None = None, version: int = 1,
           overwrite: bool = False, resize: bool = False, tflite: bool = False, data_info: str | None = None,
           **spec_args) -> str:
    """Exports a run's final model (``run_dir``) or a ``.keras`` file (``model``) to ``export_dir/version``.
    ``spec_args``: mean, std, image_size, class_names, resize_method, crop_fraction (see resolve_spec).
    Every check (existing version, missing model, missing metadata) runs before anything is written."""
    if (run_dir is None) == (model is None):
        raise ExportError("pass exactly one of run_dir (a training run) or model (a .keras file)")
    _check_free(version_dir(export_dir, version), overwrite)
    path = run_model_path(run_dir) if run_dir is not None else model
    network = load_model(path)
    spec = resolve_spec(network, model_path=path, run_dir=run_dir, data_info=data_info, **spec_args)
    return export_model(network, spec, export_dir, version, resize=resize, overwrite=overwrite, tflite=tflite,
                        source=os.path.abspath(run_dir if run_dir is not None else path))

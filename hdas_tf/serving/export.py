"""Export a trained evaluation network as a TF Serving SavedModel (DESIGN §8), optionally with a TFLite model.

``python -m hdas_tf.export --run_dir=RUN --export_dir=BASE [--version=N]`` (or ``--model=FILE.keras``)
writes ``BASE/N/`` — the layout TF Serving watches (``--model_base_path=BASE``; only integer folders are
versions). The version is written to a hidden temporary folder ``BASE/.tmp-export-*`` (never taken for a
version) and renamed into place, so a server never sees a half-written version; an existing version is refused
unless ``--overwrite`` (then the old folder is renamed away, the new one renamed in, the old one deleted).

The SavedModel (tag ``serve``) has one signature, ``serving_default`` (``tensorflow/serving/predict``):

- input ``images``: uint8 ``[batch, H, W, 3]``, batch unknown, H×W the trained input size. With ``--resize``
  H and W are unknown too and the graph brings other sizes to the trained one the way the training run's
  evaluation did: a bilinear (antialiased) resize, or for ImageNet-style runs (``augment=imagenet``) a resize
  that makes the trained size ``crop_fraction`` (224/256) of the image followed by a centre crop.
- inside the graph: ``(images / 255 - mean) / std`` with the training data's constants, the network with
  ``training=False`` (BatchNorm running statistics, no drop path, the auxiliary head is not run and its
  variables are not saved).
- outputs ``logits`` float32 ``[batch, classes]``, ``probabilities`` float32 (softmax), ``classes`` int64
  ``[batch]`` (argmax) and, when the data set has class names, ``class_names`` string ``[batch]``: the
  predicted class's name, looked up in a table initialised from the asset ``assets/class_names.txt`` (one name
  per line, line i = class i).

``BASE/N/assets.extra/`` (the SavedModel folder for files the graph does not load; TF Serving ignores it) holds
``export.json`` (input size, mean, std, class names, resize mode, where each came from, versions) and, with
``--tflite``, ``model.tflite``: the same network at the fixed trained size with the outputs ``logits``,
``probabilities``, ``classes`` (no class-name table, no resize), batch resizable.

Where the normalisation constants, input size and class names come from (first found wins, per value):

1. flags ``--mean``, ``--std`` (three values each, [0, 1] scale), ``--image_size`` (``S`` or ``H,W``),
   ``--class_names``;
2. a data-info JSON: ``--data_info=FILE``, else ``data_info.json`` beside the model (a run directory's);
   keys ``mean``, ``std``, ``image_shape`` ([H, W, 3]) or ``image_size``, optional ``class_names``,
   ``eval_transform`` (``resize`` / ``center_crop``), ``eval_crop_fraction``: :func:`write_data_info` writes it
   from a ``data.DataInfo``;
3. with ``--run_dir``: the run's ``config.json`` (``dataset``, ``data_dir``, ``image_size``, ``augment``) through
   ``data.dataset_info`` (the data set must still be readable);
4. the input size only: the shape the saved model was built with.

Mean and std have no fallback: an export without them fails before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

from hdas_tf.nn import primitives as P

EXPORT_FORMAT = "hdas_tf.export/1"
DATA_INFO_FORMAT = "hdas_tf.data_info/1"
DATA_INFO_FILE = "data_info.json"
MODEL_FILE = "model.keras"
CLASS_NAMES_ASSET = "class_names.txt"
EXTRAS_DIR = "assets.extra"
TFLITE_FILE = "model.tflite"
SIGNATURE = "serving_default"
RESIZE_METHODS = ("resize", "center_crop")
DEFAULT_CROP_FRACTION = 224 / 256  # data.IMAGENET_EVAL_CROP_FRACTION
_TMP_PREFIX = ".tmp-export-"


class ExportError(ValueError):
    """The model or its metadata cannot be exported as asked (nothing has been written)."""


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """What the serving graph needs besides the network.

    Args:
      image_size: (H, W) the network was trained at.
      mean, std: per-channel normalisation constants on the [0, 1] scale.
      class_names: one name per class, or None.
      resize_method: how ``resize=True`` exports bring other sizes to ``image_size``: "resize" (bilinear,
        antialiased) or "center_crop" (resize so that image_size is ``crop_fraction`` of it, centre crop).
      crop_fraction: see ``resize_method``.
      sources: where each value came from (recorded in export.json).
    """

    image_size: tuple
    mean: tuple
    std: tuple
    class_names: tuple | None = None
    resize_method: str = "resize"
    crop_fraction: float = DEFAULT_CROP_FRACTION
    sources: dict = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) < 1:
            raise ExportError(f"image_size must be (H, W) of positive integers, received {self.image_size!r}")
        object.__setattr__(self, "image_size", size)
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or not all(np.isfinite(value)):
                raise ExportError(f"{name} must be three finite numbers (one per RGB channel, [0, 1] scale), "
                                  f"received {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ExportError(f"std must be positive, received {self.std}")
        if self.class_names is not None:
            names = tuple(str(n) for n in self.class_names)
            bad = [n for n in names if "\n" in n or "\r" in n]
            if bad:
                raise ExportError(f"class names cannot contain line breaks (the asset is one name per line): {bad}")
            object.__setattr__(self, "class_names", names)
        if self.resize_method not in RESIZE_METHODS:
            raise ExportError(f"resize_method must be one of {RESIZE_METHODS}, received {self.resize_method!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ExportError(f"crop_fraction must be in (0, 1], received {self.crop_fraction}")


# === metadata ===


def data_info_dict(info, augment: str | None = None) -> dict:
    """The data-info JSON of a ``data.DataInfo`` (what a training run should write as ``data_info.json``).
    ``augment`` is the run's augmentation: "imagenet" runs evaluate with resize + centre crop."""
    doc = {"format": DATA_INFO_FORMAT, **dataclasses.asdict(info)}
    doc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in doc.items()}
    doc["eval_transform"] = "center_crop" if augment == "imagenet" else "resize"
    doc["eval_crop_fraction"] = DEFAULT_CROP_FRACTION
    return doc


def write_data_info(path: str, info, augment: str | None = None) -> None:
    """Writes :func:`data_info_dict` atomically to ``path`` (a file, or a directory → ``data_info.json``)."""
    from hdas_tf.files import write_json_atomic

    if os.path.isdir(path):
        path = os.path.join(path, DATA_INFO_FILE)
    write_json_atomic(path, data_info_dict(info, augment))


def _parse_image_size(value):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    try:
        value = [int(v) for v in value]
    except (TypeError, ValueError) as e:
        raise ExportError(f"image_size must be S or H,W, received {value!r}") from e
    if len(value) == 3 and value[2] == 3:  # an image shape [H, W, 3]
        value = value[:2]
    if len(value) == 1:
        value = value * 2
    if len(value) != 2:
        raise ExportError(f"image_size must be S or H,W, received {value!r}")
    return tuple(value)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ExportError(f"{path} must hold a JSON object")
    return doc


def _from_data_info(doc: dict) -> dict:
    out = {k: doc[k] for k in ("mean", "std") if doc.get(k) is not None}
    if "class_names" in doc:  # null: the data set has no class names (authoritative, not "unknown")
        out["class_names"] = doc["class_names"]
    size = doc.get("image_size", doc.get("image_shape"))
    if size is not None:
        out["image_size"] = _parse_image_size(size)
    if doc.get("eval_transform") is not None:
        out["resize_method"] = doc["eval_transform"]
    if doc.get("eval_crop_fraction") is not None:
        out["crop_fraction"] = float(doc["eval_crop_fraction"])
    return out


def _from_run_config(config_path: str) -> dict:
    """Metadata from a training run's config.json via ``data.dataset_info`` (opens the data set)."""
    from hdas_tf.data import pipeline as data

    cfg = _read_json(config_path)
    if "dataset" not in cfg:
        raise ExportError(f"{config_path} names no dataset")
    try:
        info = data.dataset_info(cfg["dataset"], data_dir=cfg.get("data_dir"), image_size=cfg.get("image_size"),
                                 manual_dir=cfg.get("manual_dir"))
    except Exception as e:  # noqa: BLE001  (any failure to open the data set is reported the same way)
        raise ExportError(f"the run's data set {cfg['dataset']!r} (from {config_path}) cannot be opened to read its "
                          f"normalisation constants: {e}") from e
    return _from_data_info(data_info_dict(info, cfg.get("augment")))


def _built_image_size(model):
    try:
        shape = (model.get_build_config() or {}).get("input_shape")
    except Exception:  # noqa: BLE001  (a model without a build config)
        return None
    if shape is None or len(shape) != 4 or None in tuple(shape)[1:3]:
        return None
    return (int(shape[1]), int(shape[2]))


def resolve_spec(model=None, *, model_path: str | None = None, run_dir: str | None = None,
                 data_info: str | None = None, mean=None, std=None, image_size=None, class_names=None,
                 resize_method: str | None = None, crop_fraction: float | None = None) -> ServingSpec:
    """The :class:`ServingSpec` of a model from arguments, a data-info JSON, a run's config and the model
    (module docstring: first found wins, per value). Raises ExportError if mean/std or the size are unknown."""
    given = {k: v for k, v in dict(mean=mean, std=std, image_size=_parse_image_size(image_size),
                                   class_names=class_names, resize_method=resize_method,
                                   crop_fraction=crop_fraction).items() if v is not None}
    values, sources = dict(given), {k: "arguments" for k in given}

    def fill(found: dict, source: str):
        for k, v in found.items():
            if k not in values:
                values[k], sources[k] = v, source

    info_path = data_info
    if info_path is None and model_path is not None:
        beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), DATA_INFO_FILE)
        info_path = beside if os.path.isfile(beside) else None
    if info_path is not None:
        fill(_from_data_info(_read_json(info_path)), os.path.abspath(info_path))
    config_path = os.path.join(run_dir, "config.json") if run_dir is not None else None
    if config_path is not None and os.path.isfile(config_path) and not {"mean", "std", "class_names"} <= set(values):
        try:
            fill(_from_run_config(config_path), os.path.abspath(config_path))
        except ExportError:
            if "mean" not in values or "std" not in values:
                raise
    built = _built_image_size(model) if model is not None else None
    if built is not None:
        fill({"image_size": built}, "model build shape")
    missing = [k for k in ("mean", "std", "image_size") if k not in values]
    if missing:
        where = f"{DATA_INFO_FILE} beside the model" + (f" or {config_path}" if config_path else "")
        raise ExportError(f"the export needs the training data's {', '.join(missing)}, and neither the flags "
                          f"(--{', --'.join(missing)}) nor {data_info or where} give them")
    return ServingSpec(**values, sources=sources)


# === the serving graph ===


def _resize_to(images, size):
    """Bilinear antialiased resize of a float32 0..255 batch to ``size`` (skipped when it already matches), as
    the training run's evaluation transform (``data._eval_transform``)."""
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[1], size[0]), tf.equal(shape[2], size[1]))

    def resize():
        out = tf.image.resize(images, size, method="bilinear", antialias=True)
        return tf.clip_by_value(out, 0.0, 255.0)

    out = tf.cond(same, lambda: images, resize)
    return tf.ensure_shape(out, [None, size[0], size[1], 3])


def _resize_and_center_crop(images, size, crop_fraction):
    """``data.resize_and_center_crop`` on a batch: resize so that ``size`` is ``crop_fraction`` of the image,
    then the centre ``size`` crop (float32, 0..255)."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    scale = tf.maximum(size[0] / height, size[1] / width) / crop_fraction
    new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size[0])
    new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size[1])
    resized = tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top, left = (new_h - size[0]) // 2, (new_w - size[1]) // 2
    out = tf.clip_by_value(resized[:, top:top + size[0], left:left + size[1], :], 0.0, 255.0)
    return tf.ensure_shape(out, [None, size[0], size[1], 3])


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
                x = _resize_and_center_crop(x, self.spec.image_size, self.spec.crop_fraction)
            else:
                x = _resize_to(x, self.spec.image_size)
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


# === versions and the public entry points ===


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
        with P.options(native_kernels=True):
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


def benchmark_saved_model(path: str, batch: int, steps: int = 20, warmup: int = 2, image_size=None,
                          seed: int = 0) -> dict:
    """Images/s of ``serving_default`` of the SavedModel at ``path`` on random uint8 images (in this process).

    The size is the signature's, else ``image_size``, else export.json's. Returns batch, steps,
    images_per_s, ms_per_batch and first_call_s (the first call includes any graph warm-up)."""
    fn = tf.saved_model.load(path).signatures[SIGNATURE]
    shape = fn.structured_input_signature[1]["images"].shape
    h, w = shape[1], shape[2]
    if h is None or w is None:
        size = _parse_image_size(image_size)
        if size is None:
            size = _parse_image_size(_read_json(os.path.join(path, EXTRAS_DIR, "export.json"))["image_size"])
        h, w = size
    images = tf.constant(np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8))
    t0 = time.perf_counter()
    fn(images=images)["probabilities"].numpy()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn(images=images)["probabilities"].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(images=images)["probabilities"].numpy()
    seconds = time.perf_counter() - t0
    return {"batch": batch, "steps": steps, "images_per_s": batch * steps / seconds,
            "ms_per_batch": 1000 * seconds / steps, "first_call_s": first}

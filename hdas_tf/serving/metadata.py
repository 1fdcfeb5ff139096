"""What the serving graph needs besides the network (:class:`ServingSpec`: input size, normalisation, class
names, resize mode) and where it comes from: arguments, a data-info JSON, a run's config, the model's build shape.

A training run writes ``data_info.json`` (:func:`write_data_info`) so that an export needs no access to the data.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from hdas_tf import data
from hdas_tf.errors import UserError
from hdas_tf.files import write_json_atomic

DATA_INFO_FORMAT = "hdas_tf.data_info/1"
DATA_INFO_FILE = "data_info.json"
RESIZE_METHODS = ("resize", "center_crop")
DEFAULT_CROP_FRACTION = data.IMAGENET_EVAL_CROP_FRACTION


class ExportError(UserError):
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
    if os.path.isdir(path):
        path = os.path.join(path, DATA_INFO_FILE)
    write_json_atomic(path, data_info_dict(info, augment))


def _image_size(value):
    """``data.parse_image_size``, its DataError reported as an ExportError (the CLI prints those)."""
    try:
        return data.parse_image_size(value)
    except data.DataError as e:
        raise ExportError(str(e)) from e


def read_json(path: str) -> dict:
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
        out["image_size"] = _image_size(size)
    if doc.get("eval_transform") is not None:
        out["resize_method"] = doc["eval_transform"]
    if doc.get("eval_crop_fraction") is not None:
        out["crop_fraction"] = float(doc["eval_crop_fraction"])
    return out


def _from_run_config(config_path: str) -> dict:
    """Metadata from a training run's config.json via ``data.dataset_info`` (opens the data set)."""
    cfg = read_json(config_path)
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
    """The :class:`ServingSpec` of a model; each value from the first place that gives it:

    1. the arguments;
    2. the data-info JSON ``data_info``, else ``data_info.json`` beside ``model_path``: keys ``mean``, ``std``,
       ``image_shape`` ([H, W, 3]) or ``image_size``, optional ``class_names``, ``eval_transform``,
       ``eval_crop_fraction`` (:func:`write_data_info` writes it);
    3. ``run_dir/config.json`` through ``data.dataset_info`` (the data set must still be readable);
    4. the input size only: the shape the model was built with.

    Mean and std have no fallback: ExportError if they or the size are unknown (nothing is written)."""
    given = {k: v for k, v in dict(mean=mean, std=std, image_size=_image_size(image_size),
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
        fill(_from_data_info(read_json(info_path)), os.path.abspath(info_path))
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

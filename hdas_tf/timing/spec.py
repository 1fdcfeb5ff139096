"""What one benchmark measures: ``BenchmarkSpec`` (the flags of ``python -m hdas_tf.benchmark``) and the
``SearchConfig`` / ``TrainConfig`` it stands for."""

from __future__ import annotations

import dataclasses

from hdas_tf.errors import UserError

CONFIGS = ("cell_search", "stage_search", "distribution_search", "train", "inference", "input")
SEARCH_CONFIGS = {"cell_search": "cell", "stage_search": "stage", "distribution_search": "distribution"}
# Global batch when --batch is not given: the paper's search batch, the training row, a serving batch.
DEFAULT_BATCH = {"cell_search": 64, "stage_search": 64, "distribution_search": 64, "train": 32, "inference": 64,
                 "input": 64}
# (C, L) when --init_channels / --layers are not given: the search supernet and the CIFAR evaluation network.
DEFAULT_CHANNELS = {"cell_search": 16, "stage_search": 16, "distribution_search": 16, "train": 36, "inference": 36}
DEFAULT_LAYERS = {"cell_search": 8, "train": 20, "inference": 20}
# SearchConfig / TrainConfig fields a BenchmarkSpec sets from its own flags (--config_override may not set them).
OWN_FIELDS = {"search": "--config", "cells": "--cells", "stage": "--stage", "genotype": "--genotype",
              "stage_lengths": "--stage_lengths", "min_cells": "--min_cells", "max_cells": "--max_cells",
              "batch_size": "--batch", "unrolled": "--order", "init_channels": "--init_channels",
              "layers": "--layers", "seed": "--seed", "grappler": "--grappler", "strategy": "--strategy",
              "image_size": "--image_size", "pool_bn": "--pool_bn", "auxiliary": "--auxiliary",
              "drop_path_rate": "--drop_path_rate", "dataset": "--dataset", "data_dir": "--data_dir"}


class SpecError(UserError):
    """A benchmark that cannot run as asked; the message names the flag (the main reports it as a usage error)."""


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """What to measure; the fields are the flags of the same names. Invalid values raise ValueError naming
    the flag.

    Args:
      config: one of ``CONFIGS``.
      batch: global batch. Defaults per config (``DEFAULT_BATCH``).
      order: 1 or 2 (second-order architecture gradient). Search configurations only.
      steps, warmup: timed steps and untimed warm-up steps (after the first, tracing step).
      cells: "shared" or "stage_specific" α groups of the cell supernet.
      stage: "shared" or "stage_specific" stage α (stage and distribution searches).
      genotype: the fixed cells of a stage/distribution search, or the evaluation network's genotype.
      stage_lengths: cells per stage of the stage supernet. Defaults to (6, 6, 6).
      min_cells, max_cells: candidate stage lengths of the distribution (β) search; L = 3·max_cells + 2.
      init_channels, layers: C and L. Defaults per config (``DEFAULT_CHANNELS``, ``DEFAULT_LAYERS``).
      image_size, num_classes: synthetic input size and label range.
      seed: seeds the data and the model (``run.runtime.configure_runtime``).
      strategy: "default" or "mirrored" (every logical CPU; see ``--logical_cpus``).
      grappler: TF graph optimisation (off by default, as the library).
      skip_parts: skip the architecture-only, weight-only and forward+backward measurements.
      pool_bn, auxiliary, drop_path_rate: as ``SearchConfig`` / ``TrainConfig``.
      dataset, data_dir: the data set of the ``input`` configuration.
      overrides: extra ``SearchConfig`` (search) or ``TrainConfig`` (train, inference) fields by name, as text;
        checked against the dataclass's fields and parsed by their type.
    """

    config: str = "cell_search"
    batch: int | None = None
    order: int = 1
    steps: int = 10
    warmup: int = 3
    cells: str = "shared"
    stage: str = "stage_specific"
    genotype: str = "DARTS_V2"
    stage_lengths: tuple[int, int, int] | None = None
    min_cells: int = 4
    max_cells: int = 8
    init_channels: int | None = None
    layers: int | None = None
    image_size: int = 32
    num_classes: int = 10
    seed: int = 0
    strategy: str = "default"
    grappler: bool = False
    skip_parts: bool = False
    pool_bn: bool = True
    auxiliary: bool = True
    drop_path_rate: float = 0.2
    dataset: str = "digits"
    data_dir: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        def fail(flag, message):
            value = getattr(self, flag)
            shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
            raise ValueError(f"--{flag}={shown}: {message}")

        choices = dict(config=CONFIGS, cells=("shared", "stage_specific"), stage=("shared", "stage_specific"),
                       strategy=("default", "mirrored"))
        for flag, allowed in choices.items():
            if getattr(self, flag) not in allowed:
                fail(flag, f"must be one of {', '.join(allowed)}")
        if self.order not in (1, 2):
            fail("order", "must be 1 (first order) or 2 (second order, unrolled)")
        if self.config not in SEARCH_CONFIGS and self.order != 1:
            fail("order", "applies to the search configurations only")
        for flag, low in dict(steps=1, warmup=0, min_cells=2, max_cells=2, image_size=8, num_classes=2).items():
            if getattr(self, flag) < low:
                fail(flag, f"must be >= {low}")
        for flag, low in dict(batch=1, init_channels=1, layers=3).items():
            if getattr(self, flag) is not None and getattr(self, flag) < low:
                fail(flag, f"must be >= {low}")
        if self.min_cells > self.max_cells:
            raise ValueError(f"--min_cells={self.min_cells} must not exceed --max_cells={self.max_cells}")
        if self.stage_lengths is not None and (len(self.stage_lengths) != 3 or min(self.stage_lengths) < 1):
            fail("stage_lengths", "must be three positive integers, e.g. 6,6,6")
        if not 0.0 <= self.drop_path_rate < 1.0:
            fail("drop_path_rate", "must be in [0, 1)")
        if self.config in ("stage_search", "distribution_search", "train", "inference"):
            from hdas_tf.space import registry

            try:
                cells = registry.resolve(self.genotype).cells
            except ValueError as e:
                raise ValueError(f"--genotype: {e}") from None
            if cells is None:
                fail("genotype", "has no cells; pass a cell genotype such as DARTS_V2")
        config_fields(self)  # checks the overrides

    @property
    def global_batch(self) -> int:
        return self.batch if self.batch is not None else DEFAULT_BATCH[self.config]


def config_fields(spec: BenchmarkSpec) -> dict:
    """``spec.overrides`` parsed into ``SearchConfig`` (search) or ``TrainConfig`` (train, inference) values.

    Only fields the config class has are accepted, so a flag such as ``--recompute`` is forwarded exactly when
    the library version has the field. Raises ValueError naming the field otherwise.
    """
    if not spec.overrides:
        return {}
    if spec.config == "input":
        raise ValueError(f"--config_override: the input configuration has no model configuration to set "
                         f"({', '.join(name for name, _ in spec.overrides)})")
    cls = _config_class(spec.config)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for name, text in spec.overrides:
        flag = "--recompute" if name == "recompute" else f"--config_override={name}=..."
        if name in OWN_FIELDS:
            raise ValueError(f"{flag}: set it with {OWN_FIELDS[name]}")
        if name not in known:
            raise ValueError(f"{flag}: {cls.__name__} has no field {name!r} in this version "
                             f"(fields: {', '.join(known)})")
        values[name] = _parse_field(known[name], text, flag)
    return values


def _config_class(config: str):
    if config in SEARCH_CONFIGS:
        from hdas_tf.search.config import SearchConfig

        return SearchConfig
    from hdas_tf.train.config import TrainConfig

    return TrainConfig


def _parse_field(field: dataclasses.Field, text: str, flag: str):
    """Text → a dataclass field's value, by its annotation (``from __future__ import annotations``: a string)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if text.strip().lower() == "none" and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("tuple"):
            return tuple(int(t) for t in text.split(","))
    except ValueError as e:
        shown = f"--config_override={field.name}={text}" if flag.startswith("--config_override") else f"{flag}={text}"
        raise ValueError(f"{shown}: cannot parse as {kind} ({e})") from None
    return text


def search_config(spec: BenchmarkSpec):
    """The ``SearchConfig`` of a search configuration."""
    from hdas_tf.search.config import SearchConfig

    kind = SEARCH_CONFIGS[spec.config]
    return SearchConfig(
        search=kind, cells=spec.cells, stage=spec.stage, genotype=None if kind == "cell" else spec.genotype,
        stage_lengths=spec.stage_lengths or ((6, 6, 6) if kind == "stage" else None), min_cells=spec.min_cells,
        max_cells=spec.max_cells, batch_size=spec.global_batch, unrolled=spec.order == 2,
        init_channels=spec.init_channels or DEFAULT_CHANNELS[spec.config],
        layers=spec.layers or DEFAULT_LAYERS.get(spec.config, 8), image_size=spec.image_size, pool_bn=spec.pool_bn,
        seed=spec.seed, grappler=spec.grappler, strategy=spec.strategy, **config_fields(spec))


def train_config(spec: BenchmarkSpec):
    """The ``TrainConfig`` of the train and inference configurations (the DARTS CIFAR recipe otherwise)."""
    from hdas_tf.train.config import TrainConfig

    return TrainConfig(genotype=spec.genotype, init_channels=spec.init_channels or DEFAULT_CHANNELS[spec.config],
                       layers=spec.layers or DEFAULT_LAYERS[spec.config], pool_bn=spec.pool_bn,
                       auxiliary=spec.auxiliary, drop_path_rate=spec.drop_path_rate, batch_size=spec.global_batch,
                       image_size=spec.image_size, seed=spec.seed, grappler=spec.grappler, strategy=spec.strategy,
                       **config_fields(spec))

"""How fast and how big the real search and training steps are (issue 7); ``python -m hdas_tf.benchmark``
is its command line.

For a named configuration the harness builds the *real* model and step — the supernet and
``ArchitectureSearchModel`` through ``search_job.build_search``, or an evaluation network and
``TrainingModel`` as ``train_job`` assembles them — feeds it seeded synthetic batches through
``strategy.experimental_distribute_dataset`` like the search loop, and times each call:

1. ``build_s``: constructing the model, its variables and optimizer slots (from shapes, no forward pass);
2. the first step (tracing, graph optimisation, first execution); ``first_step_s`` is the wall time from
   the start of model construction to the end of that step — the number a user waits for;
3. ``--warmup`` untimed steps, then ``--steps`` timed ones; ``step_s_median`` is their median and
   ``img_per_s`` = batch / ``step_s_median`` (training images: the weight half of a search batch);
4. search configurations only (unless ``--skip_parts``): the architecture step alone, the weight step alone
   (``ArchitectureSearchModel.arch_step`` / ``weight_step``; ``train_step`` is the two in sequence), and a
   plain forward+backward of the supernet (cross-entropy in training mode, ``tape.gradient`` w.r.t. every
   trainable variable, no update) on the validation and on the training half of a batch. Each part gets one
   tracing call, ``--warmup`` warm-up calls and ``--steps`` timed calls; the two plain passes are timed in
   rounds with the search step (step, validation pass, training pass; ``measure_rounds``), and
   ``overhead_ratio`` = the median of those steps (``overhead_step_s_median``) ÷ (forward+backward median on
   the validation batch + the same on the training batch): how much a bi-level search step costs beyond the
   two plain passes it cannot avoid (first order: ~1 is ideal), with the host's drift cancelling out.

Every timed call blocks on its result (``float`` of each output), so steps never overlap, and the batch is
fetched before the clock starts. ``peak_rss_mib`` is the process's peak resident memory at the end;
``peak_rss_step_mib`` the same right after the timed steps, before the parts (peak RSS is monotone, so
that is the step's own peak). Because peak RSS is per process, the standard set (``--standard``) runs each
row in its own subprocess, one after another, and writes ``results.json`` and a ``README.md`` table
comparing against the PyTorch reference (``STANDARD_ROWS``).

Usage:
  ```bash
  python -m hdas_tf.benchmark --config=cell_search --batch=16 --json      # one row, JSON on stdout
  python -m hdas_tf.benchmark --standard --out_dir=benchmarks              # every row, hours on 2 cores
  python -m hdas_tf.benchmark --standard --rows=train_b32,input_b64 --quick
  ```
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import logging

CONFIGS = ("cell_search", "stage_search", "distribution_search", "train", "inference", "input")
SEARCH_CONFIGS = {"cell_search": "cell", "stage_search": "stage", "distribution_search": "distribution"}
# Global batch when --batch is not given: the paper's search batch, the training row, a serving batch.
DEFAULT_BATCH = {"cell_search": 64, "stage_search": 64, "distribution_search": 64, "train": 32, "inference": 64,
                 "input": 64}
# (C, L) when --init_channels / --layers are not given: the search supernet and the CIFAR evaluation network.
DEFAULT_CHANNELS = {"cell_search": 16, "stage_search": 16, "distribution_search": 16, "train": 36, "inference": 36}
DEFAULT_LAYERS = {"cell_search": 8, "train": 20, "inference": 20}
# The learning-rate schedules need an epoch length; the synthetic stream has none, so CIFAR-10's is used:
# 25,000 images in the weight half of the search split, 50,000 in the training set.
SEARCH_EPOCH_IMAGES = 25_000
TRAIN_EPOCH_IMAGES = 50_000
# SearchConfig / TrainConfig fields the harness sets from its own flags (--config_override may not set them).
OWN_FIELDS = {"search": "--config", "cells": "--cells", "stage": "--stage", "genotype": "--genotype",
              "stage_lengths": "--stage_lengths", "min_cells": "--min_cells", "max_cells": "--max_cells",
              "batch_size": "--batch", "unrolled": "--order", "init_channels": "--init_channels",
              "layers": "--layers", "seed": "--seed", "grappler": "--grappler", "strategy": "--strategy",
              "image_size": "--image_size", "pool_bn": "--pool_bn", "auxiliary": "--auxiliary",
              "drop_path_rate": "--drop_path_rate", "dataset": "--dataset", "data_dir": "--data_dir"}


# === the standard set: rows and the PyTorch reference ===


@dataclasses.dataclass(frozen=True)
class Reference:
    """The PyTorch reference on this kind of machine (2 cores, median of 10 steps after 3 warm-up, 32×32, 10
    classes): seconds per step, training images per second, peak RSS in GiB; and the issue's goals against
    it: the least speed-up (img/s ÷ the reference's) and, where there is one, the largest memory ratio (peak
    RSS ÷ the reference's)."""

    step_s: float
    img_per_s: float
    peak_rss_gib: float
    speedup_goal: float
    memory_goal: float | None = None


@dataclasses.dataclass(frozen=True)
class StandardRow:
    """One row of the standard set: a name for ``--rows``, what it is, its flags, the reference if any, and the
    arguments of the same configuration for the plain-PyTorch script (``TORCH_SCRIPT``; empty: none), with
    ``GENOTYPE_FILE`` standing for a JSON file of the row's ``--genotype``."""

    name: str
    description: str
    args: tuple[str, ...]
    reference: Reference | None = None
    pytorch: tuple[str, ...] = ()


# The plain-PyTorch versions of the reference configurations (benchmarks/torch_reference/README.md), timed on
# the same host next to the rows with ``--pytorch_python``: the fixed reference figures come from one unnamed
# host, and hosts differ by up to 3× (BUILD_NOTES "Speed").
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                            "torch_reference", "darts_torch.py")
GENOTYPE_FILE = "{genotype_file}"


def _cell(order, batch, cells="shared", recompute=False):
    return ("--config=cell_search", f"--cells={cells}", "--init_channels=16", "--layers=8", f"--order={order}",
            f"--batch={batch}") + (("--recompute=true",) if recompute else ())


def _torch_cell(order, batch, cells="shared"):
    return ("--config=cell_search", f"--cells={cells}", f"--order={order}", f"--batch={batch}")


def _stage(order, batch):
    return ("--config=stage_search", "--stage=stage_specific", "--genotype=DARTS_V2", "--stage_lengths=6,6,6",
            "--init_channels=16", f"--order={order}", f"--batch={batch}")


def _torch_stage(order, batch):
    return ("--config=stage_search", f"--genotype={GENOTYPE_FILE}", f"--order={order}", f"--batch={batch}")


def _distribution(max_cells, batch):
    return ("--config=distribution_search", "--stage=stage_specific", "--genotype=DARTS_V2",
            f"--max_cells={max_cells}", "--min_cells=4", "--init_channels=16", "--order=1", f"--batch={batch}")


def _torch_distribution(max_cells, batch):
    return ("--config=distribution_search", f"--genotype={GENOTYPE_FILE}", f"--max_cells={max_cells}",
            "--min_cells=4", f"--batch={batch}")


# The references of the cell supernet, shared by the rows with and without --recompute. The goals: the
# first-order cell search 4× at batch 16 and 3× at batch 64 at no more than half the peak memory; every
# second-order, stage and distribution search 3×; the training step 2×.
_CELL_O1_B16_REF = Reference(7.14, 2.24, 2.6, 4.0, 0.5)
_CELL_O1_B64_REF, _CELL_O2_B64_REF = Reference(19.9, 3.22, 9.2, 3.0, 0.5), Reference(45.3, 1.41, 12.4, 3.0)

_EVAL_NET = ("--genotype=DARTS_V2", "--init_channels=36", "--layers=20", "--auxiliary")

STANDARD_ROWS = (
    StandardRow("cell_o1_b16", "DARTS cell supernet C=16 L=8, first order", _cell(1, 16), _CELL_O1_B16_REF,
                _torch_cell(1, 16)),
    # The memory goal at batch 16 (half the reference's peak) is met with --recompute only.
    StandardRow("cell_o1_b16_recompute", "DARTS cell supernet C=16 L=8, first order, --recompute",
                _cell(1, 16, recompute=True), _CELL_O1_B16_REF, _torch_cell(1, 16)),
    # Batch 64 with --recompute (the flag for large batches: about a third of the memory, 15–28 % slower); the
    # rows without it show the other side of the trade, against the same reference.
    StandardRow("cell_o1_b64", "DARTS cell supernet C=16 L=8, first order, --recompute", _cell(1, 64, recompute=True),
                _CELL_O1_B64_REF, _torch_cell(1, 64)),
    StandardRow("cell_o1_b64_keep", "DARTS cell supernet C=16 L=8, first order, no recompute", _cell(1, 64),
                _CELL_O1_B64_REF, _torch_cell(1, 64)),
    StandardRow("cell_o2_b16", "DARTS cell supernet C=16 L=8, second order", _cell(2, 16),
                Reference(14.4, 1.11, 3.4, 3.0), _torch_cell(2, 16)),
    StandardRow("cell_o2_b64", "DARTS cell supernet C=16 L=8, second order, --recompute", _cell(2, 64, recompute=True),
                _CELL_O2_B64_REF, _torch_cell(2, 64)),
    StandardRow("cell_o2_b64_keep", "DARTS cell supernet C=16 L=8, second order, no recompute", _cell(2, 64),
                _CELL_O2_B64_REF, _torch_cell(2, 64)),
    StandardRow("hcdas_o1_b64", "H^c-DAS cell supernet (5 α groups) C=16 L=8, first order, --recompute",
                _cell(1, 64, "stage_specific", recompute=True), Reference(24.9, 2.58, 9.5, 3.0, 0.5),
                _torch_cell(1, 64, "stage_specific")),
    StandardRow("stage_o1_b16", "H^s-DAS stage supernet (DARTS_V2 cells) C=16 L=20 (6-6-6), first order",
                _stage(1, 16), Reference(2.84, 5.63, 2.1, 3.0), _torch_stage(1, 16)),
    StandardRow("stage_o1_b64", "H^s-DAS stage supernet (DARTS_V2 cells) C=16 L=20 (6-6-6), first order",
                _stage(1, 64), Reference(11.3, 5.68, 7.5, 3.0), _torch_stage(1, 64)),
    StandardRow("stage_o2_b16", "H^s-DAS stage supernet (DARTS_V2 cells) C=16 L=20 (6-6-6), second order",
                _stage(2, 16), Reference(7.30, 2.19, 2.7, 3.0), _torch_stage(2, 16)),
    StandardRow("stage_o2_b64", "H^s-DAS stage supernet (DARTS_V2 cells) C=16 L=20 (6-6-6), second order",
                _stage(2, 64), Reference(31.5, 2.03, 9.6, 3.0), _torch_stage(2, 64)),
    StandardRow("distribution_n6_o1_b64", "cell-distribution supernet (β) L=20 (max_cells=6), first order",
                _distribution(6, 64), Reference(11.8, 5.41, 8.0, 3.0), _torch_distribution(6, 64)),
    StandardRow("train_b32", "DARTS_V2 evaluation network C=36 L=20 with aux, training step",
                ("--config=train", *_EVAL_NET, "--batch=32"), Reference(2.41, 13.3, 2.9, 2.0),
                ("--config=train", f"--genotype={GENOTYPE_FILE}", "--batch=32")),
    StandardRow("inference_b1", "DARTS_V2 evaluation network C=36 L=20, inference",
                ("--config=inference", *_EVAL_NET, "--batch=1")),
    StandardRow("inference_b64", "DARTS_V2 evaluation network C=36 L=20, inference",
                ("--config=inference", *_EVAL_NET, "--batch=64")),
    StandardRow("input_b64", "search input pipeline (digits, zipped weight/architecture halves)",
                ("--config=input", "--dataset=digits", "--batch=64")),
    # No fixed reference: the PyTorch script times it on the host all the same.
    StandardRow("distribution_n8_o1_b64", "cell-distribution supernet (β) L=26 (max_cells=8), first order",
                _distribution(8, 64), pytorch=_torch_distribution(8, 64)),
)
ROWS_BY_NAME = {row.name: row for row in STANDARD_ROWS}
# Flags a --standard run hands on to every row when given explicitly; the rows fix ROW_FLAGS.
PASSED_TO_ROWS = ("steps", "warmup", "seed", "strategy", "logical_cpus", "grappler", "skip_parts")
ROW_FLAGS = ("config", "batch", "order", "cells", "stage", "genotype", "stage_lengths", "min_cells", "max_cells",
             "init_channels", "layers", "image_size", "num_classes", "pool_bn", "auxiliary", "drop_path_rate",
             "dataset", "data_dir")
QUICK_STEPS, QUICK_WARMUP = 2, 1


# === one benchmark ===


class SpecError(ValueError):
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
      seed: seeds the data and the model (``search_job.configure_runtime``).
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
            from hdas_tf.space import genotypes

            try:
                cells = genotypes.resolve(self.genotype).cells
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


def machine_facts() -> dict:
    """CPU model, logical cores, total memory and library versions: what a number was measured on."""
    import keras
    import numpy as np
    import tensorflow as tf

    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = next((int(line.split()[1]) for line in f if line.startswith("MemTotal:")), None)
        memory_gib = None if kib is None else round(kib / 2**20, 2)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu_model or platform.processor() or None, "logical_cores": os.cpu_count(),
            "usable_cores": usable, "memory_total_gib": memory_gib, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def code_version() -> str | None:
    """The commit of the checkout holding this file (``git describe --always``), with ``-dirty`` when tracked
    files other than ``benchmarks/`` differ from it, or None outside a git checkout.

    ``benchmarks/`` is left out of the check because a standard run rewrites its own results there after every
    row: a run from a clean checkout would otherwise call every row after the first one dirty.
    """
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("describe", "--always")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmarks")
    return commit + "-dirty" if changed is None or changed else commit


def synthetic_dataset(kind: str, batch: int, image_size: int, num_classes: int, seed: int):
    """An infinite, prefetched tf.data stream of seeded random batches: float32 images [B, S, S, 3] (standard
    normal, like normalised pixels) and int32 labels in [0, num_classes).

    ``kind``: "search" gives ``((x_train, y_train), (x_val, y_val))`` (the search step's input), "train"
    ``(x, y)``, "images" ``x`` alone. Two distinct batches per stream alternate, so consecutive steps see
    different data while no time goes into generating it.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def stream():
        x = rng.standard_normal((2 * batch, image_size, image_size, 3), dtype=np.float32)
        y = rng.integers(0, num_classes, size=2 * batch, dtype=np.int32)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)

    if kind == "search":
        ds = tf.data.Dataset.zip((stream(), stream()))
    elif kind == "train":
        ds = stream()
    elif kind == "images":
        ds = stream().map(lambda x, y: x)
    else:
        raise ValueError(f"synthetic_dataset: kind must be search, train or images, received {kind!r}")
    return ds.prefetch(2)


def distributed_step(strategy, fn):
    """``trainer.distributed_step``: the search loop's step function (imported late: TensorFlow is heavy)."""
    from hdas_tf.run.strategy import distributed_step as step

    return step(strategy, fn)


def forward_backward(model):
    """Per-replica plain forward+backward of ``model`` on ``(images, labels)``: cross-entropy in training mode
    averaged over the global batch, ``tape.gradient`` w.r.t. every trainable variable (weights and α/β), no
    update. Returns the sum of all gradient entries, which forces every gradient to be computed."""
    import keras
    import tensorflow as tf

    variables = list(model.trainable_variables)

    def fn(batch):
        images, labels = batch
        n = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32),
                                                                       from_logits=True)
            loss = tf.reduce_sum(per_example) / tf.cast(tf.shape(labels)[0] * n, tf.float32)
        grads = tape.gradient(loss, [v.value for v in variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return fn


def _block(out) -> dict | float:
    """Waits for a step's outputs by converting them to Python floats."""
    if isinstance(out, dict):
        return {k: float(v) for k, v in out.items()}
    return float(out)


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times(stat_path: str = "/proc/stat") -> dict | None:
    """The machine's cumulative CPU time by kind (clock ticks, all cores) from the ``cpu`` line of /proc/stat,
    or None where there is none (not Linux)."""
    try:
        with open(stat_path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 1 + len(CPU_FIELDS):
        return None
    return dict(zip(CPU_FIELDS, (int(v) for v in fields[1:1 + len(CPU_FIELDS)])))


def cpu_shares(before: dict | None, after: dict | None) -> dict | None:
    """Shares of the machine's CPU time between two ``cpu_times`` snapshots: ``steal`` (time the hypervisor
    ran other guests on our virtual CPUs: a contended host, the numbers are pessimistic), ``idle`` (cores
    this benchmark left unused) and ``busy`` (the rest: this process and anything else running)."""
    if before is None or after is None:
        return None
    delta = {k: after[k] - before[k] for k in CPU_FIELDS}
    total = sum(delta.values())
    if total <= 0:
        return None
    idle = (delta["idle"] + delta["iowait"]) / total
    return {"steal": delta["steal"] / total, "idle": idle, "busy": 1.0 - idle - delta["steal"] / total}


def measure(fn, batches, steps: int, warmup: int) -> dict:
    """Calls ``fn(next(batches))`` once (tracing), ``warmup`` more times, then ``steps`` timed times.

    Each call blocks on its result and its batch is fetched before the clock starts. Returns ``first_s``
    (the first call), ``first_end`` (``time.perf_counter()`` at its end), ``step_s`` (the timed calls),
    ``median_s``, ``last`` (the last call's outputs as floats) and ``cpu`` (``cpu_shares`` over the timed
    calls, None where /proc/stat is missing).
    """
    return measure_rounds({"fn": (fn, batches)}, steps, warmup)["fn"]


def measure_rounds(parts: dict, steps: int, warmup: int) -> dict:
    """:func:`measure` for several functions at once, in rounds: each round calls every ``fn(next(batches))``
    of ``parts`` (name → (fn, batches)) once, in order, so that a drift of the host over the minutes of a
    measurement weighs on all of them alike. One first round and ``warmup`` untimed rounds, then ``steps``
    timed rounds. Returns name → :func:`measure`'s fields (``cpu`` is over all timed rounds)."""
    out = {name: {"first_s": None, "first_end": None, "step_s": [], "last": None} for name in parts}
    ticks = None
    for i in range(1 + warmup + steps):
        for name, (fn, batches) in parts.items():
            batch = next(batches)
            if i == warmup + 1 and ticks is None:
                ticks = cpu_times()
            t0 = time.perf_counter()
            last = _block(fn(batch))
            t1 = time.perf_counter()
            part = out[name]
            part["last"] = last
            if i == 0:
                part["first_s"], part["first_end"] = t1 - t0, t1
            elif i > warmup:
                part["step_s"].append(t1 - t0)
    cpu = cpu_shares(ticks, cpu_times())
    for part in out.values():
        part.update(median_s=statistics.median(part["step_s"]), cpu=cpu)
    return out


def run_benchmark(spec: BenchmarkSpec) -> dict:
    """Measures ``spec`` in this process and returns the result dict (see the module docstring; the fields are
    listed in README "Benchmark"). Call in a fresh process when peak memory matters."""
    from hdas_tf.run.runtime import peak_rss_mib
    from hdas_tf.run.strategy import make_strategy

    t_wall = time.perf_counter()
    strategy = make_strategy(spec.strategy)
    replicas = strategy.num_replicas_in_sync
    batch = spec.global_batch
    if batch % replicas:
        raise SpecError(f"--batch={batch} must be divisible by the {replicas} replicas of --strategy={spec.strategy}")
    result = {"config": spec.config, "batch": batch, "order": spec.order if spec.config in SEARCH_CONFIGS else None,
              "steps": spec.steps, "warmup": spec.warmup, "seed": spec.seed, "strategy": spec.strategy,
              "replicas": replicas, "grappler": spec.grappler, "image_size": spec.image_size,
              "num_classes": spec.num_classes}
    if spec.config in SEARCH_CONFIGS:
        result.update(_bench_search(spec, strategy))
    elif spec.config == "train":
        result.update(_bench_train(spec, strategy))
    elif spec.config == "inference":
        result.update(_bench_inference(spec, strategy))
    else:
        result.update(_bench_input(spec, strategy))
    result["img_per_s"] = batch / result["step_s_median"]
    result["peak_rss_mib"] = peak_rss_mib()
    result.setdefault("peak_rss_step_mib", result["peak_rss_mib"])
    result["wall_s"] = time.perf_counter() - t_wall
    import tensorflow as tf

    result["threads"] = {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                         "intra_op": tf.config.threading.get_intra_op_parallelism_threads()}
    from hdas_tf.nn import cpu_kernels

    result["kernels"] = cpu_kernels.in_use()  # hdas_tf's CPU kernels or TF's (HDAS_TF_KERNELS)
    result["machine"] = machine_facts()
    result["code_version"] = code_version()
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return result


def _timing_fields(timing: dict, t_start: float, build_s: float) -> dict:
    return {"build_s": build_s, "first_step_s": timing["first_end"] - t_start, "first_call_s": timing["first_s"],
            "step_s": timing["step_s"], "step_s_median": timing["median_s"], "last_step": timing["last"],
            "cpu_during_steps": timing["cpu"]}


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


def _synthetic_info(spec: BenchmarkSpec):
    from hdas_tf.data.pipeline import DataInfo

    return DataInfo(name="synthetic", num_classes=spec.num_classes, image_shape=(spec.image_size, spec.image_size, 3),
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), class_names=None, num_train=TRAIN_EPOCH_IMAGES,
                    num_test=0)


def _bench_search(spec: BenchmarkSpec, strategy) -> dict:
    import numpy as np

    from hdas_tf.search import job as search_job
    from hdas_tf.space.search_space import log10_space_size
    from hdas_tf.run.runtime import peak_rss_mib

    cfg = search_config(spec)
    search_job.configure_runtime(cfg)
    info = _synthetic_info(spec)
    batches = iter(strategy.experimental_distribute_dataset(
        synthetic_dataset("search", spec.global_batch, spec.image_size, spec.num_classes, spec.seed)))
    t_start = time.perf_counter()
    space, model, _ = search_job.build_search(cfg, strategy, info, max(1, SEARCH_EPOCH_IMAGES // spec.global_batch))
    build_s = time.perf_counter() - t_start
    logging.info("built %s in %.1fs; tracing the search step", space, build_s)
    step = distributed_step(strategy, model.train_step)
    timing = measure(step, batches, spec.steps, spec.warmup)
    out = {"init_channels": cfg.init_channels, "layers": space.layers,
           "cells": cfg.cells if cfg.search == "cell" else None,
           "stage": cfg.stage if cfg.search != "cell" else None, "genotype": cfg.genotype,
           "stage_lengths": list(space.stage_lengths) if cfg.search == "stage" else None,
           "min_cells": cfg.min_cells if cfg.search == "distribution" else None,
           "max_cells": cfg.max_cells if cfg.search == "distribution" else None,
           "weight_params": int(sum(int(np.prod(v.shape)) for v in model.weight_variables)),
           "arch_params": space.num_arch_params(), "log10_space_size": log10_space_size(space),
           "search_config": search_job.json_ready(cfg), **_timing_fields(timing, t_start, build_s),
           "peak_rss_step_mib": peak_rss_mib()}
    logging.info("search step: first %.1fs, median %.3fs", out["first_step_s"], out["step_s_median"])
    if spec.skip_parts:
        return out
    for part, fn in (("arch", model.arch_step), ("weight", model.weight_step)):
        t = measure(distributed_step(strategy, fn), batches, spec.steps, spec.warmup)
        out.update({f"{part}_first_s": t["first_s"], f"{part}_s": t["step_s"], f"{part}_s_median": t["median_s"]})
        logging.info("%s step alone: median %.3fs", part, t["median_s"])
    # The overhead ratio compares the step with the two plain passes in rounds (step, val pass, train pass):
    # measured one after another, minutes apart, a ±15 % drift of the host decided the ratio (BUILD_NOTES
    # "Speed", session of 2026-12-04). The step is traced already; the passes get their first call here.
    fwdbwd = distributed_step(strategy, forward_backward(model))
    val, train = (b[1] for b in batches), (b[0] for b in batches)  # ((x_train, y_train), (x_val, y_val))
    t = measure_rounds({"overhead_step": (step, batches), "fwdbwd_val": (fwdbwd, val),
                        "fwdbwd_train": (fwdbwd, train)}, spec.steps, spec.warmup)
    out.update({"overhead_step_s": t["overhead_step"]["step_s"],
                "overhead_step_s_median": t["overhead_step"]["median_s"]})
    for half in ("val", "train"):
        part = t[f"fwdbwd_{half}"]
        out.update({f"fwdbwd_{half}_first_s": part["first_s"], f"fwdbwd_{half}_s": part["step_s"],
                    f"fwdbwd_{half}_s_median": part["median_s"]})
        logging.info("forward+backward on the %s batch: median %.3fs", half, part["median_s"])
    out["overhead_ratio"] = out["overhead_step_s_median"] / (out["fwdbwd_val_s_median"]
                                                             + out["fwdbwd_train_s_median"])
    return out


def train_config(spec: BenchmarkSpec):
    """The ``TrainConfig`` of the train and inference configurations (the DARTS CIFAR recipe otherwise)."""
    from hdas_tf.train.config import TrainConfig

    return TrainConfig(genotype=spec.genotype, init_channels=spec.init_channels or DEFAULT_CHANNELS[spec.config],
                       layers=spec.layers or DEFAULT_LAYERS[spec.config], pool_bn=spec.pool_bn,
                       auxiliary=spec.auxiliary, drop_path_rate=spec.drop_path_rate, batch_size=spec.global_batch,
                       image_size=spec.image_size, seed=spec.seed, grappler=spec.grappler, strategy=spec.strategy,
                       **config_fields(spec))


def _build_eval_network(cfg, num_classes: int):
    """The evaluation network as ``train_job.TrainJob`` builds it (call inside the strategy scope)."""
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.train.model import combine_genotypes

    return build_eval_network(combine_genotypes(cfg.genotype, cfg.stage_genotype), num_classes, cfg.init_channels,
                              cfg.layers, cfg.layout, auxiliary=cfg.auxiliary, pool_bn=cfg.pool_bn,
                              drop_path=cfg.drop_path_rate > 0)


def _network_fields(cfg, network, image_shape) -> dict:
    from hdas_tf.run.run_dir import json_ready
    from hdas_tf.train.job import network_sizes

    sizes = network_sizes(network, image_shape)
    return {"genotype": cfg.genotype, "init_channels": cfg.init_channels, "layers": cfg.layers,
            "auxiliary": cfg.auxiliary, "weight_params": sizes["params_with_aux"] if cfg.auxiliary else sizes["params"],
            "params": sizes["params"], "macs": sizes["macs"], "arch_params": None, "train_config": json_ready(cfg)}


def _bench_train(spec: BenchmarkSpec, strategy) -> dict:
    from hdas_tf.search import job as search_job
    from hdas_tf.train.job import build_training

    cfg = train_config(spec)
    search_job.configure_runtime(cfg)
    info = _synthetic_info(spec)
    batches = iter(strategy.experimental_distribute_dataset(
        synthetic_dataset("train", spec.global_batch, spec.image_size, spec.num_classes, spec.seed)))
    t_start = time.perf_counter()
    with strategy.scope():
        network, model = build_training(cfg, info.num_classes, info.image_shape,
                                        max(1, TRAIN_EPOCH_IMAGES // spec.global_batch))
    if cfg.drop_path_rate > 0:
        network.drop_path_rate.assign(cfg.drop_path_rate)  # the last epoch's rate of the linear ramp
    build_s = time.perf_counter() - t_start
    logging.info("built %s in %.1fs; tracing the training step", type(network).__name__, build_s)
    timing = measure(distributed_step(strategy, model.train_step), batches, spec.steps, spec.warmup)
    return {**_network_fields(cfg, network, info.image_shape), "drop_path_rate": cfg.drop_path_rate,
            **_timing_fields(timing, t_start, build_s)}


def _bench_inference(spec: BenchmarkSpec, strategy) -> dict:
    import tensorflow as tf

    from hdas_tf.search import job as search_job

    cfg = train_config(spec)
    search_job.configure_runtime(cfg)
    info = _synthetic_info(spec)
    batches = iter(strategy.experimental_distribute_dataset(
        synthetic_dataset("images", spec.global_batch, spec.image_size, spec.num_classes, spec.seed)))
    t_start = time.perf_counter()
    with strategy.scope():
        network = _build_eval_network(cfg, info.num_classes)
        network.build((None, *info.image_shape))
    build_s = time.perf_counter() - t_start

    def forward(images):
        return tf.reduce_sum(tf.cast(network(images, training=False), tf.float32))

    timing = measure(distributed_step(strategy, forward), batches, spec.steps, spec.warmup)
    return {**_network_fields(cfg, network, info.image_shape), **_timing_fields(timing, t_start, build_s)}


def _bench_input(spec: BenchmarkSpec, strategy) -> dict:
    """The search input pipeline alone, zipped and distributed as ``search_job.run_search`` does."""
    import tensorflow as tf

    from hdas_tf.data import pipeline as data
    from hdas_tf.search import job as search_job
    from hdas_tf.search.config import SearchConfig

    search_job.configure_runtime(SearchConfig(seed=spec.seed, grappler=spec.grappler))
    t_start = time.perf_counter()
    weight_ds, arch_ds, info = data.search_datasets(spec.dataset, batch_size=spec.global_batch, seed=spec.seed,
                                                    data_dir=spec.data_dir, image_size=spec.image_size)
    batches = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.zip((weight_ds, arch_ds)).prefetch(2)))
    build_s = time.perf_counter() - t_start

    def fetch(_):
        # The batch is produced once next() returns; reading one label is the blocking result.
        labels = next(batches)[0][1]
        values = labels.values if hasattr(labels, "values") else (labels,)
        return tf.cast(values[0][0], tf.float32)

    timing = measure(fetch, itertools.repeat(None), spec.steps, spec.warmup)
    # Here build_s is building the pipeline, and first_step_s runs to the end of the first batch.
    return {"dataset": spec.dataset, "image_shape": list(info.image_shape), "weight_params": None,
            "arch_params": None, "images_per_element": 2 * spec.global_batch,
            **_timing_fields(timing, t_start, build_s)}


# === reports ===


def format_report(result: dict) -> str:
    """A one-run result as a readable table (what the main prints without ``--json``)."""
    title = f"{result['config']}: batch {result['batch']}"
    if result.get("order"):
        title += f", order {result['order']}"
    if result.get("init_channels"):
        title += f", C={result['init_channels']}, L={result['layers']}"
    lines = [f"{title}, {result['replicas']} replica(s)",
             f"{'part':<22}{'first call s':>14}{'median s':>12}{'img/s':>10}"]

    def row(name, first, median):
        lines.append(f"{name:<22}{_num(first, 2):>14}{_num(median, 4):>12}{_num(result['batch'] / median, 2):>10}")

    row("step", result["first_call_s"], result["step_s_median"])
    for part, label in (("arch", "architecture step"), ("weight", "weight step"),
                        ("fwdbwd_val", "fwd+bwd (val batch)"), ("fwdbwd_train", "fwd+bwd (train batch)")):
        if f"{part}_s_median" in result:
            row(label, result[f"{part}_first_s"], result[f"{part}_s_median"])
    if result.get("overhead_ratio") is not None:
        rounds = "overhead_step_s_median" in result  # rows of 8da2abf and older divide s/step
        step = result["overhead_step_s_median"] if rounds else result["step_s_median"]
        lines.append(f"overhead ratio (step {step:.4f} s / (fwd+bwd val + fwd+bwd train)"
                     f"{', timed in rounds' if rounds else ''}): {result['overhead_ratio']:.2f}")
    lines.append(f"build {result['build_s']:.1f} s, first step {result['first_step_s']:.1f} s after the start of "
                 f"construction; peak RSS {result['peak_rss_mib'] / 1024:.2f} GiB (after the steps "
                 f"{result['peak_rss_step_mib'] / 1024:.2f} GiB)")
    if result.get("weight_params") is not None:
        lines.append(f"weights {result['weight_params']:,}"
                     + (f", architecture scalars {result['arch_params']:,}" if result.get("arch_params") else ""))
    lines.append("step times (s): " + ", ".join(f"{t:.4f}" for t in result["step_s"]))
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def _sig(value, digits: int = 3) -> str:
    """``digits`` significant figures, never in exponent notation."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    import math

    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


TABLE_HEADER = ("| row | configuration | batch | order | s/step | img/s | peak RSS GiB | first step s | overhead | "
                "ref s/step | ref img/s | ref RSS GiB | speed-up | memory ratio | steal % |")


def standard_table(results: list[dict]) -> str:
    """The markdown table of a standard run: one line per result dict (``row`` names its ``STANDARD_ROWS``
    entry, whose reference is looked up; a dict with ``error`` is a failed row).

    Peak RSS is ``peak_rss_step_mib`` (the process's peak after the timed steps, before the part measurements),
    the number comparable with the reference's run of search steps. speed-up = img/s ÷ reference img/s;
    memory ratio = peak RSS ÷ reference peak RSS.
    """
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for r in results:
        row = ROWS_BY_NAME.get(r.get("row"))
        description = row.description if row else r.get("description", r.get("config", "?"))
        ref = row.reference if row else None
        batch = r.get("batch") or _flag_value(row, "batch")
        if "error" in r:
            cells = [r.get("row", "?"), description, batch, "—", "failed (see results.json)"] + ["—"] * 4
            ours_img = ours_gib = None
        else:
            ours_img = r["img_per_s"]
            ours_gib = r.get("peak_rss_step_mib", r["peak_rss_mib"]) / 1024
            cells = [r.get("row", "—"), description, r["batch"], r.get("order") or "—", _sig(r["step_s_median"]),
                     _sig(ours_img), f"{ours_gib:.2f}", _sig(r["first_step_s"]), _sig(r.get("overhead_ratio"))]
        if ref is None:
            cells += ["—"] * 5
        else:
            cells += [_sig(ref.step_s), _sig(ref.img_per_s), f"{ref.peak_rss_gib:.1f}",
                      "—" if ours_img is None else f"{ours_img / ref.img_per_s:.2f}×",
                      "—" if ours_gib is None else f"{ours_gib / ref.peak_rss_gib:.2f}"]
        cpu = r.get("cpu_during_steps")
        cells.append("—" if not cpu else f"{100 * cpu['steal']:.1f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


PYTORCH_HEADER = ("| row | s/step | PyTorch s/step | speed-up | speed goal | peak RSS GiB | PyTorch peak RSS GiB | "
                  "memory ratio | memory goal |")

PYTORCH_INTRO = """## The same rows in PyTorch on this host

The PyTorch reference figures above come from one unnamed host, and the hosts this project has run on differ
by up to 3× in either library's step times (BUILD_NOTES "Speed"). Here each row's configuration was also
timed in plain PyTorch (`benchmarks/torch_reference/darts_torch.py`, torch {torch}, {threads} threads, the
same step counts), in its own process right before the row, so that both see the same host. speed-up =
PyTorch s/step ÷ hdas_tf s/step (the batches are equal, so it is the img/s ratio); memory ratio = hdas_tf peak
RSS ÷ PyTorch peak RSS. The goals are the issue's, applied to the PyTorch run of this host.
"""


def _goal(value: float | None, goal: float | None, at_least: bool, unit: str = "") -> str:
    if goal is None:
        return "—"
    bound = f"{'≥' if at_least else '≤'} {goal:g}{unit}"
    if value is None:
        return bound
    met = value >= goal if at_least else value <= goal
    return f"{bound} {'met' if met else 'NOT met'}"


def pytorch_table(results: list[dict]) -> str:
    """The same-host comparison of a standard run: one line per result that carries a ``pytorch`` entry."""
    lines = [PYTORCH_HEADER, "|" + "---|" * (PYTORCH_HEADER.count("|") - 1)]
    for r in results:
        torch_r = r.get("pytorch")
        if torch_r is None:
            continue
        row = ROWS_BY_NAME.get(r.get("row"))
        ref = row.reference if row else None
        ours_ok, torch_ok = "error" not in r, "error" not in torch_r
        ours_gib = r.get("peak_rss_step_mib", r.get("peak_rss_mib", 0)) / 1024 if ours_ok else None
        torch_gib = torch_r["peak_rss_mib"] / 1024 if torch_ok else None
        speedup = torch_r["step_s_median"] / r["step_s_median"] if ours_ok and torch_ok else None
        ratio = ours_gib / torch_gib if ours_ok and torch_ok else None
        cells = [r.get("row", "—"), _sig(r["step_s_median"]) if ours_ok else "failed",
                 _sig(torch_r["step_s_median"]) if torch_ok else "failed (see results.json)",
                 "—" if speedup is None else f"{speedup:.2f}×",
                 _goal(speedup, ref.speedup_goal if ref else None, True, "×"),
                 "—" if ours_gib is None else f"{ours_gib:.2f}", "—" if torch_gib is None else f"{torch_gib:.2f}",
                 "—" if ratio is None else f"{ratio:.2f}", _goal(ratio, ref.memory_goal if ref else None, False)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _flag_value(row: StandardRow | None, name: str):
    if row is None:
        return "—"
    return next((a.split("=", 1)[1] for a in row.args if a.startswith(f"--{name}=")), "—")


README_INTRO = """# Benchmarks

Written by `bash scripts/benchmark.sh` (= `python -m hdas_tf.benchmark --standard --out_dir=benchmarks`);
`results.json` beside it holds every row's full result (per-step times, part timings, model sizes, machine).
Do not edit by hand: rerun the standard set (or `--rows=NAME,...` to redo some rows, which merges them into
the existing `results.json`).

Method (`hdas_tf/benchmarking.py`; BUILD_NOTES "Speed"): each row runs in its own process, one after another
(peak RSS is per process). The real model and step are built and fed seeded synthetic 32×32×3 batches with
10 classes. The first step (tracing, graph optimisation, first run) is followed by warm-up steps, then the
timed steps; every call blocks on its result.

- s/step: the median of the timed steps. img/s: the batch divided by that median (training images; the
  architecture half of a search batch is not counted).
- peak RSS: the process's peak resident memory right after the timed steps (before the part measurements).
- first step s: from the start of model construction to the end of the first step.
- overhead: search step ÷ (plain forward+backward of the supernet on the validation batch + the same on the
  training batch), medians of the three timed in rounds (step, validation pass, training pass) in the same
  process, so that the host's drift weighs on both sides (rows of code before the rounds, 8da2abf and
  older, timed the passes after the step and divide s/step).
- ref: the PyTorch reference on this kind of machine (2 cores, median of 10 steps after 3 warm-up).
  speed-up = img/s ÷ ref img/s (above 1 is faster); memory ratio = peak RSS ÷ ref peak RSS (below 1 is
  smaller).
- steal %: the share of the machine's CPU time the hypervisor gave to other guests during the timed steps
  (/proc/stat; "—" where it was not recorded). Above a few per cent the host was contended and the row's
  times are pessimistic. BUILD_NOTES "Speed" says under what conditions the committed run was taken.
"""


def render_readme(results: list[dict], machine: dict | None = None, date: str | None = None) -> str:
    """``benchmarks/README.md``: the method, the machine and the table (or a note that nothing was run yet)."""
    parts = [README_INTRO]
    if not results:
        parts.append("No results yet: they are written here by a real run of the standard set on the machine it "
                     "describes.\n")
        return "\n".join(parts)
    if machine:
        parts.append(f"Machine: {machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores, "
                     f"{machine.get('memory_total_gib')} GiB; TensorFlow {machine.get('tensorflow')}, Keras "
                     f"{machine.get('keras')}, Python {machine.get('python')}." + (f" Run {date}." if date else ""))
    done = [r for r in results if "error" not in r]
    versions = sorted({str(r.get("code_version")) for r in done})
    counts = sorted({(r["steps"], r["warmup"]) for r in done})
    if counts:
        parts.append("Timed steps after warm-up: " + "; ".join(f"{s} after {w}" for s, w in counts)
                     + f". Code: {', '.join(versions)}.")
    parts.append("\n" + standard_table(results) + "\n")
    timed = [r["pytorch"] for r in results if "error" not in r.get("pytorch", {"error": None})]
    if timed:
        parts.append(PYTORCH_INTRO.format(torch=timed[0].get("torch"), threads=timed[0].get("threads")))
        parts.append(pytorch_table(results) + "\n")
    return "\n".join(parts)


# === the standard set ===


def row_command(row: StandardRow, passed: list[str], quick: bool) -> list[str]:
    """The subprocess command line of a standard row: its flags, then ``passed`` (which win), ``--json``."""
    quick_args = [f"--steps={QUICK_STEPS}", f"--warmup={QUICK_WARMUP}"] if quick else []
    return [sys.executable, "-m", "hdas_tf.benchmark", *row.args, *quick_args, *passed, "--json"]


def run_row(row: StandardRow, passed: list[str], quick: bool) -> dict:
    """Runs one standard row in a fresh subprocess; returns its result dict (``error`` set if it failed)."""
    command = row_command(row, passed, quick)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    base = {"row": row.name, "description": row.description, "command": command[1:], "process_wall_s": wall,
            "reference": None if row.reference is None else dataclasses.asdict(row.reference)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        return {**base, "error": f"exit status {proc.returncode}: {tail}", "batch": _flag_value(row, "batch")}
    return {**base, **json.loads(lines[-1])}


def pytorch_command(row: StandardRow, python: str, genotype_file: str, passed: list[str], quick: bool) -> list[str]:
    """The command that times ``row``'s configuration in plain PyTorch: ``TORCH_SCRIPT`` under ``python``
    with the row's PyTorch arguments and the same timed and warm-up step counts as the row."""
    counts = [f"--steps={QUICK_STEPS}", f"--warmup={QUICK_WARMUP}"] if quick else []
    counts += [a for a in passed if a.startswith(("--steps=", "--warmup="))]
    return [python, TORCH_SCRIPT, *(a.replace(GENOTYPE_FILE, genotype_file) for a in row.pytorch), *counts]


def run_pytorch(command: list[str]) -> dict:
    """Runs one PyTorch timing process; its JSON result with ``command`` and ``process_wall_s``, or
    ``{"command", "error"}`` when it failed (the row's own measurement goes on)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:  # the interpreter is missing or not executable
        return {"command": command[1:], "error": str(e)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        return {"command": command[1:], "error": f"exit status {proc.returncode}: {tail}"}
    return {**json.loads(lines[-1]), "command": command[1:], "process_wall_s": time.perf_counter() - t0}


def _genotype_files(rows: list[StandardRow], directory: str) -> dict[str, str]:
    """A JSON file per ``--genotype`` the rows' PyTorch commands read (the PyTorch script reads files only)."""
    from hdas_tf.space import genotypes

    files = {}
    for row in rows:
        name = _flag_value(row, "genotype")
        if any(GENOTYPE_FILE in a for a in row.pytorch) and name not in files:
            files[name] = os.path.join(directory, f"genotype_{len(files)}.json")
            with open(files[name], "w") as f:
                f.write(genotypes.resolve(name).to_json())
    return files


def run_standard(names: list[str] | None, out_dir: str, passed: list[str], quick: bool = False,
                 pytorch_python: str | None = None) -> list[dict]:
    """Runs standard rows (all, or ``names``) one after another, each in its own process, rewriting
    ``out_dir/results.json`` and ``out_dir/README.md`` after every row. A subset merges into an existing
    ``results.json`` (rows not rerun are kept). Returns the rows' results in standard order.

    With ``pytorch_python`` (an interpreter with torch installed), each row that has a PyTorch counterpart is
    timed in PyTorch as well, in its own process right before the row, so that the pair sees the same host
    state; the result is the row's ``pytorch`` entry. Rows with the same PyTorch configuration (with and
    without ``--recompute``) share one PyTorch run.
    """
    import tempfile

    rows = [ROWS_BY_NAME[n] for n in names] if names else list(STANDARD_ROWS)
    path = os.path.join(out_dir, "results.json")
    kept = {}
    if names and os.path.exists(path):
        with open(path) as f:
            kept = {r["row"]: r for r in json.load(f).get("results", [])}
    machine = machine_facts()
    with tempfile.TemporaryDirectory() as scratch:
        genotype_files = _genotype_files(rows, scratch) if pytorch_python else {}
        torch_runs = {}
        for i, row in enumerate(rows, 1):
            torch_result = None
            if pytorch_python and row.pytorch:
                command = pytorch_command(row, pytorch_python, genotype_files.get(_flag_value(row, "genotype"), ""),
                                          passed, quick)
                if tuple(row.pytorch) not in torch_runs:
                    print(f"[{i}/{len(rows)}] {row.name}: PyTorch {' '.join(row.pytorch)} ...", file=sys.stderr,
                          flush=True)
                    torch_runs[tuple(row.pytorch)] = run_pytorch(command)
                torch_result = torch_runs[tuple(row.pytorch)]
                print(f"[{i}/{len(rows)}] {row.name}: PyTorch "
                      + (f"FAILED: {torch_result['error']}" if "error" in torch_result else
                         f"{torch_result['step_s_median']:.3f} s/step, peak RSS "
                         f"{torch_result['peak_rss_mib'] / 1024:.2f} GiB"), file=sys.stderr, flush=True)
            kept[row.name] = _one_row(i, len(rows), row, passed, quick, torch_result)
            _write_run(out_dir, path, machine, quick, [kept[r.name] for r in STANDARD_ROWS if r.name in kept])
    return [kept[r.name] for r in rows]


def _one_row(i: int, n: int, row: StandardRow, passed: list[str], quick: bool, torch_result: dict | None) -> dict:
    """Runs one row of a standard run (with its PyTorch result attached, if any) and reports it on stderr."""
    print(f"[{i}/{n}] {row.name}: {row.description} ...", file=sys.stderr, flush=True)
    result = run_row(row, passed, quick)
    if torch_result is not None:
        result["pytorch"] = torch_result
    if "error" in result:
        print(f"[{i}/{n}] {row.name} FAILED: {result['error']}", file=sys.stderr, flush=True)
    else:
        print(f"[{i}/{n}] {row.name}: {result['step_s_median']:.3f} s/step, {result['img_per_s']:.2f} img/s, peak "
              f"RSS {result['peak_rss_step_mib'] / 1024:.2f} GiB, first step {result['first_step_s']:.1f} s (process "
              f"{result['process_wall_s']:.0f} s)", file=sys.stderr, flush=True)
    return result


def _write_run(out_dir: str, path: str, machine: dict, quick: bool, ordered: list[dict]) -> None:
    """results.json and README.md of the run so far (rewritten after every row: a stopped run keeps its rows)."""
    from hdas_tf.files import write_json_atomic

    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(path, {"format": "hdas_tf.benchmark/1", "date": date, "machine": machine, "quick": quick,
                             "results": ordered})
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(render_readme(ordered, machine, date))

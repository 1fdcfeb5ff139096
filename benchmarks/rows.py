"""The standard benchmark set as data: each row's flags for ``python -m hdas_tf.benchmark``, the PyTorch reference
figures and the issue's goals against them, and the same configuration's arguments for the plain-PyTorch script."""

from __future__ import annotations

import dataclasses


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
    arguments of the same configuration for the plain-PyTorch script (``pytorch_pairing.TORCH_SCRIPT``; empty:
    none), with ``GENOTYPE_FILE`` standing for a JSON file of the row's ``--genotype``."""

    name: str
    description: str
    args: tuple[str, ...]
    reference: Reference | None = None
    pytorch: tuple[str, ...] = ()


# Stands for a JSON file of the row's genotype in its PyTorch arguments (the PyTorch script reads files only).
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
# Flags a standard run hands on to every row when given explicitly; the rows fix ROW_FLAGS.
PASSED_TO_ROWS = ("steps", "warmup", "seed", "strategy", "logical_cpus", "grappler", "skip_parts")
ROW_FLAGS = ("config", "batch", "order", "cells", "stage", "genotype", "stage_lengths", "min_cells", "max_cells",
             "init_channels", "layers", "image_size", "num_classes", "pool_bn", "auxiliary", "drop_path_rate",
             "dataset", "data_dir")
QUICK_STEPS, QUICK_WARMUP = 2, 1


def flag_value(row: StandardRow | None, name: str):
    """The value of ``--name`` in ``row``'s flags, or "—" where it has none."""
    if row is None:
        return "—"
    return next((a.split("=", 1)[1] for a in row.args if a.startswith(f"--{name}=")), "—")

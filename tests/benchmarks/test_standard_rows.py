"""The standard rows as data: references, goals, and the PyTorch counterpart of each row."""

import os
import subprocess
import sys

import pytest

from benchmarks.rows import GENOTYPE_FILE, PASSED_TO_ROWS, ROW_FLAGS, ROWS_BY_NAME, STANDARD_ROWS, flag_value
from benchmarks.runner import row_command


def test_standard_rows_carry_the_reference_and_parse_as_specs():
    refs = [row for row in STANDARD_ROWS if row.reference is not None]
    assert len(refs) == 14 and len(STANDARD_ROWS) == 18
    for row in refs:  # the reference's images/s is its batch over its s/step
        batch = int(flag_value(row, "batch"))
        assert row.reference.img_per_s == pytest.approx(batch / row.reference.step_s, rel=0.01)
    command = row_command(ROWS_BY_NAME["distribution_n6_o1_b64"], ["--steps=5"], quick=True)
    assert command[1:3] == ["-m", "hdas_tf.benchmark"] and command[-1] == "--json"
    assert "--max_cells=6" in command and command.index("--steps=2") < command.index("--steps=5")  # explicit wins


def test_standard_rows_name_their_pytorch_counterpart():
    """Every row with a reference is timed in PyTorch at the same configuration: kind, batch, order, α groups,
    and the candidate stage lengths of the distribution rows."""
    for row in STANDARD_ROWS:
        if row.reference is None and not row.pytorch:
            continue
        assert row.pytorch, row.name
        ours = dict(a[2:].split("=", 1) for a in row.args if "=" in a)
        theirs = dict(a[2:].split("=", 1) for a in row.pytorch)
        assert theirs["config"] == ours["config"] and theirs["batch"] == ours["batch"], row.name
        for name in ("order", "cells", "max_cells", "min_cells"):
            if name in theirs or (name in ours and ours[name] != {"order": "1", "cells": "shared"}.get(name)):
                assert theirs.get(name) == ours.get(name), (row.name, name)
        if "genotype" in ours:
            assert theirs["genotype"] == GENOTYPE_FILE and ours["genotype"] == "DARTS_V2"
    # The goals, as data.
    goals = {row.name: (row.reference.speedup_goal, row.reference.memory_goal)
             for row in STANDARD_ROWS if row.reference}
    assert goals["cell_o1_b16"] == (4.0, 0.5) and goals["cell_o1_b64_keep"] == (3.0, 0.5)
    assert goals["train_b32"] == (2.0, None) and goals["stage_o2_b64"] == (3.0, None)


def test_every_flag_of_one_configuration_is_fixed_by_the_rows_or_handed_on():
    """A flag added to ``python -m hdas_tf.benchmark`` must be placed here too, or a standard run would ignore it.
    In a subprocess: the mains define flags of the same names in absl's one registry (--cells, --seed, ...)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("from absl import flags; import hdas_tf.cli.benchmark; "
            "print(*sorted(f.name for f in flags.FLAGS.get_flags_for_module('hdas_tf.cli.benchmark')))")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=root), capture_output=True,
                          text=True, check=True)
    handled_by_the_run = {"json", "recompute", "config_override"}  # --json always; the other two handed on as text
    assert set(proc.stdout.split()) == set(ROW_FLAGS) | set(PASSED_TO_ROWS) | handled_by_the_run
    assert not set(ROW_FLAGS) & set(PASSED_TO_ROWS)

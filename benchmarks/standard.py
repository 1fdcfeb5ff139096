"""`python -m benchmarks.standard` (from the repository root): the standard set, each row in its own process,
into ``--out_dir``'s results.json and README.md.

It takes the flags of ``python -m hdas_tf.benchmark`` as well and hands the ones the rows do not fix on to
every row.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from benchmarks.rows import PASSED_TO_ROWS, QUICK_STEPS, QUICK_WARMUP, ROW_FLAGS, ROWS_BY_NAME, STANDARD_ROWS
from benchmarks.runner import run_standard
from hdas_tf.cli import benchmark as _one_configuration  # noqa: F401  (defines the flags handed on to the rows)

FLAGS = flags.FLAGS

flags.DEFINE_list("rows", None, "Only these rows (names from --list_rows); merged into an existing results.json.")
flags.DEFINE_string("out_dir", "benchmarks", "Where results.json and README.md are written.")
flags.DEFINE_boolean("quick", False, f"{QUICK_STEPS} timed steps after {QUICK_WARMUP} warm-up per row (a smoke run; "
                     "full-size models still).")
flags.DEFINE_string("pytorch_python", None, "A Python interpreter with torch installed (scripts/benchmark.sh "
                    "--with_pytorch makes .venv-torch with torch 2.13.0). Every row that has a PyTorch counterpart is "
                    "then also timed in plain PyTorch (benchmarks/torch_reference/darts_torch.py) on this host, right "
                    "before the row, and README.md compares the two.")
flags.DEFINE_boolean("list_rows", False, "Print the standard rows and exit.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    if FLAGS.list_rows:
        for row in STANDARD_ROWS:
            print(f"{row.name:<24} {row.description}  [{' '.join(row.args)}]")
        return 0
    fixed = [f"--{name}" for name in ROW_FLAGS if FLAGS[name].present]
    if fixed:
        raise app.UsageError(f"{', '.join(fixed)}: every standard row fixes these; run one configuration with "
                             f"python -m hdas_tf.benchmark instead (the standard run passes on only "
                             f"--{', --'.join(PASSED_TO_ROWS)}, --recompute and --config_override)")
    names = FLAGS.rows
    unknown = [n for n in names or () if n not in ROWS_BY_NAME]
    if unknown:
        raise app.UsageError(f"--rows: unknown row(s) {', '.join(unknown)}; known: {', '.join(ROWS_BY_NAME)}")
    passed = [FLAGS[name].serialize() for name in PASSED_TO_ROWS if FLAGS[name].present]
    if FLAGS.recompute is not None:
        passed.append(f"--recompute={FLAGS.recompute}")
    passed += [f"--config_override={item}" for item in FLAGS.config_override]
    python = FLAGS.pytorch_python
    if python is not None and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise app.UsageError(f"--pytorch_python={python}: not an executable file (make one with "
                             "`bash scripts/benchmark.sh --with_pytorch`, or point it at a Python with torch)")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    results = run_standard(names, FLAGS.out_dir, passed, quick=FLAGS.quick, pytorch_python=python)
    failed = [r["row"] for r in results if "error" in r]
    failed += [f"{r['row']} (PyTorch)" for r in results if "error" in r.get("pytorch", {})]
    print(f"wrote {os.path.join(FLAGS.out_dir, 'results.json')} and README.md"
          + (f"; failed rows: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(main)

"""A user's mistake on any entry point (search, train, export, inspect, benchmark) ends with one line
`hdas_tf.<entry>: error: ...` on stderr and exit status 2, no traceback, and nothing written to the run
directory; an internal error keeps its traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.cli.errors import EXIT_USER_ERROR, one_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _refused(entry, *args, names=()):
    """Runs ``python -m hdas_tf.<entry> ARGS``; checks the exit status, the one error line (last on stderr) and
    that no traceback was printed; every string of ``names`` must be in the error line. Returns that line."""
    proc = _run(["-m", f"hdas_tf.{entry}", *args])
    output = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_USER_ERROR, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    line = proc.stderr.rstrip("\n").split("\n")[-1]
    assert line.startswith(f"hdas_tf.{entry}: error: "), output[-3000:]
    for name in names:
        assert name in line, line
    # One line: absl's usage text (the module docstring) is not printed either.
    assert "USAGE" not in output and "Pass --helpshort" not in output, output[-3000:]
    return line


def _png_folder(root, per_class, classes=("a", "b")):
    """``root/<class>/<n>.png``: ``per_class`` 8x8 RGB images per class."""
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / name)
        for n in range(per_class):
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            (root / name / f"{n}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def test_one_line_folds_line_breaks():
    assert one_line("a\n  b\tc \n") == "a b c"


def test_search_mistakes(tmp_path):
    run = tmp_path / "run"
    tiny = ["--init_channels=2", "--layers=3", "--epochs=1"]
    # A flag value absl refuses, before any work.
    _refused("search", f"--run_dir={run}", "--batch_size=0", names=["--batch_size"])
    # A stage search's cell genotype that does not exist.
    _refused("search", f"--run_dir={run}", "--search=stage", "--genotype=NO_SUCH_GENOTYPE", *tiny,
             names=["NO_SUCH_GENOTYPE"])
    # An image folder too small for the batch: 18 images, 9 per half of the search split.
    small = _png_folder(tmp_path / "small", per_class=9)
    line = _refused("search", f"--run_dir={run}", f"--dataset=folder:{small}", "--batch_size=32", *tiny,
                    names=["has 9 examples", "batch_size=32", "largest batch that fits is 9"])
    assert "batch_size=9" in line
    # A corrupt JPEG is named.
    corrupt = _png_folder(tmp_path / "corrupt", per_class=4)
    (corrupt / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    _refused("search", f"--run_dir={run}", f"--dataset=folder:{corrupt}", "--batch_size=2", *tiny,
             names=[str(corrupt / "b" / "broken.jpg")])
    assert not run.exists()  # no config.json, flags.cfg or search.log of a run that never started
    # A run directory that cannot be created: a file is in the way.
    (tmp_path / "file").write_text("not a directory")
    _refused("search", f"--run_dir={tmp_path / 'file' / 'run'}", *tiny, names=["is a file"])
    assert (tmp_path / "file").read_text() == "not a directory"


def test_search_refuses_a_directory_holding_another_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    tf.train.Checkpoint(step=tf.Variable(1)).save(str(run / "checkpoints" / "ckpt"))
    before = sorted(os.listdir(run / "checkpoints"))
    _refused("search", f"--run_dir={run}", "--init_channels=2", "--layers=3", names=["--resume"])
    assert os.listdir(run) == ["checkpoints"] and sorted(os.listdir(run / "checkpoints")) == before


def test_train_mistakes(tmp_path):
    run = tmp_path / "run"
    tiny = ["--init_channels=4", "--layers=3", "--epochs=1", "--auxiliary=false"]
    _refused("train", f"--run_dir={run}", names=["--genotype"])  # a required flag
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "hdas_tf.genotype/1", "cells": {"normal": [[["sep_conv_9x9", 0]]]}}')
    _refused("train", f"--run_dir={run}", f"--genotype={bad}", *tiny, names=[str(bad)])
    # 40 digits, a batch of 64: the numbers and the largest batch that fits.
    _refused("train", f"--run_dir={run}", "--genotype=DARTS_V2", "--num_examples=40", "--batch_size=64", *tiny,
             names=["has 40 examples", "batch_size=64", "largest batch that fits is 40"])
    # A TFDS set that is not prepared: how to provide it.
    _refused("train", f"--run_dir={run}", "--genotype=DARTS_V2", "--dataset=cifar10",
             f"--data_dir={tmp_path / 'tfds'}", *tiny, names=["cifar-10-binary.tar.gz", "--download"])
    # Images too small for the auxiliary head (16 → 8 → 4 at the second reduction; the 5×5 pool needs 8).
    _refused("train", f"--run_dir={run}", "--genotype=DARTS_V2", "--image_size=16", *tiny[:-1],
             names=["images 16×16 give (4, 4) there", "--auxiliary=false"])
    assert not run.exists()


def test_export_inspect_and_benchmark_mistakes(tmp_path):
    export_dir = tmp_path / "serving"
    _refused("export", f"--run_dir={tmp_path / 'no_run'}", f"--export_dir={export_dir}", names=["does not exist"])
    assert not export_dir.exists()
    _refused("inspect", "--genotype=NO_SUCH_GENOTYPE", names=["unknown genotype 'NO_SUCH_GENOTYPE'"])
    _refused("benchmark", "--config=input", f"--dataset=folder:{tmp_path / 'no_images'}", names=["does not exist"])


def test_an_internal_error_keeps_its_traceback():
    script = ("from hdas_tf.cli.errors import run_main\n"
              "def main(argv):\n"
              "    raise RuntimeError('an internal error')\n"
              "run_main('search', main)\n")
    proc = _run(["-c", script])
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: an internal error" in proc.stderr
    assert "hdas_tf.search: error" not in proc.stderr


def test_an_unwritable_run_directory_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Tests run as root here, for whom every directory is writable, so the permission is what is simulated."""
    import hdas_tf

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path) and real_access(path, mode))
    with pytest.raises(hdas_tf.RunDirError, match=f"{tmp_path} is not writable"):
        hdas_tf.search(hdas_tf.SearchConfig(init_channels=2, layers=3, batch_size=8, num_examples=32, max_steps=1),
                       tmp_path / "run")
    assert os.listdir(tmp_path) == []

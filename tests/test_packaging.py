"""Packaging: pyproject's dependencies are requirements.txt's, and a plain (non-editable) install runs the
mains from any directory with only the installed copy on the path."""

import os
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def test_pyproject_dependencies_are_the_pinned_requirements():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["dependencies"] == _requirements()
    test_pins = open(os.path.join(ROOT, "requirements-test.txt")).read().split()
    assert test_pins == ["-r", "requirements.txt", *project["optional-dependencies"]["test"]]


@pytest.mark.slow
def test_installed_copy_runs_inspect_from_another_directory(tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), ROOT], check=True, capture_output=True, timeout=300)
    sources = sorted(os.listdir(target / "hdas_tf" / "nn" / "csrc"))
    assert sources == sorted(os.listdir(os.path.join(ROOT, "hdas_tf", "nn", "csrc")))  # the kernels can build
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.inspect", "--genotype=DARTS_V2", "--pool_bn=false",
                           "--json"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r'"params": 3349342\b', proc.stdout)
    assert '"params_with_aux": 3825768' in proc.stdout

"""`python -m hdas_tf.inspect --ri`: the relative improvement of a searched architecture's training run over
random ones' from their metrics.json files (RI computed by hand), as text and JSON; missing and malformed files
and incomplete flags are one message and a non-zero exit."""

import json
import os
import subprocess
import sys

import pytest
from absl import app
from absl.testing import flagsaver

from hdas_tf.cli import inspect as inspect_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _metrics(folder, final, split="test", examples=10000):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "split": split, "eval_examples": examples, "epochs": 600,
        "final": {"epoch": 600, "accuracy": final, "loss": 0.1},
        "best": {"epoch": 590, "accuracy": final, "loss": 0.1}}))
    return str(folder)


def _run(capsys, **flag_values) -> str:
    capsys.readouterr()
    with flagsaver.flagsaver(**flag_values):
        inspect_main.main(["inspect"])
    return capsys.readouterr().out


def test_ri_json_and_text(capsys, tmp_path):
    searched = _metrics(tmp_path / "searched", 0.9750)
    randoms = [_metrics(tmp_path / "r1", 0.9600), _metrics(tmp_path / "r2", 0.9700)]
    report = json.loads(_run(capsys, ri=True, searched=searched, random=randoms, json=True))
    # Acc_r = 0.965; RI = 100 · (0.975 − 0.965) / 0.965 = 1 / 0.965 = 1.03626943...
    assert report["ri"] == pytest.approx(1.036269430052, rel=1e-9)
    assert report["random_mean"] == pytest.approx(0.965, abs=1e-12)
    assert report["searched"]["run"] == searched and [r["run"] for r in report["random"]] == randoms
    text = _run(capsys, ri=True, searched=searched, random=randoms)
    assert "RI        +1.036 %" in text and "Acc_r     0.9650  (mean of 2)" in text
    assert f"searched  0.9750  {searched}" in text and "final test accuracy over 10000 examples" in text


@pytest.mark.parametrize("flag_values, message", [
    (dict(ri=True), "RI needs --ri, --searched=RUN and --random"),
    (dict(searched="x"), "RI needs --ri"),
    (dict(ri=True, searched="x", random=["y"]), "x does not exist: pass a training run directory"),
])
def test_incomplete_flags_and_missing_runs_are_usage_errors(flag_values, message, tmp_path):
    flag_values = {k: (str(tmp_path / v) if k == "searched" else [str(tmp_path / r) for r in v] if k == "random" else v)
                   for k, v in flag_values.items()}
    with flagsaver.flagsaver(**flag_values), pytest.raises(app.UsageError, match=message):
        inspect_main.main(["inspect"])


def test_malformed_file_through_the_cli(tmp_path):
    good = _metrics(tmp_path / "good", 0.95)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.inspect", "--ri", f"--searched={good}", f"--random={bad}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and f"{bad}/metrics.json is not a JSON document" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""

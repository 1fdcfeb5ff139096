"""Relative improvement (hdas_tf.train.relative_improvement) on hand-written metrics.json files, with RI
computed by hand, and one-line errors for missing, malformed and mismatched files."""

import json
import re

import pytest

from hdas_tf.train.relative_improvement import read_accuracy, relative_improvement, ri_report


def _run(tmp_path, name, final, best=None, split="test", examples=10000):
    """A training run directory holding the metrics.json hdas_tf.train writes."""
    run = tmp_path / name
    run.mkdir()
    doc = {"split": split, "eval_examples": examples, "epochs": 600,
           "final": {"epoch": 600, "accuracy": final, "loss": 0.1},
           "best": {"epoch": 580, "accuracy": final if best is None else best, "loss": 0.1}}
    (run / "metrics.json").write_text(json.dumps(doc))
    return str(run)


def test_ri_by_hand(tmp_path):
    searched = _run(tmp_path, "searched", 0.9712, best=0.9730)
    randoms = [_run(tmp_path, "r1", 0.9650, best=0.9660), _run(tmp_path, "r2", 0.9600, best=0.9610),
               _run(tmp_path, "r3", 0.9700, best=0.9710)]
    report = ri_report(searched, randoms)
    # Acc_r = (0.9650 + 0.9600 + 0.9700) / 3 = 0.9650; RI = 100 · (0.9712 − 0.9650) / 0.9650 = 0.62 / 0.965
    assert report["random_mean"] == pytest.approx(0.9650, abs=1e-12)
    assert report["ri"] == pytest.approx(0.642487046632, rel=1e-9)
    assert report["searched"]["accuracy"] == 0.9712 and [r["accuracy"] for r in report["random"]] == [0.965, 0.96, 0.97]
    assert (report["split"], report["eval_examples"], report["accuracy"]) == ("test", 10000, "final")
    best = ri_report(searched, randoms, which="best")
    # Acc_r = (0.9660 + 0.9610 + 0.9710) / 3 = 0.9660; RI = 100 · 0.0070 / 0.9660 = 0.724637681...
    assert best["ri"] == pytest.approx(0.724637681159, rel=1e-9)


def test_a_worse_searched_network_has_a_negative_ri_and_a_metrics_path_works(tmp_path):
    searched = _run(tmp_path, "searched", 0.90)
    random = _run(tmp_path, "r1", 0.95)
    assert ri_report(f"{searched}/metrics.json", [random])["ri"] == pytest.approx(-100 * 0.05 / 0.95, rel=1e-12)
    assert relative_improvement(0.5, [0.4, 0.6]) == 0.0


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)  # one line
    return str(e.value)


def test_missing_malformed_and_mismatched_files_are_one_line_errors(tmp_path):
    good = _run(tmp_path, "good", 0.95)
    assert "nope/metrics.json does not exist" in _message(read_accuracy, str(tmp_path / "nope" / "metrics.json"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty/metrics.json does not exist: pass a training run directory" in _message(read_accuracy, str(empty))
    (empty / "metrics.json").write_text("{not json")
    assert "is not a JSON document" in _message(read_accuracy, str(empty))
    (empty / "metrics.json").write_text(json.dumps({"split": "test", "final": {"epoch": 3}}))
    assert "has no final.accuracy between 0 and 1 (found None)" in _message(read_accuracy, str(empty))
    (empty / "metrics.json").write_text(json.dumps({"final": {"accuracy": 97.1}}))  # a percentage is not a fraction
    assert "found 97.1" in _message(read_accuracy, str(empty))
    assert "accuracy must be one of" in _message(read_accuracy, good, which="last")
    held_out = _run(tmp_path, "held_out", 0.95, split="validation", examples=5000)
    message = _message(ri_report, good, [held_out])
    assert re.search("evaluated on 5000 validation examples.*10000 test examples", message)
    assert "at least one random run" in _message(ri_report, good, [])
    assert "must be > 0" in _message(relative_improvement, 0.5, [0.0])

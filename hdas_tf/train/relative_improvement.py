"""Relative improvement (RI) of a searched architecture over random ones, the measure of the H-DAS ablation
("Furthermore…" paragraph): RI = 100 × (Acc_m − Acc_r) / Acc_r, Acc_m the searched architecture's accuracy
and Acc_r the mean accuracy of architectures drawn at random from the same space (``hdas_tf.sample``).

Reads the ``metrics.json`` a training run writes (``hdas_tf.train.job``). Plain Python: no TensorFlow.
"""

from __future__ import annotations

import json
import math
import os

ACCURACIES = ("final", "best")  # metrics.json entries: the last epoch's (the number to report) or the best epoch's


def metrics_path(run: str) -> str:
    """``RUN/metrics.json`` for a run directory; a path to a metrics file is taken as it is."""
    run = os.fspath(run)
    return os.path.join(run, "metrics.json") if os.path.isdir(run) else run


def read_accuracy(run: str, which: str = "final") -> dict:
    """The accuracy ``which`` ('final' or 'best') of a training run, with the split and epoch it was measured at.

    Returns:
      {"run", "accuracy", "epoch", "split", "eval_examples"}. Every problem is one ValueError naming the file.
    """
    if which not in ACCURACIES:
        raise ValueError(f"accuracy must be one of {ACCURACIES}, received {which!r}")
    path = metrics_path(run)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: pass a training run directory (hdas_tf.train writes metrics.json "
                         "after each epoch) or its metrics.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a JSON document ({e}); is it a training run's metrics.json?") from None
    entry = doc.get(which) if isinstance(doc, dict) else None
    acc = entry.get("accuracy") if isinstance(entry, dict) else None
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0.0 <= acc <= 1.0:
        raise ValueError(f"{path} has no {which}.accuracy between 0 and 1 (found {acc!r}); is it a training run's "
                         "metrics.json?")
    return {"run": os.fspath(run), "accuracy": float(acc), "epoch": entry.get("epoch"), "split": doc.get("split"),
            "eval_examples": doc.get("eval_examples")}


def relative_improvement(searched: float, randoms) -> float:
    """100 × (Acc_m − Acc_r) / Acc_r, Acc_r = the mean of ``randoms`` (H-DAS ablation)."""
    randoms = [float(a) for a in randoms]
    if not randoms:
        raise ValueError("RI needs at least one random architecture's accuracy")
    mean = sum(randoms) / len(randoms)
    if mean <= 0:
        raise ValueError(f"the random architectures' mean accuracy is {mean}; RI divides by it, so it must be > 0")
    return 100.0 * (float(searched) - mean) / mean


def ri_report(searched: str, randoms, which: str = "final") -> dict:
    """RI of run ``searched`` over runs ``randoms`` (directories or metrics.json paths), with the inputs.

    All runs must have been evaluated on the same split and number of examples: a test accuracy against a
    held-out one would not measure the architecture.
    """
    randoms = list(randoms)
    if not randoms:
        raise ValueError("pass at least one random run (--random=RUN1,RUN2,...)")
    m = read_accuracy(searched, which)
    rs = [read_accuracy(r, which) for r in randoms]
    for r in rs:
        if (r["split"], r["eval_examples"]) != (m["split"], m["eval_examples"]):
            raise ValueError(f"{metrics_path(r['run'])} was evaluated on {r['eval_examples']} {r['split']} examples, "
                             f"{metrics_path(m['run'])} on {m['eval_examples']} {m['split']} examples; compare runs "
                             "evaluated alike")
    mean = sum(r["accuracy"] for r in rs) / len(rs)
    return {"ri": relative_improvement(m["accuracy"], [r["accuracy"] for r in rs]), "accuracy": which,
            "split": m["split"], "eval_examples": m["eval_examples"], "searched": m, "random": rs,
            "random_mean": mean}

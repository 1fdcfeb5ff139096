"""hdas_tf.summaries.report: report.md of a search and of a training run from their run.json dicts."""

import shutil

import pytest

from hdas_tf.space.registry import REGISTRY
from hdas_tf.summaries import report as R


@pytest.fixture(autouse=True)
def cpu_only_host(monkeypatch):
    monkeypatch.setattr(R, "machine", lambda: {"cpu": "Test CPU 9000", "logical_cores": 2, "gpus": []})
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # matplotlib drawings


def test_search_report(tmp_path):
    run = {"config": {"search": "cell", "cells": "shared", "dataset": "digits"}, "strategy": "default", "replicas": 1,
           "phases": {"setup_s": 2.0, "build_s": 3.0, "search": {"wall_s": 1795.0, "steps_this_run": 40, "epochs": 2}},
           "wall_s": 1800.0, "steps": 40, "images_per_s": 123.4, "first_step_s": 9.0, "peak_rss_mib": 1500.25,
           "weight_params": 1000, "arch_params": 224, "stopped_early": None}
    sizes = {"network": "ChainNetwork, C=36, L=20", "params": 3_349_342, "macs": 528_359_040, "image_shape": [32, 32, 3],
             "num_classes": 10}
    path = R.search_report(str(tmp_path), run, REGISTRY["DARTS_V2"], sizes)
    text = open(path).read()
    assert "**0.500 device-hours**" in text  # 1800 s × 1 device
    assert "Test CPU 9000 (2 logical cores)" in text
    assert "| total | 30.0 min |" in text and "| build (supernet, optimizers) | 3.0 s |" in text
    assert "- steps: 40 (40 in this process), epochs: 2" in text
    assert "images/s (training images, the first step excluded): 123.4" in text
    assert "peak memory (resident): 1,500.2 MiB" in text
    assert "parameters: 3,349,342 (3.35 M" in text and "MACs per image: 528,359,040 (528.4 M)" in text
    assert "![normal](report/normal.png)" in text and (tmp_path / "report" / "reduce.png").is_file()
    assert "#### cell normal" in text and "stopped early" not in text


def test_train_report_counts_every_replica(tmp_path):
    summary = {"config": {"dataset": "cifar10"}, "network": "ChainNetwork", "strategy": "mirrored", "replicas": 2,
               "setup_s": 1.0, "build_s": 2.0, "train_s": 7000.0, "eval_s": 150.0, "wall_s": 7200.0, "steps": 1000,
               "steps_per_epoch": 100, "epochs": 10, "epochs_this_run": 10, "images_per_s": 50.0,
               "first_step_s": 12.0, "peak_rss_mib": 2048.0, "params": 100, "params_with_aux": 120, "macs": 5000}
    metrics = {"split": "test", "eval_examples": 10000, "final": {"epoch": 10, "accuracy": 0.9512, "loss": 0.2},
               "best": {"epoch": 9, "accuracy": 0.953, "loss": 0.19}}
    text = open(R.train_report(str(tmp_path), summary, REGISTRY["DARTS_V2"], metrics)).read()
    assert "**4.000 device-hours**" in text  # 2 h × 2 devices
    assert "| total | 2.00 h |" in text
    assert "test accuracy after the last epoch: 0.9512 (best 0.9530 at epoch 9), 10000 examples" in text
    assert "parameters with the auxiliary head: 120" in text


def test_gpu_hours(monkeypatch, tmp_path):
    monkeypatch.setattr(R, "machine", lambda: {"cpu": "x", "logical_cores": 8, "gpus": ["Tesla V100"] * 4})
    assert R._cost_lines(3600.0 * 6, 4, R.machine())[0].startswith("- **24.000 GPU-hours** (1.0000 GPU-days)")

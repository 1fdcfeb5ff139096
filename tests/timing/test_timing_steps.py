"""``run_benchmark``: tiny real configurations report consistent timings and sizes."""

import json
import statistics

import numpy as np
import pytest

from hdas_tf.timing.spec import BenchmarkSpec, SpecError
from hdas_tf.timing.steps import run_benchmark

TINY = dict(steps=2, warmup=1, batch=2, init_channels=2)


def _check_timings(r, spec):
    """The relations every result must satisfy."""
    assert r["config"] == spec.config and r["batch"] == spec.global_batch
    assert r["steps"] == spec.steps and r["warmup"] == spec.warmup
    assert len(r["step_s"]) == spec.steps and all(t > 0 for t in r["step_s"])
    assert r["step_s_median"] > 0 and r["step_s_median"] == statistics.median(r["step_s"])
    assert r["img_per_s"] == r["batch"] / r["step_s_median"]
    assert 0 < r["build_s"] <= r["first_step_s"]
    assert r["first_call_s"] > 0 and r["first_step_s"] >= r["first_call_s"]
    assert 0 < r["peak_rss_step_mib"] <= r["peak_rss_mib"]
    assert r["machine"]["logical_cores"] >= 1 and r["machine"]["tensorflow"].startswith("2.")
    assert r["kernels"] in ("custom", "native")
    json.dumps(r)  # JSON-ready as it is


def test_stage_search_reports_step_parts_and_overhead_ratio():
    from hdas_tf.space.search_space import SearchSpace

    spec = BenchmarkSpec(config="stage_search", stage_lengths=(1, 1, 1), image_size=16, **TINY)
    r = run_benchmark(spec)
    _check_timings(r, spec)
    assert r["order"] == 1 and r["stage_lengths"] == [1, 1, 1] and r["layers"] == 3 * 1 + 2
    assert r["search_config"]["search"] == "stage" and r["search_config"]["unrolled"] is False
    space = SearchSpace(stage="stage_specific", stage_lengths=(1, 1, 1), layers=5, init_channels=2)
    assert r["arch_params"] == space.num_arch_params() > 0
    assert r["weight_params"] > 0
    for part in ("arch", "weight", "fwdbwd_val", "fwdbwd_train"):
        assert len(r[f"{part}_s"]) == spec.steps
        assert r[f"{part}_s_median"] == statistics.median(r[f"{part}_s"]) > 0
        assert r[f"{part}_first_s"] > 0
    # The ratio's step is the one timed in rounds with the two passes, not the first block of steps.
    assert len(r["overhead_step_s"]) == spec.steps
    assert r["overhead_step_s_median"] == statistics.median(r["overhead_step_s"]) > 0
    assert r["overhead_ratio"] == pytest.approx(
        r["overhead_step_s_median"] / (r["fwdbwd_val_s_median"] + r["fwdbwd_train_s_median"]), rel=1e-12)
    assert all(np.isfinite(v) for v in r["last_step"].values())
    assert {"loss_w", "loss_a", "acc_w", "acc_a"} <= set(r["last_step"])


def test_train_step_of_an_evaluation_network():
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.nn.macs import count_params

    spec = BenchmarkSpec(config="train", layers=3, **TINY)
    r = run_benchmark(spec)
    _check_timings(r, spec)
    assert r["order"] is None and "overhead_ratio" not in r
    assert "arch_s_median" not in r and r["arch_params"] is None
    net = build_eval_network("DARTS_V2", 10, 2, 3, auxiliary=True, drop_path=True, input_shape=(32, 32, 3))
    assert r["params"] == count_params(net) and r["weight_params"] == count_params(net, include_aux=True)
    assert r["train_config"]["drop_path_rate"] == 0.2 and r["drop_path_rate"] == 0.2
    assert set(r["last_step"]) == {"loss", "loss_main", "loss_aux", "acc"}


def test_inference_and_input_pipeline():
    spec = BenchmarkSpec(config="inference", layers=3, steps=2, warmup=1, batch=1, init_channels=2)
    r = run_benchmark(spec)
    _check_timings(r, spec)
    assert r["batch"] == 1 and r["macs"] > 0
    with pytest.raises(SpecError, match=r"--batch=3 must be divisible by the 2 replicas"):
        run_benchmark(BenchmarkSpec(config="inference", strategy="mirrored", batch=3))

    spec = BenchmarkSpec(config="input", batch=4, steps=3, warmup=1)
    r = run_benchmark(spec)
    _check_timings(r, spec)
    assert r["dataset"] == "digits" and r["image_shape"] == [32, 32, 3] and r["images_per_element"] == 8


@pytest.mark.slow
def test_second_order_distribution_search_and_two_replicas():
    spec = BenchmarkSpec(config="distribution_search", max_cells=3, min_cells=2, order=2, skip_parts=True,
                                   image_size=16, **TINY)
    r = run_benchmark(spec)
    _check_timings(r, spec)
    assert r["max_cells"] == 3 and r["layers"] == 3 * 3 + 2 and r["search_config"]["unrolled"] is True
    assert "overhead_ratio" not in r
    spec = BenchmarkSpec(config="train", layers=3, strategy="mirrored", **TINY)
    r = run_benchmark(spec)
    _check_timings(r, spec)
    assert r["replicas"] == 2


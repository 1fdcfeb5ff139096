"""The text report of one benchmark result."""

from hdas_tf.timing.report import format_report


def test_text_report_names_the_step_of_the_overhead_ratio():
    result = {"config": "stage_search", "batch": 16, "order": 1, "init_channels": 16, "layers": 20, "replicas": 1,
              "first_call_s": 15.0, "step_s_median": 0.8, "build_s": 2.0, "first_step_s": 17.0,
              "peak_rss_mib": 2048.0, "peak_rss_step_mib": 1024.0, "step_s": [0.8], "overhead_ratio": 0.6 / 0.7,
              "overhead_step_s_median": 0.6}
    for half, median in (("val", 0.3), ("train", 0.4)):
        result.update({f"fwdbwd_{half}_first_s": 5.0, f"fwdbwd_{half}_s_median": median})
    text = format_report(result)
    assert "overhead ratio (step 0.6000 s / (fwd+bwd val + fwd+bwd train), timed in rounds): 0.86" in text
    del result["overhead_step_s_median"]  # a result from before the rounds: the ratio divides s/step
    result["overhead_ratio"] = 0.8 / 0.7
    assert "overhead ratio (step 0.8000 s / (fwd+bwd val + fwd+bwd train)): 1.14" in format_report(result)


"""``BenchmarkSpec``: bad values name their flag; overrides are parsed by the config field's type."""

import pytest

from hdas_tf.timing.spec import BenchmarkSpec, search_config, train_config


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_cells=5, max_cells=4), "--min_cells=5 must not exceed --max_cells=4"),
    (dict(config="train", genotype="NO_SUCH"), "--genotype: unknown genotype 'NO_SUCH'"),
    (dict(order=3), "--order=3"),
    (dict(warmup=-1), "--warmup=-1"),
    (dict(overrides=(("batch_size", "8"),)), "--config_override=batch_size=...: set it with --batch"),
    (dict(overrides=(("no_such_field", "1"),)), "SearchConfig has no field 'no_such_field'"),
    (dict(overrides=(("epochs", "many"),)), "--config_override=epochs=many: cannot parse as int"),
    (dict(config="input", overrides=(("epochs", "3"),)), "the input configuration has no model configuration"),
])
def test_spec_validation_names_the_flag(kwargs, message):
    with pytest.raises(ValueError) as e:
        BenchmarkSpec(**kwargs)
    assert message in str(e.value)


def test_overrides_are_parsed_by_the_config_field_type():
    spec = BenchmarkSpec(overrides=(("epochs", "7"), ("theta", "flops"), ("deterministic", "true"),
                                              ("max_steps", "none"), ("w_lr", "0.5")))
    cfg = search_config(spec)
    assert (cfg.epochs, cfg.theta, cfg.deterministic, cfg.max_steps, cfg.w_lr) == (7, "flops", True, None, 0.5)
    tcfg = train_config(BenchmarkSpec(config="train", overrides=(("label_smoothing", "0.1"),)))
    assert tcfg.label_smoothing == 0.1 and tcfg.init_channels == 36 and tcfg.layers == 20 and tcfg.batch_size == 32
    cfg = search_config(BenchmarkSpec(config="stage_search", order=2, batch=16))
    assert cfg.stage_lengths == (6, 6, 6) and cfg.genotype == "DARTS_V2" and cfg.unrolled and cfg.batch_size == 16


"""SearchConfig's augment field: None resolves per data set in resolved(); explicit values are kept and checked."""

import dataclasses

import pytest

from hdas_tf.search.config import SearchConfig


def test_augment_resolves_per_data_set():
    assert SearchConfig().augment is None
    assert SearchConfig().resolved().augment == "none"  # digits
    assert SearchConfig(dataset="cifar10").resolved().augment == "cifar"
    assert SearchConfig(dataset="folder:/images").resolved().augment == "cifar"
    assert SearchConfig(dataset="digits", augment="cifar").resolved().augment == "cifar"
    assert SearchConfig(dataset="cifar10", augment="none").resolved().augment == "none"
    cfg = SearchConfig(dataset="cifar10", seed=4)
    assert dataclasses.replace(cfg.resolved(), augment=None) == cfg  # nothing else changes


def test_unknown_augment_is_refused():
    with pytest.raises(ValueError, match="augment must be one of"):
        SearchConfig(augment="cutout")

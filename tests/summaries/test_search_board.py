"""What a search writes to TensorBoard (hdas_tf.summaries.search_board), read back with TensorBoard's own event
accumulator: after tiny cell and distribution searches, and for hand-set α whose diagnostics are known."""

import json
import logging
import math
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.plugins.custom_scalar import layout_pb2

from hdas_tf.search import job
from hdas_tf.search.config import SearchConfig
from hdas_tf.search.losses import expected_depths
from hdas_tf.space import genotypes as gt
from hdas_tf.space.search_space import SearchSpace
from hdas_tf.summaries.drawing import png_size
from hdas_tf.summaries.logger import SummaryLogger
from hdas_tf.summaries.search_board import SearchBoard

NORMAL = gt.CellGenotype(nodes=((("skip_connect", 0), ("sep_conv_3x3", 1)),
                                (("sep_conv_3x3", 0), ("max_pool_3x3", 2)),
                                (("skip_connect", 1), ("dil_conv_3x3", 3)),
                                (("sep_conv_5x5", 0), ("avg_pool_3x3", 4))))
REDUCE = gt.CellGenotype(nodes=((("max_pool_3x3", 0), ("max_pool_3x3", 1)),) * 4)


def _accumulator(logdir):
    acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})  # 0: keep every event
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def _image_sizes(acc, tag):
    """(width, height) of each logged image, from the PNG itself (decoded by TensorFlow)."""
    sizes = []
    for event in acc.Tensors(tag):
        width, height, png = tf.make_ndarray(event.tensor_proto)[:3]
        image = tf.image.decode_png(png).numpy()
        assert (image.shape[1], image.shape[0]) == (int(width), int(height)) == png_size(png)
        sizes.append((image.shape[1], image.shape[0]))
    return sizes


def _layout(acc):
    (event,) = acc.Tensors("custom_scalars__config__")
    return layout_pb2.Layout.FromString(tf.make_ndarray(event.tensor_proto).item())


def _tags(acc):
    return set(acc.Tags()["tensors"])


# === hand-set α ===


def test_diagnostics_of_hand_set_alpha_read_back(tmp_path, caplog):
    space = SearchSpace()
    arch = {"alpha_normal": np.zeros((14, 8)), "alpha_reduce": np.zeros((14, 8))}
    arch["alpha_reduce"][:, 3] = 60.0  # every reduce edge decided: entropy ~0
    first = gt.Genotype(cells={"normal": NORMAL, "reduce": REDUCE})
    second = gt.Genotype(cells={"normal": NORMAL, "reduce": gt.CellGenotype(
        nodes=REDUCE.nodes[:3] + ((("skip_connect", 0), ("max_pool_3x3", 1)),))})
    with SummaryLogger(tmp_path / "tb") as logger:
        board = SearchBoard(logger, space)
        with caplog.at_level(logging.WARNING):
            board.epoch(3, 1, arch, first)
        board.epoch(6, 2, arch, second)
    assert "normal cell holds 2 skip connections" in caplog.text
    acc = _accumulator(tmp_path / "tb")
    assert _scalars(acc, "diagnostics/alpha_entropy/normal") == [(3, pytest.approx(math.log(8))),
                                                                (6, pytest.approx(math.log(8)))]
    assert _scalars(acc, "diagnostics/alpha_entropy/reduce")[0][1] == pytest.approx(0.0, abs=1e-20)
    assert _scalars(acc, "diagnostics/skip_connections/normal") == [(3, 2.0), (6, 2.0)]
    assert "diagnostics/skip_connections/reduce" not in _tags(acc)
    assert _scalars(acc, "diagnostics/changed_edges/normal") == [(6, 0.0)]  # nothing to compare at epoch 1
    assert _scalars(acc, "diagnostics/changed_edges/reduce") == [(6, 1.0)]
    lines = _scalars(acc, "zz_alpha/normal/edge5/sep_conv_3x3")
    assert lines == [(3, pytest.approx(1 / 8)), (6, pytest.approx(1 / 8))]
    for tag in ("arch/heatmap/normal", "arch/heatmap/reduce", "arch/genotype/normal", "arch/genotype/reduce"):
        assert all(w >= 400 for w, _ in _image_sizes(acc, tag)), tag


def test_expected_depth_of_uniform_stage_alpha(tmp_path):
    """Uniform α: every candidate edge of a cell weighs the same. Window 3, 3 cells: d_0 = 1, d_1 = (1+1+2)/3
    = 4/3, d_2 = (1 + 2 + 7/3)/3 = 16/9; with uniform β over lengths 2, 3: (d_1 + d_2)/2 = 14/9."""
    space = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), min_cells=2, max_cells=3)
    arch = {name: np.zeros(shape) for name, shape in space.arch_shapes().items()}
    depths_of = lambda a, n: expected_depths(a, n, space.window, space.stage_ops).numpy()  # noqa: E731
    with SummaryLogger(tmp_path / "tb") as logger:
        values = SearchBoard(logger, space, depths_of=depths_of).arch_diagnostics(arch)
    assert values["diagnostics/expected_depth/stage2"] == pytest.approx(14 / 9)
    plain = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3))
    arch = {name: np.zeros(shape) for name, shape in plain.arch_shapes().items()}
    with SummaryLogger(tmp_path / "tb2") as logger:
        values = SearchBoard(logger, plain, depths_of=depths_of).arch_diagnostics(arch)
    assert values["diagnostics/expected_depth/stage1"] == pytest.approx(16 / 9)
    assert values["diagnostics/alpha_entropy/stage3"] == pytest.approx(math.log(len(plain.stage_ops)))


# === tiny searches ===


@pytest.fixture(scope="module")
def cell_search(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cell") / "run"
    cfg = SearchConfig(init_channels=2, layers=3, batch_size=8, num_examples=48, epochs=2, log_every=1,
                       hessian_every=2)
    run = job.run_search(cfg, str(run_dir))
    return run_dir, run


def test_cell_search_event_files(cell_search):
    run_dir, run = cell_search
    acc = _accumulator(run_dir / "tb")
    tags = _tags(acc)
    layout = _layout(acc)
    for group in ("normal", "reduce"):
        (category,) = [c for c in layout.category if c.title.startswith(f"α {group}:")]
        assert len(category.chart) == 14  # one chart per edge
        for e, chart in enumerate(category.chart):
            lines = [t for t in tags if re.search(chart.multiline.tag[0], t)]
            assert len(lines) == 8, chart.title  # a line per op
        sizes = _image_sizes(acc, f"arch/heatmap/{group}")
        assert len(sizes) == 2 and all(w >= 400 for w, _ in sizes)  # every epoch
        assert len(_image_sizes(acc, f"arch/genotype/{group}")) == 2
        assert len(_scalars(acc, f"diagnostics/alpha_entropy/{group}")) == 2
        assert [s for s, _ in _scalars(acc, f"diagnostics/changed_edges/{group}")] == [6]
    # 3 steps per epoch, α lines every step (--log_every=1).
    assert [s for s, _ in _scalars(acc, "zz_alpha/reduce/edge13/none")] == [1, 2, 3, 4, 5, 6]
    assert len(_scalars(acc, "diagnostics/skip_connections/normal")) == 2
    eigen = _scalars(acc, "diagnostics/hessian_eigenvalue/arch")
    assert [s for s, _ in eigen] == [6] and all(math.isfinite(v) for _, v in eigen)  # epoch 2 only
    assert not [t for t in tags if t.startswith("alpha/")]  # the one-chart-per-op scalars moved


def test_cell_search_report(cell_search):
    run_dir, run = cell_search
    report = (run_dir / "report.md").read_text()
    assert "device-hours" in report and f"steps: {run['steps']}" in report
    for key in ("normal", "reduce"):
        assert f"![{key}](report/{key}.png)" in report
        assert (run_dir / "report" / f"{key}.png").read_bytes().startswith(b"\x89PNG")
    from hdas_tf.cli.inspect import network_report

    sizes = network_report(str(run_dir / "genotype.json"), None, "cifar", None, None, 10, 32, True)
    assert f"parameters: {sizes['params']:,} " in report and f"MACs per image: {sizes['macs']:,} " in report


def test_distribution_search_event_files(tmp_path):
    run_dir = tmp_path / "dist"
    cfg = SearchConfig(search="distribution", genotype="DARTS_V2", min_cells=2, max_cells=3, init_channels=2,
                       batch_size=4, num_examples=16, epochs=2, log_every=1)
    job.run_search(cfg, str(run_dir))
    acc = _accumulator(run_dir / "tb")
    tags = _tags(acc)
    layout = _layout(acc)
    for s in (1, 2, 3):
        (category,) = [c for c in layout.category if c.title.startswith(f"α stage{s}:")]
        assert len(category.chart) == 2 + 3 + 3  # 3 cells, window 3
        assert all(w >= 400 for w, _ in _image_sizes(acc, f"arch/heatmap/stage{s}"))
        assert len(_image_sizes(acc, f"arch/genotype/stage{s}")) == 2
        for name in ("alpha_entropy", "expected_depth", "dead_cells"):
            assert len(_scalars(acc, f"diagnostics/{name}/stage{s}")) == 2, name
        assert len(_scalars(acc, f"zz_beta/stage{s}/n=2")) == 4
    (beta,) = [c for c in layout.category if c.title.startswith("β")]
    assert [len([t for t in tags if re.search(c.multiline.tag[0], t)]) for c in beta.chart] == [2, 2, 2]
    assert all(w >= 400 for w, _ in _image_sizes(acc, "arch/heatmap/beta"))
    for cell in ("normal", "reduce"):  # the fixed cells are drawn too
        assert _image_sizes(acc, f"arch/genotype/{cell}")
    assert (run_dir / "report.md").exists()


def test_stop_on_skips_ends_the_search_with_its_files(tmp_path, monkeypatch):
    """A derived normal cell with 2 skips after epoch 1 ends a 3-epoch search there (DARTS+)."""
    collapsed = gt.Genotype(cells={"normal": NORMAL, "reduce": REDUCE})
    monkeypatch.setattr(job, "derive_cell_genotype", lambda arch, space, ranking: collapsed)
    cfg = SearchConfig(init_channels=2, layers=3, batch_size=8, num_examples=48, epochs=3, stop_on_skips=2)
    run = job.run_search(cfg, str(tmp_path / "run"))
    assert run["steps"] == 3 and "2 skip connections after epoch 1" in run["stopped_early"]
    assert gt.Genotype.load(tmp_path / "run" / "genotype.json") == collapsed
    assert [h["epoch"] for h in json.loads((tmp_path / "run" / "history.json").read_text())] == [1]
    assert "stopped early" in (tmp_path / "run" / "report.md").read_text()


def test_config_checks_the_new_flags():
    with pytest.raises(ValueError, match="hessian_every must be >= 0"):
        SearchConfig(hessian_every=-1)
    with pytest.raises(ValueError, match="stop_on_skips watches the normal cells a cell search derives"):
        SearchConfig(search="stage", genotype="DARTS_V2", stop_on_skips=2)

"""Tests of hdas_tf.summaries: heatmap, markdown, DOT text, and the TensorBoard event files it writes."""

import glob
import json
import os
import re
import stat

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.space import genotypes as gt
from hdas_tf.space.derive import dead_cells
from hdas_tf.space.registry import REGISTRY
from hdas_tf.summaries import logger as S
from hdas_tf.space.search_space import SearchSpace

# A stage whose cell 1 no path reaches the output (cells 2 and 3 read only in0/in1/cell 0): dead.
DEAD_STAGE = gt.StageGenotype(
    cells=(
        (("skip_connect", 0), ("skip_connect", 1)),
        (("max_pool_3x3", 1), ("skip_connect", 2)),
        (("skip_connect", 2), ("avg_pool_3x3", 1)),
        (("skip_connect", 2), ("skip_connect", 4)),
    ),
    concat=(4, 5),
)


def _events(logdir):
    """(tag, plugin name, step, event value) of every summary value under ``logdir``."""
    out = []
    for path in glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                out.append((value.tag, value.metadata.plugin_data.plugin_name, event.step, value))
    return out


def _text(value) -> str:
    return tf.make_ndarray(value.tensor).item().decode("utf-8")


# === heatmap ===


def test_heatmap_shape_dtype():
    w = S.softmax(np.random.default_rng(0).normal(size=(14, 8)))
    image = S.alpha_heatmap(w, cell_px=5)
    assert image.dtype == np.uint8
    assert image.shape == (1, 14 * 5, 8 * 5, 3)
    # Each entry is a uniform block of cell_px × cell_px pixels.
    block = image[0, 5:10, 15:20]
    assert (block == block[0, 0]).all()


def test_heatmap_larger_probability_is_brighter():
    w = np.array([[0.0, 0.25, 0.5, 0.75, 1.0]])
    image = S.alpha_heatmap(w, cell_px=1)[0, 0].astype(int)  # [5, 3]
    assert len({tuple(c) for c in image}) == 5  # all different colours
    brightness = image.sum(axis=-1)
    assert (np.diff(brightness) > 0).all()
    assert (np.diff(image[:, 1]) > 0).all()  # green rises monotonically along the ramp
    np.testing.assert_array_equal(image[0], S.RAMP[0])
    np.testing.assert_array_equal(image[2], S.RAMP[1])
    np.testing.assert_array_equal(image[-1], S.RAMP[-1])


def test_heatmap_rows_are_edges_and_1d_input():
    w = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = S.alpha_heatmap(w, cell_px=2)[0]
    np.testing.assert_array_equal(image[0, 0], S.RAMP[-1])  # edge 0, op 0: the largest value
    np.testing.assert_array_equal(image[0, 4], S.RAMP[0])
    np.testing.assert_array_equal(image[2, 4], S.RAMP[-1])  # edge 1, op 2
    assert S.alpha_heatmap(np.array([0.2, 0.8]), cell_px=3).shape == (1, 3, 6, 3)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2)), np.zeros((0, 3))])
def test_heatmap_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="alpha_heatmap"):
        S.alpha_heatmap(bad)


def test_heatmap_rejects_bad_cell_px():
    with pytest.raises(ValueError, match="cell_px"):
        S.alpha_heatmap(np.ones((2, 2)) / 2, cell_px=0)


# === markdown ===


def _cell_edge_texts(cell):
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    return [f"`{op}` ← {names.get(src, f'node {src - 2}')}" for node in cell.nodes for op, src in node]


@pytest.mark.parametrize("name", ["DARTS_V2", "PDARTS", "HC_DAS"])
def test_markdown_lists_every_cell_edge(name):
    genotype = REGISTRY[name]
    text = S.genotype_markdown(genotype)
    sections = text.split("#### cell ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == list(genotype.cells)
    for section, key in zip(sections, genotype.cells):
        cell = genotype.cells[key]
        rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
        assert len(rows) == len(cell.nodes)
        for i, (row, node) in enumerate(zip(rows, cell.nodes)):
            assert row.startswith(f"| {i} |")
            assert row.count("←") == len(node)
        expected = _cell_edge_texts(cell)
        found = [t for row in rows for t in re.findall(r"`[a-z0-9_]+` ← (?:c_\{k-[12]\}|node \d)", row)]
        assert found == expected


@pytest.mark.parametrize("name", ["HS_DAS_CIFAR", "HS_DAS_IMAGENET"])
def test_markdown_lists_every_stage_edge(name):
    genotype = REGISTRY[name]
    text = S.genotype_markdown(genotype)
    sections = text.split("#### stage ")[1:]
    assert len(sections) == 3
    for stage, section in zip(genotype.stages, sections):
        rows = [line for line in section.splitlines() if re.match(r"\| \d+", line)]
        assert len(rows) == len(stage.cells)
        for row, cell in zip(rows, stage.cells):
            for op, src in cell:
                source = f"in{src}" if src < 2 else f"cell {src - 2}"
                assert f"`{op}` ← {source}" in row
            assert row.count("←") == len(cell)
        a, b = stage.concat
        assert f"concat: cell {a - 2}, cell {b - 2}" in section


def test_markdown_marks_dead_cells_and_shared_stage_and_lengths():
    genotype = REGISTRY["DARTS_V2"].with_stages(
        gt.Genotype(cells=None, stages=(DEAD_STAGE,), stage_lengths=(4, 4, 4)))
    text = S.genotype_markdown(genotype)
    assert "#### stage shared" in text
    assert "| 1 (dead) |" in text
    assert "dead cells (not built): 1" in text
    assert "stage lengths: 4, 4, 4" in text
    assert "### DARTS_V2" in text


def test_edge_softmax_table():
    w = np.array([[0.1, 0.9], [0.6, 0.4]])
    text = S.edge_softmax_table(w, ["a", "b"])
    lines = text.splitlines()
    assert lines[0] == "| edge | a | b |"
    assert lines[2] == "| edge0 | 0.100 | **0.900** |"
    assert lines[3] == "| edge1 | **0.600** | 0.400 |"
    with pytest.raises(ValueError, match="edge_softmax_table"):
        S.edge_softmax_table(w, ["a", "b", "c"])


# === DOT ===

_EDGE = re.compile(r'^\s+(\w+) -> (\w+) \[label="([a-z0-9_]+)"(, style=dashed)?\];$')
_CONCAT = re.compile(r"^\s+(\w+) -> (c_k|out) \[color=gray\];$")


def _parse_dot(text):
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith("{")
    assert lines[-1] == "}"
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert unquoted.count("{") == unquoted.count("}") == 1  # braces only in quoted labels
    edges = [m.groups() for m in map(_EDGE.match, lines) if m]
    concat = [m.groups() for m in map(_CONCAT.match, lines) if m]
    arrows = [line for line in lines if "->" in line]
    assert len(arrows) == len(edges) + len(concat)  # every arrow line is one of the two kinds
    nodes = {m.group(1): m.group(2) for m in map(re.compile(r"^\s+(\w+) \[(.*)\];$").match, lines)
             if m and m.group(1) not in ("node", "edge")}  # the attribute defaults are not vertices
    return edges, concat, nodes


@pytest.mark.parametrize("name", ["DARTS_V2", "HC_DAS", "PC_DARTS"])
def test_cell_dot_structure(name):
    genotype = REGISTRY[name]
    dots = S.genotype_dot(genotype)
    assert sorted(dots) == sorted(f"cell_{k}" for k in genotype.cells)
    ids = {0: "c_km2", 1: "c_km1", 2: "node0", 3: "node1", 4: "node2", 5: "node3"}
    for key, cell in genotype.cells.items():
        edges, concat, nodes = _parse_dot(dots[f"cell_{key}"])
        expected = [(ids[src], f"node{i}", op, None) for i, node in enumerate(cell.nodes) for op, src in node]
        assert edges == expected
        assert len(edges) == sum(len(node) for node in cell.nodes) == 8
        assert concat == [(ids[c], "c_k") for c in cell.concat]
        assert set(nodes) == {"c_km2", "c_km1", "node0", "node1", "node2", "node3", "c_k"}


@pytest.mark.parametrize("name", ["HS_DAS_CIFAR", "HS_DAS_IMAGENET"])
def test_stage_dot_structure(name):
    genotype = REGISTRY[name]
    dots = S.genotype_dot(genotype)
    assert sorted(dots) == ["stage_0", "stage_1", "stage_2"]
    for s, stage in enumerate(genotype.stages):
        edges, concat, nodes = _parse_dot(dots[f"stage_{s}"])
        ids = {0: "in0", 1: "in1", **{j + 2: f"cell{j}" for j in range(len(stage.cells))}}
        assert [e[:3] for e in edges] == [(ids[src], f"cell{j}", op) for j, c in enumerate(stage.cells)
                                         for op, src in c]
        assert concat == [(ids[c], "out") for c in stage.concat]
        assert len(nodes) == len(stage.cells) + 3
        assert not dead_cells(stage) and "dashed" not in dots[f"stage_{s}"]


def test_stage_dot_dead_cell_dashed():
    assert dead_cells(DEAD_STAGE) == [1]
    edges, concat, nodes = _parse_dot(S.stage_dot(DEAD_STAGE, "0"))
    assert len(edges) == 8
    assert "dashed" in nodes["cell1"]
    assert all("dashed" not in nodes[f"cell{j}"] for j in (0, 2, 3))
    dashed = [e for e in edges if e[3]]
    assert dashed == [("in1", "cell1", "max_pool_3x3", ", style=dashed"), ("cell0", "cell1", "skip_connect",
                                                                             ", style=dashed")]


def test_write_dot_files_without_dot(tmp_path, monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    genotype = REGISTRY["DARTS_V2"].with_stages(REGISTRY["HS_DAS_CIFAR"])
    paths = S.write_dot_files(genotype, tmp_path / "drawings")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["cell_normal.dot", "cell_reduce.dot", "stage_0.dot", "stage_1.dot", "stage_2.dot"]
    assert (tmp_path / "drawings" / "stage_1.dot").read_text() == S.stage_dot(genotype.stages[1], "1")
    assert not list((tmp_path / "drawings").glob("*.png"))


def test_write_dot_files_renders_with_dot(tmp_path, monkeypatch):
    # A stand-in `dot` that records its arguments and writes the output file.
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\nfor last; do :; done\necho png > "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ.get("PATH", ""))
    paths = S.write_dot_files(REGISTRY["DARTS_V2"], tmp_path / "out")
    assert sorted(os.path.basename(p) for p in paths) == [
        "cell_normal.dot", "cell_normal.png", "cell_reduce.dot", "cell_reduce.png"]
    calls = (fake.parent / "calls").read_text().splitlines()
    assert calls[0].split() == ["-Tpng", str(tmp_path / "out" / "cell_normal.dot"), "-o",
                                str(tmp_path / "out" / "cell_normal.png")]
    assert S.write_dot_files(REGISTRY["DARTS_V2"], tmp_path / "norender", render=False)[-1].endswith(".dot")


# === SummaryLogger ===


def test_logger_writes_expected_tags(tmp_path):
    space = SearchSpace()
    rng = np.random.default_rng(1)
    arch = {name: rng.normal(size=shape) for name, shape in space.arch_shapes().items()}
    arch["alpha_normal"] = tf.Variable(arch["alpha_normal"])  # variables are accepted too
    genotype = REGISTRY["DARTS_V2"]
    with S.SummaryLogger(tmp_path) as logger:
        logger.scalars(3, {"train/loss": 1.5, "val/accuracy": np.float32(0.25)})
        logger.architecture(3, arch, S.arch_labels(space))
        logger.genotype(3, genotype)
        logger.hparams({"w_lr": 0.025, "order": "first", "layers": np.int64(8), "shape": (1, 2)},
                       trial_id="t0", metrics=["epoch_loss"])
    events = _events(str(tmp_path))
    by_tag = {tag: (plugin, step, value) for tag, plugin, step, value in events}

    assert by_tag["train/loss"][:2] == ("scalars", 3)
    assert tf.make_ndarray(by_tag["val/accuracy"][2].tensor) == pytest.approx(0.25)

    alpha_tags = [t for t in by_tag if t.startswith("alpha/")]
    assert len(alpha_tags) == 2 * 14 * 8
    probs = S.softmax(np.asarray(arch["alpha_normal"].numpy()))
    for e in (0, 13):
        for o, op in enumerate(space.cell_ops):
            plugin, step, value = by_tag[f"alpha/normal/edge{e}/{op}"]
            assert (plugin, step) == ("scalars", 3)
            assert float(tf.make_ndarray(value.tensor)) == pytest.approx(probs[e, o], rel=1e-6)

    for group in ("normal", "reduce"):
        assert by_tag[f"alpha_heatmap/{group}"][0] == "images"
        assert by_tag[f"alpha_raw/{group}"][0] == "histograms"
        assert by_tag[f"alpha_table/{group}"][0] == "text"
    # An image summary stores [width, height, png bytes].
    width, height, png = tf.make_ndarray(by_tag["alpha_heatmap/normal"][2].tensor)
    assert (int(width), int(height)) == (8 * 16, 14 * 16)
    assert tf.io.decode_png(png).shape == (14 * 16, 8 * 16, 3)

    plugin, step, value = by_tag["genotype"]
    assert (plugin, step) == ("text", 3)
    assert _text(value) == S.genotype_markdown(genotype)
    doc = _text(by_tag["genotype_json"][2])
    assert gt.Genotype.from_json(doc.removeprefix("```json\n").removesuffix("\n```")) == genotype
    assert _text(by_tag["genotype_dot/cell_reduce"][2]).startswith("```dot\ndigraph")

    hparam_tags = {t for t, plugin, *_ in events if plugin == "hparams"}
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= hparam_tags


def test_logger_beta_and_stage_alpha(tmp_path):
    space = SearchSpace(stage="stage_specific", max_cells=6)
    arch = {name: np.zeros(shape) for name, shape in space.arch_shapes().items()}
    logger = S.SummaryLogger(tmp_path)
    logger.architecture(0, arch, S.arch_labels(space))
    logger.flush()
    logger.close()
    tags = {tag: value for tag, _, _, value in _events(str(tmp_path))}
    for s in (1, 2, 3):
        for n in (4, 5, 6):
            assert float(tf.make_ndarray(tags[f"beta/stage{s}/n={n}"].tensor)) == pytest.approx(1 / 3)
        assert f"beta_raw/stage{s}" in tags
        assert f"alpha_heatmap/stage{s}" in tags
        assert f"alpha/stage{s}/edge0/skip_connect" in tags
    assert not [t for t in tags if t.startswith("beta/") and "n=7" in t]


def test_logger_beta_labels_may_already_say_n(tmp_path):
    with S.SummaryLogger(tmp_path) as logger:
        logger.architecture(0, {"beta_stage2": np.array([0.0, 1.0])}, {"beta_stage2": ["n=4", "n=5"]})
    tags = {tag for tag, *_ in _events(str(tmp_path))}
    assert {"beta/stage2/n=4", "beta/stage2/n=5", "beta_raw/stage2"} <= tags


def test_logger_rejects_mismatched_arch(tmp_path):
    with S.SummaryLogger(tmp_path) as logger:
        with pytest.raises(ValueError, match="alpha_normal"):
            logger.architecture(0, {"alpha_normal": np.zeros((14, 8))}, {"alpha_normal": ["a", "b"]})
        with pytest.raises(ValueError, match="alpha_reduce"):
            logger.architecture(0, {"alpha_reduce": np.zeros((14, 8))}, {})
        with pytest.raises(ValueError, match="beta_stage1"):
            logger.architecture(0, {"beta_stage1": np.zeros(3)}, {"beta_stage1": [4, 5]})


def test_genotype_json_is_valid_json(tmp_path):
    genotype = REGISTRY["HS_DAS_IMAGENET"]
    with S.SummaryLogger(tmp_path) as logger:
        logger.genotype(0, genotype)
    tags = {tag: value for tag, _, _, value in _events(str(tmp_path))}
    body = _text(tags["genotype_json"]).strip("`").removeprefix("json\n")
    assert json.loads(body)["format"] == gt.FORMAT
    assert sorted(t for t in tags if t.startswith("genotype_dot/")) == [
        "genotype_dot/stage_0", "genotype_dot/stage_1", "genotype_dot/stage_2"]


def test_logger_masked_alpha_softmax_runs_over_each_edges_own_ops(tmp_path):
    """StacNAS stage 2: the logged probabilities are the supernet's (softmax over an edge's own ops, 0 for the
    others) and the raw histogram holds only the searched entries."""
    space = SearchSpace()
    alpha = np.random.default_rng(0).normal(size=(14, 8))
    mask = np.zeros((14, 8), dtype=bool)
    mask[:, [3, 4, 7]] = True  # sep_conv_3x3, sep_conv_5x5, none
    with S.SummaryLogger(tmp_path) as logger:
        logger.architecture(0, {"alpha_normal": alpha}, S.arch_labels(space), masks={"alpha_normal": mask})
        with pytest.raises(ValueError, match="mask of 'alpha_normal' has shape"):
            logger.architecture(0, {"alpha_normal": alpha}, S.arch_labels(space), masks={"alpha_normal": mask[:3]})
    tags = {tag: value for tag, _, _, value in _events(str(tmp_path))}
    expected = np.exp(alpha[5, [3, 4, 7]]) / np.exp(alpha[5, [3, 4, 7]]).sum()
    for o, p in zip((3, 4, 7), expected):
        assert float(tf.make_ndarray(tags[f"alpha/normal/edge5/{space.cell_ops[o]}"].tensor)) == pytest.approx(p)
    assert float(tf.make_ndarray(tags["alpha/normal/edge5/max_pool_3x3"].tensor)) == 0.0
    hist = tf.make_ndarray(tags["alpha_raw/normal"].tensor)  # [bucket, (left, right, count)]
    assert hist[:, 2].sum() == mask.sum()

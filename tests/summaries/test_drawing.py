"""hdas_tf.summaries.figures and .drawing: labelled heatmaps, genotype drawings with and without Graphviz,
and ``python -m hdas_tf.inspect --draw``."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hdas_tf.space import genotypes as gt
from hdas_tf.space.registry import REGISTRY
from hdas_tf.summaries import drawing, figures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_graphviz(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)


def test_cell_edge_labels_follow_alpha_rows():
    labels = figures.cell_edge_labels(4)
    assert len(labels) == 2 + 3 + 4 + 5
    assert labels[:5] == ["node 0 ← c_{k-2}", "node 0 ← c_{k-1}", "node 1 ← c_{k-2}", "node 1 ← c_{k-1}",
                          "node 1 ← node 0"]
    assert labels[-1] == "node 3 ← node 2"


def test_stage_edge_labels_follow_the_window():
    # window 3: cell 0 reads in0, in1; cell 1 in0, in1, cell 0; cell 2 in1, cell 0, cell 1.
    assert figures.stage_edge_labels(3, 3) == [
        "cell 0 ← in0", "cell 0 ← in1", "cell 1 ← in0", "cell 1 ← in1", "cell 1 ← cell 0",
        "cell 2 ← in1", "cell 2 ← cell 0", "cell 2 ← cell 1"]


def test_row_deviation_from_uniform():
    p = np.array([[0.127, 0.124, 0.749], [0.5, 0.5, 0.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    dev = figures.row_deviation(p, mask)
    np.testing.assert_allclose(dev[0], [0.127 - 1 / 3, 0.124 - 1 / 3, 0.749 - 1 / 3])
    np.testing.assert_allclose(dev[1, :2], [0.0, 0.0])
    assert np.isnan(dev[1, 2])


def test_heatmap_figure_is_a_wide_png():
    from hdas_tf.summaries.diagnostics import softmax

    probs = softmax(np.random.default_rng(0).normal(scale=0.01, size=(14, 8)))
    png = figures.figure_png(figures.heatmap_figure(probs, [f"op{i}" for i in range(8)],
                                                    figures.cell_edge_labels(4), "test"))
    assert png.startswith(PNG)
    width, height = drawing.png_size(png)
    assert width >= 400 and height >= 400
    with pytest.raises(ValueError, match="14 edges"):
        figures.heatmap_figure(probs[:3], [f"op{i}" for i in range(8)], figures.cell_edge_labels(4), "bad")


def test_beta_figure_png():
    png = figures.figure_png(figures.beta_figure({"stage1": [0.2, 0.8], "stage2": [0.5, 0.5]}, (4, 5), "β"))
    assert png.startswith(PNG) and drawing.png_size(png)[0] >= 400


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_genotype_draws_without_graphviz(name, no_graphviz):
    genotype = REGISTRY[name]
    pngs = drawing.genotype_pngs(genotype)
    assert list(pngs) == [k for k, _ in drawing.drawing_items(genotype)]
    n_cells = 0 if genotype.cells is None else len(genotype.cells)
    assert len(pngs) == n_cells + len(genotype.stages or ())
    for key, png in pngs.items():
        assert png.startswith(PNG), key
        assert drawing.png_size(png)[0] >= 400, key


def test_draw_genotype_png_and_svg_without_graphviz(tmp_path, no_graphviz):
    g = REGISTRY["DARTS_V2"].with_stages(REGISTRY["HS_DAS_CIFAR"])  # 2 cells + 3 stage DAGs: 5 panels
    assert drawing.draw_genotype(g, tmp_path / "g.png") == "matplotlib"
    assert (tmp_path / "g.png").read_bytes().startswith(PNG)
    drawing.draw_genotype(REGISTRY["DARTS_V2"], tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg
    with pytest.raises(ValueError, match=".png or .svg"):
        drawing.draw_genotype(g, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="'dot' program is not on the PATH"):
        drawing.draw_genotype(g, tmp_path / "h.png", engine="graphviz")
    assert not (tmp_path / "h.png").exists() and not (tmp_path / "g.jpg").exists()


def test_combined_dot_has_one_cluster_per_part_and_unique_node_ids():
    g = REGISTRY["DARTS_V2"].with_stages(gt.Genotype(cells=None, stages=(
        gt.StageGenotype(cells=((("skip_connect", 0), ("skip_connect", 1)),
                                (("max_pool_3x3", 1), ("skip_connect", 2))), concat=(2, 3)),)))
    text = drawing.combined_dot(g)
    assert text.count("subgraph \"cluster_") == 3  # normal, reduce, the shared stage
    node_lines = [line.split()[0] for line in text.splitlines() if "[label=" in line and "->" not in line]
    assert len(node_lines) == len(set(node_lines)) == (2 + 4 + 1) * 2 + (2 + 2 + 1)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
def test_graphviz_drawings(tmp_path):
    pngs = drawing.genotype_pngs(REGISTRY["DARTS_V2"], engine="graphviz")
    assert set(pngs) == {"normal", "reduce"} and all(p.startswith(PNG) for p in pngs.values())
    assert drawing.draw_genotype(REGISTRY["DARTS_V2"], tmp_path / "g.svg") == "graphviz"
    assert "<svg" in (tmp_path / "g.svg").read_text()


def _inspect(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "hdas_tf.inspect", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_inspect_draw(tmp_path):
    out = tmp_path / "darts.png"
    proc = _inspect("--genotype=DARTS_V2", f"--draw={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes().startswith(PNG) and "DARTS_V2" in proc.stdout
    bad = _inspect("--genotype=DARTS_V2", f"--draw={tmp_path / 'x.gif'}")
    assert bad.returncode != 0 and ".svg" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.gif").exists()

"""hdas_tf.summaries.layout: the Custom Scalars layout's charts and the tags their patterns select."""

import re

from hdas_tf.space.search_space import SearchSpace
from hdas_tf.summaries import layout as L


def _charts(layout, title_start):
    (category,) = [c for c in layout.category if c.title.startswith(title_start)]
    return list(category.chart)


def test_cell_search_layout_has_one_chart_per_edge_with_a_line_per_op():
    space = SearchSpace()
    layout = L.search_layout(space)
    tags = [L.alpha_tag(g, e, op) for g in ("normal", "reduce") for e in range(14) for op in space.cell_ops]
    for group in ("normal", "reduce"):
        charts = _charts(layout, f"α {group}")
        assert len(charts) == 14
        for e, chart in enumerate(charts):
            (pattern,) = chart.multiline.tag
            matched = [t for t in tags if re.search(pattern, t)]
            # edge 1 must not pick up edges 10..13
            assert matched == [L.alpha_tag(group, e, op) for op in space.cell_ops], chart.title
    assert _charts(layout, "α normal")[2].title == "normal edge 2: node 1 ← c_{k-2}"
    assert not [c for c in layout.category if c.title.startswith("β")]
    diag = [c.title for c in _charts(layout, "search diagnostics")]
    assert "skip_connections" in diag and "expected_depth" not in diag and "hessian_eigenvalue" not in diag
    assert "hessian_eigenvalue" in [c.title for c in _charts(L.search_layout(space, hessian=True),
                                                               "search diagnostics")]


def test_distribution_search_layout_has_beta_charts_per_stage():
    space = SearchSpace(stage="stage_specific", stage_lengths=(3, 3, 3), min_cells=2, max_cells=3)
    layout = L.search_layout(space)
    beta = _charts(layout, "β")
    assert [c.title for c in beta] == ["β stage1", "β stage2", "β stage3"]
    tags = [L.beta_tag(f"stage{s}", n) for s in (1, 2, 3) for n in (2, 3)]
    assert [t for t in tags if re.search(beta[1].multiline.tag[0], t)] == ["zz_beta/stage2/n=2", "zz_beta/stage2/n=3"]
    # 3 cells, window 3: 2 + 3 + 3 edges per stage.
    assert [len(_charts(layout, f"α stage{s}")) for s in (1, 2, 3)] == [8, 8, 8]
    diag = [c.title for c in _charts(layout, "search diagnostics")]
    assert "expected_depth" in diag and "dead_cells" in diag and "skip_connections" not in diag


def test_line_tags_sort_after_the_other_scalar_groups():
    # TensorBoard's Scalars dashboard opens its first three groups: diagnostics, epoch, step come first.
    assert sorted(["diagnostics", "epoch", "step", L.ALPHA_PREFIX, L.BETA_PREFIX])[3:] == [L.ALPHA_PREFIX,
                                                                                          L.BETA_PREFIX]

"""Tests of hdas_tf.space.op_registry, and that the space package stays free of TensorFlow and of the layers."""

import ast
import pathlib

import pytest

from hdas_tf.space import op_registry as R
from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS, OpSpec, op_spec

SPACE_DIR = pathlib.Path(R.__file__).parent


def test_op_order_is_the_checkpoint_order():
    assert CELL_OPS == ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                        "dil_conv_3x3", "dil_conv_5x5", "none")
    assert STAGE_OPS == ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "none")
    assert tuple(R.OPS) == CELL_OPS


# name: (kind, kernel_size, dilation, pool, has_weights)
FACTS = {
    "max_pool_3x3": ("pool", 3, None, "max", False),
    "avg_pool_3x3": ("pool", 3, None, "avg", False),
    "skip_connect": ("skip", None, None, None, False),
    "sep_conv_3x3": ("sep_conv", 3, 1, None, True),
    "sep_conv_5x5": ("sep_conv", 5, 1, None, True),
    "dil_conv_3x3": ("dil_conv", 3, 2, None, True),
    "dil_conv_5x5": ("dil_conv", 5, 2, None, True),
    "none": ("none", None, None, None, False),
}


@pytest.mark.parametrize("name", CELL_OPS)
def test_spec_of_every_op(name):
    spec = op_spec(name)
    assert spec == OpSpec(name, *FACTS[name])
    assert spec.kind in R.KINDS


def test_weighted_by_stride():
    assert [n for n in CELL_OPS if op_spec(n).weighted(1)] == [
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    # A strided skip_connect is a FactorizedReduce, with kernels.
    assert [n for n in CELL_OPS if op_spec(n).weighted(2)] == [
        "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        op_spec("none").kind = "skip"


@pytest.mark.parametrize("name", ["conv_7x7", "", None, "sep_conv_7x7"])
def test_unknown_op_lists_the_known_ones(name):
    with pytest.raises(ValueError) as e:
        op_spec(name)
    assert str(e.value) == f"unknown op {name!r}; known ops: {', '.join(CELL_OPS)}"


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            yield node.module
            if node.module == "hdas_tf":
                yield from (f"hdas_tf.{alias.name}" for alias in node.names)


def test_space_imports_no_tensorflow_and_no_other_package():
    """Checked in the source (every import statement, local ones included), not through sys.modules."""
    files = sorted(SPACE_DIR.glob("*.py"))
    assert {p.name for p in files} >= {"op_registry.py", "genotypes.py", "search_space.py", "clusters.py"}
    for path in files:
        for module in _imported_modules(path):
            top = module.split(".")[0]
            assert top not in ("tensorflow", "keras", "tf_keras"), f"{path.name} imports {module}"
            if top == "hdas_tf":
                parts = module.split(".")
                assert len(parts) >= 2 and parts[1] in ("space", "files", "errors"), f"{path.name} imports {module}"

"""The switch for TensorFlow's per-op Python stack traces (hdas_tf.run.op_tracebacks)."""

import pytest
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from hdas_tf.run import op_tracebacks
from hdas_tf.search.config import SearchConfig
from hdas_tf.run.runtime import configure_runtime
from hdas_tf.train.config import TrainConfig


@pytest.fixture(autouse=True)
def restore_state():
    before = op_tracebacks.enabled()
    yield
    op_tracebacks.set_enabled(before)


def _traced_ops():
    @tf.function(autograph=False)
    def f(x):
        return tf.sin(x) * 2.0

    return [op for op in f.get_concrete_function(tf.TensorSpec([3])).graph.get_operations() if op.type == "Sin"]


def _runtime_error() -> str:
    @tf.function(autograph=False)
    def f(x):
        return tf.debugging.check_numerics(tf.math.log(x), "log of x")

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        f(tf.constant([-1.0]))
    return str(info.value)


def test_ops_traced_with_tracebacks_off_carry_no_stack_and_compute_the_same():
    op_tracebacks.set_enabled(True)
    (with_stack,) = _traced_ops()
    assert len(with_stack.traceback) > 0
    assert any("test_op_tracebacks.py" in frame.filename for frame in with_stack.traceback)
    with op_tracebacks.setting(False):
        assert not op_tracebacks.enabled()
        (without,) = _traced_ops()
        assert not without.traceback  # None: the op has no stack trace
    assert op_tracebacks.enabled()  # the block restored the state from before it
    (again,) = _traced_ops()
    assert len(again.traceback) > 0

    @tf.function(autograph=False)
    def g(x):
        return tf.reduce_sum(tf.sin(x) * x)

    x = tf.constant([0.1, -0.7, 2.0])
    expected = float(g(x))
    with op_tracebacks.setting(False):
        @tf.function(autograph=False)
        def h(x):
            return tf.reduce_sum(tf.sin(x) * x)

        assert float(h(x)) == expected


def test_runtime_op_errors_keep_their_type_and_message_without_tracebacks():
    op_tracebacks.set_enabled(True)
    with_stack = _runtime_error()
    assert "test_op_tracebacks.py" in with_stack and "log of x : Tensor had NaN values" in with_stack
    op_tracebacks.set_enabled(False)
    without = _runtime_error()
    assert "log of x : Tensor had NaN values" in without and "CheckNumerics" in without
    assert "test_op_tracebacks.py" not in without


def test_a_tensorflow_without_the_parameter_is_left_untouched(monkeypatch):
    op_tracebacks.set_enabled(True)

    def create_c_op(graph, node_def, inputs, control_inputs, op_def=None):  # an older/newer signature
        raise AssertionError("not called")

    monkeypatch.setattr(op_tracebacks, "_ORIGINAL", create_c_op)
    monkeypatch.setattr(tf_ops, "_create_c_op", create_c_op)
    assert op_tracebacks.set_enabled(False) is True
    assert tf_ops._create_c_op is create_c_op


@pytest.mark.parametrize("config", [SearchConfig, lambda **kw: TrainConfig(genotype="DARTS_V2", **kw)])
def test_jobs_turn_tracebacks_off_unless_asked(config):
    configure_runtime(config())
    assert not op_tracebacks.enabled()
    configure_runtime(config(op_tracebacks=True))
    assert op_tracebacks.enabled()

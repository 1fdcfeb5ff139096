"""pytest configuration shared by all tests: two logical CPUs, absl flags, the `slow` marker.

hdas_tf is imported as installed (scripts/setup_env.sh installs the checkout editable), or from PYTHONPATH.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# MirroredStrategy tests need two logical CPU devices, and logical devices can only be configured
# before TensorFlow touches any device (BUILD_NOTES "Keras 3 specifics"). The default strategy still uses CPU:0.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
# The library runs with Grappler off and, on a CPU-only host, one thread per op (run.runtime.configure_runtime;
# BUILD_NOTES "Graph size, threads and what was measured"): test that.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
tf.config.threading.set_inter_op_parallelism_threads(os.cpu_count() or 1)
tf.config.threading.set_intra_op_parallelism_threads(1)


def pytest_configure(config):
    # Under pytest absl flags are never parsed, and reading any flag would raise (BUILD_NOTES "Keras 3 specifics").
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    config.addinivalue_line("markers", "slow: longer than about a minute; run with --run-slow")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def search_batch():
    """``make(n=8, seed=1)``: one random search batch ``((x_train, y_train), (x_val, y_val))`` of 8×8×3 float32
    images and int32 labels in 0..3, as the small supernet tests feed their steps."""
    def make(n=8, seed=1):
        rng = np.random.default_rng(seed)
        xt = tf.constant(rng.normal(size=(n, 8, 8, 3)), tf.float32)
        xv = tf.constant(rng.normal(size=(n, 8, 8, 3)), tf.float32)
        yt = tf.constant(rng.integers(0, 4, n), tf.int32)
        yv = tf.constant(rng.integers(0, 4, n), tf.int32)
        return (xt, yt), (xv, yv)

    return make

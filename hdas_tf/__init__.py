"""hdas_tf: hierarchical differentiable architecture search (H-DAS, DARTS, StacNAS) in TensorFlow 2 / Keras 3.

``import hdas_tf`` registers every Keras-serializable class of the package (ops, cells, stages, supernets,
evaluation networks, learning-rate schedules), so ``keras.models.load_model("RUN/model.keras")`` works after it
alone, and offers the public API below (README "Python API"). Every other module is importable but not promised.
"""

__version__ = "0.1.0"

import importlib as _importlib

# Every module with a keras.saving.register_keras_serializable class: imported here, because Keras looks a saved
# class up by its registered name ("hdas_tf>ChainNetwork") and imports no module of a third-party package itself.
SERIALIZABLE_MODULES = (
    "hdas_tf.nn.ops",
    "hdas_tf.nn.cells",
    "hdas_tf.nn.stages",
    "hdas_tf.nn.supernets",
    "hdas_tf.nn.eval_networks",
    "hdas_tf.run.schedules",
)
for _module in SERIALIZABLE_MODULES:
    _importlib.import_module(_module)
del _module

from hdas_tf.api import (SearchConfig, TrainConfig, build_network, build_search_model, derive_genotype,  # noqa: E402
                         load_genotype, search, train)
from hdas_tf.data import DataError  # noqa: E402
from hdas_tf.errors import ClusterError, ConfigError, GenotypeError, RunDirError, UserError  # noqa: E402
from hdas_tf.space.genotypes import Genotype  # noqa: E402

__all__ = [
    "ClusterError", "ConfigError", "DataError", "Genotype", "GenotypeError", "RunDirError",
    "SearchConfig", "TrainConfig", "UserError", "build_network", "build_search_model", "derive_genotype",
    "load_genotype", "search", "train",
]

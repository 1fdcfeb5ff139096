"""Serving: export of trained evaluation networks as TF Serving SavedModels.

Importers write ``from hdas_tf import serving`` and call ``serving.X``; the names below are the package's surface.
"""

from hdas_tf.serving.metadata import (DATA_INFO_FILE, DEFAULT_CROP_FRACTION, RESIZE_METHODS, ExportError, ServingSpec,
                                      data_info_dict, resolve_spec, write_data_info)
from hdas_tf.serving.saved_model import (EXTRAS_DIR, MODEL_FILE, SIGNATURE, TFLITE_FILE, export, export_model,
                                         load_model, run_model_path, version_dir)
from hdas_tf.serving.timing import benchmark_saved_model

__all__ = [
    "DATA_INFO_FILE", "DEFAULT_CROP_FRACTION", "EXTRAS_DIR", "MODEL_FILE", "RESIZE_METHODS", "SIGNATURE",
    "TFLITE_FILE", "ExportError", "ServingSpec", "benchmark_saved_model", "data_info_dict", "export", "export_model",
    "load_model", "resolve_spec", "run_model_path", "version_dir", "write_data_info",
]

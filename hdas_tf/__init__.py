"""hdas_tf: hierarchical differentiable architecture search (H-DAS, DARTS, StacNAS) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"

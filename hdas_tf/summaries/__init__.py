"""TensorBoard logging and human-readable views of architectures."""

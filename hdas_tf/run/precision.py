"""``--mixed_precision``: the Keras dtype policy the weights' layers are built with (BUILD_NOTES "Mixed
precision and XLA").

- "off": float32 everywhere; "bf16": ``mixed_bfloat16`` (CPUs, TPUs, recent GPUs); "fp16": ``mixed_float16``
  (GPUs; with a dynamic loss scale). Variables stay float32 under both; convolutions and activations compute in
  the 16-bit type.
- What stays float32: α/β (the search model's own variables, read without autocast), their softmaxes (the
  supernet is not autocast, so α reaches it as float32; each cell casts its mixing weights to its
  activations' type), the architecture losses, the logits' cross-entropy, BN statistics and affine terms
  (``nn.ops``: autocast off) and the drop path rate.
- The policy is set only while the network is built (a layer keeps the policy it was built with), so nothing
  of it leaks into later code of the process; exports rebuild the network in float32.

Light on purpose: the configs read ``PRECISIONS``; Keras is imported when a policy is applied.
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("off", "bf16", "fp16")
POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def policy_name(mode: str) -> str:
    """The Keras dtype policy of a ``--mixed_precision`` mode."""
    if mode not in POLICIES:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, received {mode!r}")
    return POLICIES[mode]


@contextlib.contextmanager
def policy_scope(mode: str):
    """Builds the layers made inside the context with ``mode``'s dtype policy; the global policy is restored
    on exit."""
    import keras

    name = policy_name(mode)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

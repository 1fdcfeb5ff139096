"""Timing of an exported model: images per second of its ``serving_default`` signature, loaded back in this
process as a server would load it (a check of the export a user can run, not part of writing it)."""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from hdas_tf import data
from hdas_tf.serving.metadata import read_json
from hdas_tf.serving.saved_model import EXTRAS_DIR, SIGNATURE


def benchmark_saved_model(path: str, batch: int, steps: int = 20, warmup: int = 2, image_size=None,
                          seed: int = 0) -> dict:
    """Images/s of ``serving_default`` of the SavedModel at ``path`` on random uint8 images (in this process).

    The size is the signature's, else ``image_size``, else export.json's. Returns batch, steps,
    images_per_s, ms_per_batch and first_call_s (the first call includes any graph warm-up)."""
    fn = tf.saved_model.load(path).signatures[SIGNATURE]
    shape = fn.structured_input_signature[1]["images"].shape
    h, w = shape[1], shape[2]
    if h is None or w is None:
        size = data.parse_image_size(image_size)
        if size is None:
            size = data.parse_image_size(read_json(os.path.join(path, EXTRAS_DIR, "export.json"))["image_size"])
        h, w = size
    images = tf.constant(np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8))
    t0 = time.perf_counter()
    fn(images=images)["probabilities"].numpy()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn(images=images)["probabilities"].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(images=images)["probabilities"].numpy()
    seconds = time.perf_counter() - t0
    return {"batch": batch, "steps": steps, "images_per_s": batch * steps / seconds,
            "ms_per_batch": 1000 * seconds / steps, "first_call_s": first}

"""The timed steps of one configuration, built as the library builds them: the search step of a supernet, the
training step and inference of an evaluation network, the search input pipeline (``run_benchmark``)."""

from __future__ import annotations

import datetime
import itertools
import time

from absl import logging

from hdas_tf.timing.host import code_version, machine_facts
from hdas_tf.timing.measure import measure, measure_rounds
from hdas_tf.timing.spec import SEARCH_CONFIGS, BenchmarkSpec, SpecError, search_config, train_config

# The learning-rate schedules need an epoch length; the synthetic stream has none, so CIFAR-10's is used:
# 25,000 images in the weight half of the search split, 50,000 in the training set.
SEARCH_EPOCH_IMAGES = 25_000
TRAIN_EPOCH_IMAGES = 50_000


def synthetic_dataset(kind: str, batch: int, image_size: int, num_classes: int, seed: int):
    """An infinite, prefetched tf.data stream of seeded random batches: float32 images [B, S, S, 3] (standard
    normal, like normalised pixels) and int32 labels in [0, num_classes).

    ``kind``: "search" gives ``((x_train, y_train), (x_val, y_val))`` (the search step's input), "train"
    ``(x, y)``, "images" ``x`` alone. Two distinct batches per stream alternate, so consecutive steps see
    different data while no time goes into generating it.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def stream():
        x = rng.standard_normal((2 * batch, image_size, image_size, 3), dtype=np.float32)
        y = rng.integers(0, num_classes, size=2 * batch, dtype=np.int32)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)

    if kind == "search":
        ds = tf.data.Dataset.zip((stream(), stream()))
    elif kind == "train":
        ds = stream()
    elif kind == "images":
        ds = stream().map(lambda x, y: x)
    else:
        raise ValueError(f"synthetic_dataset: kind must be search, train or images, received {kind!r}")
    return ds.prefetch(2)


def distributed_step(strategy, fn, jit_compile: bool = False):
    """``run.strategy.distributed_step``: the loops' step function, XLA-compiled as ``--jit_compile`` does
    (imported late: TensorFlow is heavy)."""
    from hdas_tf.run.strategy import distributed_step as step

    return step(strategy, fn, jit_compile)


def forward_backward(model):
    """Per-replica plain forward+backward of ``model`` on ``(images, labels)``: cross-entropy in training mode
    averaged over the global batch, ``tape.gradient`` w.r.t. every trainable variable (weights and α/β), no
    update. Returns the sum of all gradient entries, which forces every gradient to be computed."""
    import keras
    import tensorflow as tf

    variables = list(model.trainable_variables)

    def fn(batch):
        images, labels = batch
        n = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32),
                                                                       from_logits=True)
            loss = tf.reduce_sum(per_example) / tf.cast(tf.shape(labels)[0] * n, tf.float32)
        grads = tape.gradient(loss, [v.value for v in variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return fn


def run_benchmark(spec: BenchmarkSpec) -> dict:
    """Measures ``spec`` in this process and returns the result dict (its fields: README "Benchmark").

    The model is built from shapes (``build_s``), then stepped on ``synthetic_dataset`` batches distributed as
    the search loop distributes them: a first, tracing step (``first_step_s`` runs from the start of
    construction to its end), ``spec.warmup`` untimed steps and ``spec.steps`` timed ones (``step_s_median``;
    ``img_per_s`` = batch / median, training images only). Search configurations then time the architecture
    and the weight step alone and, in rounds with the search step, a plain forward+backward on each half of a
    batch: ``overhead_ratio`` = step ÷ (the two passes), the cost of the bi-level step beyond what it cannot
    avoid. ``peak_rss_step_mib`` is the process's peak memory after the timed steps, ``peak_rss_mib`` at the
    end; peak RSS is per process, so call this in a fresh process when memory matters.
    """
    from hdas_tf.run.runtime import peak_rss_mib
    from hdas_tf.run.strategy import make_strategy

    t_wall = time.perf_counter()
    strategy = make_strategy(spec.strategy)
    replicas = strategy.num_replicas_in_sync
    batch = spec.global_batch
    if batch % replicas:
        raise SpecError(f"--batch={batch} must be divisible by the {replicas} replicas of --strategy={spec.strategy}")
    result = {"config": spec.config, "batch": batch, "order": spec.order if spec.config in SEARCH_CONFIGS else None,
              "steps": spec.steps, "warmup": spec.warmup, "seed": spec.seed, "strategy": spec.strategy,
              "replicas": replicas, "grappler": spec.grappler, "image_size": spec.image_size,
              "num_classes": spec.num_classes}
    if spec.config in SEARCH_CONFIGS:
        result.update(_bench_search(spec, strategy))
    elif spec.config == "train":
        result.update(_bench_train(spec, strategy))
    elif spec.config == "inference":
        result.update(_bench_inference(spec, strategy))
    else:
        result.update(_bench_input(spec, strategy))
    result["img_per_s"] = batch / result["step_s_median"]
    result["peak_rss_mib"] = peak_rss_mib()
    result.setdefault("peak_rss_step_mib", result["peak_rss_mib"])
    result["wall_s"] = time.perf_counter() - t_wall
    import tensorflow as tf

    result["threads"] = {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                         "intra_op": tf.config.threading.get_intra_op_parallelism_threads()}
    from hdas_tf.nn import cpu_kernels

    result["kernels"] = cpu_kernels.in_use()  # hdas_tf's CPU kernels or TF's (HDAS_TF_KERNELS)
    result["machine"] = machine_facts()
    result["code_version"] = code_version()
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return result


def _timing_fields(timing: dict, t_start: float, build_s: float) -> dict:
    return {"build_s": build_s, "first_step_s": timing["first_end"] - t_start, "first_call_s": timing["first_s"],
            "step_s": timing["step_s"], "step_s_median": timing["median_s"], "last_step": timing["last"],
            "cpu_during_steps": timing["cpu"]}


def _synthetic_info(spec: BenchmarkSpec):
    from hdas_tf.data import DataInfo

    return DataInfo(name="synthetic", num_classes=spec.num_classes, image_shape=(spec.image_size, spec.image_size, 3),
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), class_names=None, num_train=TRAIN_EPOCH_IMAGES,
                    num_test=0)


def _bench_search(spec: BenchmarkSpec, strategy) -> dict:
    import numpy as np

    from hdas_tf.run.run_dir import json_ready
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.search import job as search_job
    from hdas_tf.space.search_space import log10_space_size
    from hdas_tf.run.runtime import peak_rss_mib

    cfg = search_config(spec)
    configure_runtime(cfg)
    info = _synthetic_info(spec)
    batches = iter(strategy.experimental_distribute_dataset(
        synthetic_dataset("search", spec.global_batch, spec.image_size, spec.num_classes, spec.seed)))
    t_start = time.perf_counter()
    space, model, _ = search_job.build_search(cfg, strategy, info, max(1, SEARCH_EPOCH_IMAGES // spec.global_batch))
    build_s = time.perf_counter() - t_start
    logging.info("built %s in %.1fs; tracing the search step", space, build_s)
    step = distributed_step(strategy, model.train_step, cfg.jit_compile)
    timing = measure(step, batches, spec.steps, spec.warmup)
    out = {"init_channels": cfg.init_channels, "layers": space.layers,
           "cells": cfg.cells if cfg.search == "cell" else None,
           "stage": cfg.stage if cfg.search != "cell" else None, "genotype": cfg.genotype,
           "stage_lengths": list(space.stage_lengths) if cfg.search == "stage" else None,
           "min_cells": cfg.min_cells if cfg.search == "distribution" else None,
           "max_cells": cfg.max_cells if cfg.search == "distribution" else None,
           "weight_params": int(sum(int(np.prod(v.shape)) for v in model.weight_variables)),
           "arch_params": space.num_arch_params(), "log10_space_size": log10_space_size(space),
           "search_config": json_ready(cfg), **_timing_fields(timing, t_start, build_s),
           "peak_rss_step_mib": peak_rss_mib()}
    logging.info("search step: first %.1fs, median %.3fs", out["first_step_s"], out["step_s_median"])
    if spec.skip_parts:
        return out
    for part, fn in (("arch", model.arch_step), ("weight", model.weight_step)):
        t = measure(distributed_step(strategy, fn, cfg.jit_compile), batches, spec.steps, spec.warmup)
        out.update({f"{part}_first_s": t["first_s"], f"{part}_s": t["step_s"], f"{part}_s_median": t["median_s"]})
        logging.info("%s step alone: median %.3fs", part, t["median_s"])
    # The overhead ratio compares the step with the two plain passes in rounds (step, val pass, train pass):
    # measured one after another, minutes apart, a ±15 % drift of the host decided the ratio
    # (BUILD_NOTES "Benchmark method"). The step is traced already; the passes get their first call here.
    fwdbwd = distributed_step(strategy, forward_backward(model), cfg.jit_compile)
    val, train = (b[1] for b in batches), (b[0] for b in batches)  # ((x_train, y_train), (x_val, y_val))
    t = measure_rounds({"overhead_step": (step, batches), "fwdbwd_val": (fwdbwd, val),
                        "fwdbwd_train": (fwdbwd, train)}, spec.steps, spec.warmup)
    out.update({"overhead_step_s": t["overhead_step"]["step_s"],
                "overhead_step_s_median": t["overhead_step"]["median_s"]})
    for half in ("val", "train"):
        part = t[f"fwdbwd_{half}"]
        out.update({f"fwdbwd_{half}_first_s": part["first_s"], f"fwdbwd_{half}_s": part["step_s"],
                    f"fwdbwd_{half}_s_median": part["median_s"]})
        logging.info("forward+backward on the %s batch: median %.3fs", half, part["median_s"])
    out["overhead_ratio"] = out["overhead_step_s_median"] / (out["fwdbwd_val_s_median"]
                                                             + out["fwdbwd_train_s_median"])
    return out


def _build_eval_network(cfg, num_classes: int):
    """The evaluation network as ``train.job.TrainJob`` builds it (call inside the strategy scope)."""
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.train.model import combine_genotypes

    return build_eval_network(combine_genotypes(cfg.genotype, cfg.stage_genotype), num_classes, cfg.init_channels,
                              cfg.layers, cfg.layout, auxiliary=cfg.auxiliary, pool_bn=cfg.pool_bn,
                              drop_path=cfg.drop_path_rate > 0)


def _network_fields(cfg, network, image_shape) -> dict:
    from hdas_tf.run.run_dir import json_ready
    from hdas_tf.train.job import network_sizes

    sizes = network_sizes(network, image_shape)
    return {"genotype": cfg.genotype, "init_channels": cfg.init_channels, "layers": cfg.layers,
            "auxiliary": cfg.auxiliary, "weight_params": sizes["params_with_aux"] if cfg.auxiliary else sizes["params"],
            "params": sizes["params"], "macs": sizes["macs"], "arch_params": None, "train_config": json_ready(cfg)}


def _bench_train(spec: BenchmarkSpec, strategy) -> dict:
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.train.job import build_training

    cfg = train_config(spec)
    configure_runtime(cfg)
    info = _synthetic_info(spec)
    batches = iter(strategy.experimental_distribute_dataset(
        synthetic_dataset("train", spec.global_batch, spec.image_size, spec.num_classes, spec.seed)))
    t_start = time.perf_counter()
    with strategy.scope():
        network, model = build_training(cfg, info.num_classes, info.image_shape,
                                        max(1, TRAIN_EPOCH_IMAGES // spec.global_batch))
    if cfg.drop_path_rate > 0:
        network.drop_path_rate.assign(cfg.drop_path_rate)  # the last epoch's rate of the linear ramp
    build_s = time.perf_counter() - t_start
    logging.info("built %s in %.1fs; tracing the training step", type(network).__name__, build_s)
    timing = measure(distributed_step(strategy, model.train_step, cfg.jit_compile), batches, spec.steps,
                     spec.warmup)
    return {**_network_fields(cfg, network, info.image_shape), "drop_path_rate": cfg.drop_path_rate,
            **_timing_fields(timing, t_start, build_s)}


def _bench_inference(spec: BenchmarkSpec, strategy) -> dict:
    import tensorflow as tf

    from hdas_tf.run.runtime import configure_runtime

    cfg = train_config(spec)
    configure_runtime(cfg)
    info = _synthetic_info(spec)
    batches = iter(strategy.experimental_distribute_dataset(
        synthetic_dataset("images", spec.global_batch, spec.image_size, spec.num_classes, spec.seed)))
    t_start = time.perf_counter()
    with strategy.scope():
        network = _build_eval_network(cfg, info.num_classes)
        network.build((None, *info.image_shape))
    build_s = time.perf_counter() - t_start

    def forward(images):
        return tf.reduce_sum(tf.cast(network(images, training=False), tf.float32))

    timing = measure(distributed_step(strategy, forward), batches, spec.steps, spec.warmup)
    return {**_network_fields(cfg, network, info.image_shape), **_timing_fields(timing, t_start, build_s)}


def _bench_input(spec: BenchmarkSpec, strategy) -> dict:
    """The search input pipeline alone, zipped and distributed as ``search.job.run_search`` does."""
    import tensorflow as tf

    from hdas_tf import data
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.search.config import SearchConfig

    configure_runtime(SearchConfig(seed=spec.seed, grappler=spec.grappler))
    t_start = time.perf_counter()
    weight_ds, arch_ds, info = data.search_datasets(spec.dataset, batch_size=spec.global_batch, seed=spec.seed,
                                                    data_dir=spec.data_dir, image_size=spec.image_size,
                                                    augment=data.default_search_augment(spec.dataset))
    batches = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.zip((weight_ds, arch_ds)).prefetch(2)))
    build_s = time.perf_counter() - t_start

    def fetch(_):
        # The batch is produced once next() returns; reading one label is the blocking result.
        labels = next(batches)[0][1]
        values = labels.values if hasattr(labels, "values") else (labels,)
        return tf.cast(values[0][0], tf.float32)

    timing = measure(fetch, itertools.repeat(None), spec.steps, spec.warmup)
    # Here build_s is building the pipeline, and first_step_s runs to the end of the first batch.
    return {"dataset": spec.dataset, "image_shape": list(info.image_shape), "weight_params": None,
            "arch_params": None, "images_per_element": 2 * spec.global_batch,
            **_timing_fields(timing, t_start, build_s)}

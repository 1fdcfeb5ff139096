"""A search run assembled from a ``SearchConfig``: data, search space, supernet, model, optimizers, loop,
TensorBoard and the run directory. ``python -m hdas_tf.search`` is this plus flag parsing.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hdas_tf.space import clusters
from hdas_tf import data
from hdas_tf.space import derive, genotypes, registry
from hdas_tf.run import op_tracebacks
from hdas_tf.search.config import SearchConfig
from hdas_tf.search.losses import make_arch_regularizer, stage_flops_share
from hdas_tf.nn.supernets import ChainSupernet, StageSupernet
from hdas_tf.space.op_registry import CELL_OPS
from hdas_tf.run.optimizers import FlatSGD
from hdas_tf.search.model import ArchitectureSearchModel, CosineEpochSchedule
from hdas_tf.space.search_space import SearchSpace, log10_space_size
from hdas_tf.nn.stages import derive_stage_genotype
from hdas_tf.run.loop import SearchLoop, ensure_fresh_or_resume, make_strategy, peak_rss_mib, write_json_atomic


def configure_runtime(cfg: SearchConfig) -> None:
    """Process-wide settings; call before any graph is built (``cfg``: a SearchConfig or TrainConfig)."""
    # Grappler's graph optimisation took minutes on a supernet's first step and did not make the step
    # faster here (KERAS_NOTES §0; BUILD_NOTES "Speed"), so it is off unless asked for.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not cfg.grappler})
    # The per-op Python stack traces cost seconds of the first step and hundreds of MiB (op_tracebacks).
    op_tracebacks.set_enabled(cfg.op_tracebacks)
    configure_threads(cfg.inter_op_threads, cfg.intra_op_threads, cfg.batch_size)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


# Global batch from which ops get two threads each when the thread pools are automatic (see configure_threads).
LARGE_BATCH = 64


def configure_threads(inter_op: int = 0, intra_op: int = 0, batch_size: int | None = None) -> tuple[int, int]:
    """TF's thread pools; 0 = automatic. On a CPU-only host: one op per core at a time, and one thread per op
    for batches below ``LARGE_BATCH``, two from it on; with a GPU, TF's defaults.

    A supernet step is thousands of small ops: running independent ops side by side uses the cores better
    than splitting each op, until the ops are large enough that the critical path of big ones dominates.
    Measured on 2 cores (inter/intra; BUILD_NOTES "Speed"): DARTS C=16 L=8 batch 16: 1.50 s per step with
    2/1, 1.87 s with TF's default 2/2, 2.66 s with 1/2; batch 64: 5.46 s (2/1) vs 5.59 s (2/2); the stage
    supernet at batch 64: 3.77 s (2/1) vs 3.25 s (2/2); the DARTS_V2 C=36 training step at batch 32: 1.90 s
    (2/1) vs 2.01 s (2/2). Returns the (inter, intra) settings in force.
    """
    if not tf.config.list_physical_devices("GPU"):
        cores = os.cpu_count() or 1
        inter_op = inter_op or cores
        intra_op = intra_op or (min(2, cores) if batch_size and batch_size >= LARGE_BATCH else 1)
    try:
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError as e:  # TF already started (e.g. a test process): the pools are fixed by now
        logging.warning("thread pools left as they are (%s)", e)
    return (tf.config.threading.get_inter_op_parallelism_threads(),
            tf.config.threading.get_intra_op_parallelism_threads())


def stage1_clusters(cfg: SearchConfig) -> tuple[clusters.Cluster, ...]:
    """The operator clusters of a StacNAS stage-1 search: the --clusters file, or the default set."""
    return clusters.load_clusters(cfg.clusters) if cfg.clusters else clusters.DEFAULT_CLUSTERS


def stage2_edge_clusters(cfg: SearchConfig) -> clusters.EdgeClusters:
    """The stage-1 hand-off of a StacNAS stage-2 search, checked against this run's cell groups."""
    hand_off = clusters.EdgeClusters.load(cfg.edge_clusters)
    groups = SearchSpace(cells=cfg.cells).cell_groups
    if set(hand_off.groups) != set(groups):
        raise ValueError(f"edge clusters file {cfg.edge_clusters!r} has cell groups {list(hand_off.groups)}, but "
                         f"cells={cfg.cells!r} searches {list(groups)}: run stage 2 with stage 1's --cells")
    return hand_off


def check_inputs(cfg: SearchConfig) -> None:
    """Reads the files a config names (genotype, StacNAS clusters and hand-off) so that a bad one stops the run
    before it writes anything; raises ValueError naming the file and the problem."""
    if cfg.genotype:
        registry.resolve(cfg.genotype)
    if cfg.stacnas == "clusters":
        stage1_clusters(cfg)
    elif cfg.stacnas == "members":
        stage2_edge_clusters(cfg)


def search_space(cfg: SearchConfig, num_classes: int) -> SearchSpace:
    """The search space a config describes."""
    if cfg.search == "cell":
        cell_ops, edge_ops = CELL_OPS, None
        if cfg.stacnas == "clusters":  # StacNAS stage 1: a representative per cluster, plus 'none'
            cell_ops = clusters.representative_ops(stage1_clusters(cfg))
        elif cfg.stacnas == "members":  # stage 2: every edge its winning cluster's members, plus 'none'
            hand_off = stage2_edge_clusters(cfg)
            cell_ops, edge_ops = hand_off.op_union(), hand_off.edge_ops()
        return SearchSpace(cell_ops=cell_ops, edge_ops=edge_ops, cells=cfg.cells, stage="chain", layers=cfg.layers,
                           init_channels=cfg.init_channels, num_classes=num_classes)
    lengths = tuple(cfg.stage_lengths) if cfg.stage_lengths else (6, 6, 6)
    if cfg.search == "stage" and not cfg.stage_lengths:
        # Phase 3 reads the stage lengths the distribution search chose, when its genotype carries them.
        chosen = registry.resolve(cfg.genotype).stage_lengths
        lengths = tuple(chosen) if chosen else lengths
    return SearchSpace(stage=cfg.stage, window=cfg.window, stage_lengths=lengths, min_cells=cfg.min_cells,
                       max_cells=cfg.max_cells if cfg.search == "distribution" else None,
                       init_channels=cfg.init_channels, num_classes=num_classes,
                       layers=3 * (cfg.max_cells if cfg.search == "distribution" else max(lengths)) + 2)


def derive_cell_genotype(arch: dict, space: SearchSpace, ranking: str = "softmax") -> genotypes.Genotype:
    """Top-2 edges per node, 'none' excluded (DESIGN §5), for every α group of a cell search; with per-edge op
    sets (StacNAS stage 2) each edge chooses among its own ops."""
    cells = {group: derive.parse_cell_alphas(
        arch[f"alpha_{group}"], op_names=space.cell_ops, steps=space.steps, ranking=ranking,
        op_mask=None if space.edge_ops is None else space.op_mask(group))
        for group in space.cell_groups}
    return genotypes.Genotype(cells=cells)


def build_search(cfg: SearchConfig, strategy, info: data.DataInfo, steps_per_epoch: int):
    """Builds (space, model, derive) inside the strategy scope."""
    space = search_space(cfg, info.num_classes)
    if cfg.search == "cell":
        regularizer = None
        derive = lambda arch: derive_cell_genotype(arch, space, cfg.edge_ranking)  # noqa: E731
        make_supernet = lambda: ChainSupernet(space, pool_bn=cfg.pool_bn)  # noqa: E731
    else:
        cell_genotype = registry.resolve(cfg.genotype)
        if cell_genotype.cells is None:
            raise ValueError(f"genotype {cfg.genotype!r} has no cells; a stage search needs a cell genotype "
                             "(e.g. DARTS_V2, HC_DAS or a cell search's genotype.json)")
        theta = None
        if cfg.theta == "flops":
            theta = stage_flops_share(cell_genotype, cfg.init_channels, info.image_shape[0])
        regularizer = make_arch_regularizer(space, cfg.depth_weight, cfg.complexity_weight, theta)

        def derive(arch):
            stages, _, lengths = derive_stage_genotype(arch, space, cfg.edge_ranking)
            return cell_genotype.with_stages(genotypes.Genotype(cells=None, stages=tuple(stages), stage_lengths=lengths))

        make_supernet = lambda: StageSupernet(space, cell_genotype, pool_bn=cfg.pool_bn)  # noqa: E731
    with strategy.scope():
        supernet = make_supernet()
        model = ArchitectureSearchModel(supernet, space.arch_shapes(), arch_regularizer=regularizer,
                                        unrolled=cfg.unrolled, weight_decay=cfg.weight_decay,
                                        arch_weight_decay=cfg.a_weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed,
                                        recompute=cfg.recompute)
        # Coupled L2 and post-aggregation clipping are the weight step's (apply_weight_gradients).
        w_opt = FlatSGD(CosineEpochSchedule(cfg.w_lr, cfg.w_lr_min, cfg.epochs, steps_per_epoch), momentum=cfg.momentum)
        a_opt = keras.optimizers.Adam(cfg.a_lr, beta_1=cfg.a_beta1, beta_2=cfg.a_beta2, epsilon=1e-8)
        model.build_all(info.image_shape, w_opt, a_opt)
    return space, model, derive


def derive_documents(cfg: SearchConfig, space: SearchSpace):
    """What a search writes each epoch besides its genotype (``SearchLoop(documents=...)``): StacNAS stage 1's
    hand-off, the winning cluster of every edge; None otherwise."""
    if cfg.stacnas != "clusters":
        return None
    cluster_set = stage1_clusters(cfg)
    return lambda arch: {clusters.HANDOFF_NAME: clusters.derive_edge_clusters(
        arch, cluster_set, space.cell_ops, space.cell_groups, space.steps).to_dict()}


def run_search(cfg: SearchConfig, run_dir: str, resume: bool = False) -> dict:
    """Runs (or resumes) a search in ``run_dir`` and returns the run summary written to run.json."""
    t_start = time.monotonic()
    ensure_fresh_or_resume(run_dir, resume)
    os.makedirs(run_dir, exist_ok=True)
    write_json_atomic(os.path.join(run_dir, "config.json"), json_ready(cfg))
    strategy = make_strategy(cfg.strategy)
    weight_ds, arch_ds, info = data.search_datasets(
        cfg.dataset, batch_size=cfg.batch_size, train_portion=cfg.train_portion, seed=cfg.seed,
        data_dir=cfg.data_dir, image_size=cfg.image_size, download=cfg.download, manual_dir=cfg.manual_dir,
        num_examples=cfg.num_examples)
    steps_per_epoch = data.search_batches_per_epoch(info, cfg.batch_size, cfg.train_portion, cfg.num_examples)
    if steps_per_epoch < 1:
        raise ValueError(f"the weight half of {cfg.dataset} has fewer examples than one batch of {cfg.batch_size}; "
                         "lower --batch_size or raise --num_examples")
    t_build = time.monotonic()
    space, model, derive = build_search(cfg, strategy, info, steps_per_epoch)
    build_s = time.monotonic() - t_build
    logging.info("search space: %s; 10^%.1f architectures; %d weight parameters, %d architecture scalars",
                 space, log10_space_size(space), sum(int(np.prod(v.shape)) for v in model.weight_variables),
                 space.num_arch_params())

    from hdas_tf.summaries.logger import SummaryLogger  # TensorBoard is a leaf concern of the run

    tb = SummaryLogger(os.path.join(run_dir, "tb"))
    op_names = {name: (space.cell_ops if name.startswith("alpha_") and space.stage == "chain" else
                       space.stage_ops if name.startswith("alpha_") else
                       [f"n={n}" for n in space.candidate_lengths])
                for name in space.arch_shapes()}

    masks = None if space.edge_ops is None else {f"alpha_{g}": space.op_mask(g) for g in space.cell_groups}

    def on_step(step, out):
        if step % cfg.log_every == 0:
            lr = float(model.w_optimizer.learning_rate)
            tb.scalars(step, {f"step/{k}": v for k, v in out.items()} | {"step/w_lr": lr})

    def on_epoch_end(epoch, record, genotype):
        step = record.step
        tb.scalars(step, {"epoch/loss_w": record.loss_w, "epoch/acc_w": record.acc_w, "epoch/loss_a": record.loss_a,
                          "epoch/acc_a": record.acc_a, "epoch/images_per_s": record.images_per_s,
                          "epoch/w_lr": float(model.w_optimizer.learning_rate)}
                   | {f"epoch/{k}": v for k, v in record.extra.items()})
        tb.architecture(step, loop.arch_numpy(), op_names, masks)
        tb.genotype(step, genotype)
        tb.flush()

    dataset = tf.data.Dataset.zip((weight_ds, arch_ds)).prefetch(2)
    loop = SearchLoop(model, strategy, dataset, run_dir, steps_per_epoch, cfg.epochs, derive,
                      max_steps=cfg.max_steps, select=cfg.genotype_selection, log_every=cfg.log_every,
                      on_epoch_end=on_epoch_end, on_step=on_step, documents=derive_documents(cfg, space))
    if resume:
        loop.restore()
    if int(loop.step.numpy()) == 0:
        tb.hparams({k: v for k, v in json_ready(cfg).items() if isinstance(v, (int, float, str, bool))})
    result = loop.run()
    tb.close()
    run = {
        "config": json_ready(cfg),
        "phases": {"build_s": build_s, "setup_s": t_build - t_start, "search": result},
        "wall_s": time.monotonic() - t_start,
        "images_per_s": result["images_per_s"],
        "first_step_s": None if result["first_step_s"] is None else result["first_step_s"] + (t_build - t_start) + build_s,
        "peak_rss_mib": peak_rss_mib(),
        "steps": result["steps"],
        "weight_params": int(sum(int(np.prod(v.shape)) for v in model.weight_variables)),
        "arch_params": space.num_arch_params(),
        "log10_space_size": log10_space_size(space),
        "strategy": cfg.strategy,
        "replicas": strategy.num_replicas_in_sync,
    }
    write_json_atomic(os.path.join(run_dir, "run.json"), run)
    logging.info("search finished: %d steps in %.1fs (%.1f images/s), genotype in %s", result["steps"], run["wall_s"],
                 result["images_per_s"] or 0.0, os.path.join(run_dir, "genotype.json"))
    return run


def json_ready(cfg: SearchConfig) -> dict:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}

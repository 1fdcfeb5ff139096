"""A search run assembled from a ``SearchConfig``: data, search space, supernet, model, optimizers, the search
loop (the step loop plus a genotype and its documents every epoch), TensorBoard and the run directory.
``python -m hdas_tf.search`` is this plus flag parsing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hdas_tf import data
from hdas_tf.files import save_npz_atomic, write_json_atomic
from hdas_tf.nn.stages import derive_stage_genotype
from hdas_tf.nn.supernets import ChainSupernet, StageSupernet
from hdas_tf.run.checkpoints import SaveSchedule
from hdas_tf.run.loop import StepLoop
from hdas_tf.run.optimizers import DynamicLossScale, FlatSGD
from hdas_tf.run.precision import policy_scope
from hdas_tf.run.run_dir import ensure_fresh_or_resume, json_ready, worker_directory, write_config
from hdas_tf.run.runtime import peak_rss_mib
from hdas_tf.run.schedules import CosineEpochSchedule
from hdas_tf.run.strategy import distributed_step, make_strategy
from hdas_tf.search.config import SearchConfig
from hdas_tf.search.losses import make_arch_regularizer, stage_flops_share
from hdas_tf.search.model import ArchitectureSearchModel
from hdas_tf.space import clusters, derive, genotypes, registry
from hdas_tf.space.op_registry import CELL_OPS
from hdas_tf.space.search_space import SearchSpace, log10_space_size


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
        with policy_scope(cfg.mixed_precision):  # the supernet's layers keep the policy they are built with
            supernet = make_supernet()
        model = ArchitectureSearchModel(supernet, space.arch_shapes(), arch_regularizer=regularizer,
                                        unrolled=cfg.unrolled, weight_decay=cfg.weight_decay,
                                        arch_weight_decay=cfg.a_weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed,
                                        recompute=cfg.recompute)
        # Coupled L2 and post-aggregation clipping are the weight step's (apply_weight_gradients).
        # float16 needs loss scaling on both halves of the step (BUILD_NOTES "Mixed precision and XLA").
        fp16 = cfg.mixed_precision == "fp16"
        w_opt = FlatSGD(CosineEpochSchedule(cfg.w_lr, cfg.w_lr_min, cfg.epochs, steps_per_epoch), momentum=cfg.momentum,
                        loss_scale=DynamicLossScale() if fp16 else None)
        a_opt = keras.optimizers.Adam(cfg.a_lr, beta_1=cfg.a_beta1, beta_2=cfg.a_beta2, epsilon=1e-8)
        if fp16:
            a_opt = keras.optimizers.LossScaleOptimizer(a_opt)
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


class SearchLoop(StepLoop):
    """The step loop of a search: a built ``ArchitectureSearchModel`` over a zipped (train, val) dataset, and every
    epoch a genotype derived from α, written with its documents, the selected genotype and α.

    Args:
      model: the search model, built with both optimizers inside ``strategy.scope()``.
      strategy: the run's tf.distribute strategy.
      dataset: an infinite ``((x_train, y_train), (x_val, y_val))`` dataset of *global* batches,
        deterministic for a given seed.
      run_dir: the run directory (DESIGN §7).
      steps_per_epoch, epochs, max_steps: the schedule; the run ends at ``epochs·steps_per_epoch`` or
        ``max_steps`` steps, whichever comes first (a checkpoint is written at the end either way).
      derive: ``fn(arch: dict name -> np.ndarray) -> Genotype`` (the epoch's genotype).
      select: "last" (the final epoch's genotype) or "best_val" (the epoch with the best supernet
        accuracy on the architecture batches).
      on_epoch_end: optional ``fn(epoch, record, genotype)``, e.g. TensorBoard logging.
      on_step: optional ``fn(step, outputs)``.
      documents: optional ``fn(arch) -> {name: JSON-ready object}``: more results derived from α each epoch
        (e.g. StacNAS's ``edge_clusters``), written beside the epoch's genotype as
        ``genotypes/epoch_NNN.{name}.json`` and, for the epoch the selection picks, ``RUN_DIR/{name}.json``.
      save_schedule, resume_dir: checkpoints between epoch ends, and the run directory a resumed run reads
        (``StepLoop``). jit_compile: compile the step with XLA.
    """

    def __init__(self, model, strategy, dataset, run_dir: str, steps_per_epoch: int, epochs: int,
                 derive: Callable, max_steps: int | None = None, select: str = "last", log_every: int = 10,
                 on_epoch_end: Callable | None = None, on_step: Callable | None = None,
                 documents: Callable | None = None, save_schedule: SaveSchedule | None = None,
                 resume_dir: str | None = None, jit_compile: bool = False):
        self.model = model
        self.derive, self.select, self.log_every = derive, select, log_every
        self.on_epoch_end, self.on_step, self.documents = on_epoch_end, on_step, documents
        total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_acc")
        # Every model variable by position: tf.train.Checkpoint(model=...) skips sublayers a Keras 3 layer
        # holds in Python lists (cells, stages), and paths are numbered per process, so not usable as keys.
        checkpoint = dict(variables=list(model.variables), w_optimizer=model.w_optimizer,
                          a_optimizer=model.a_optimizer, step=self.step, best_val=self.best_val)
        super().__init__(strategy, distributed_step(strategy, model.train_step, jit_compile), dataset, run_dir,
                         steps_per_epoch, total, checkpoint, finite=("loss_w", "loss_a"), save_schedule=save_schedule,
                         resume_dir=resume_dir)
        self._genotype = None

    def arch_numpy(self) -> dict:
        return {name: v.numpy() for name, v in self.model.arch_dict().items()}

    def arch_digest(self) -> str:
        """SHA-256 of the architecture variables' bytes in name order: equal digests = bit-identical α/β (how
        the workers of a multi-worker run are compared)."""
        digest = hashlib.sha256()
        for name, value in sorted(self.arch_numpy().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def search(self) -> dict:
        """Runs from the current step (after ``restore``, the checkpoint's) and returns the loop's summary."""
        start_time = time.monotonic()
        start_step = int(self.step.numpy())
        history = super().run(start_step, started=start_time)
        return {
            "wall_s": time.monotonic() - start_time,
            "steps": int(self.step.numpy()),
            "steps_this_run": int(self.step.numpy()) - start_step,
            # Training images per second of the steps after the first (time-to-first-step is separate).
            "images_per_s": self.images_per_s,
            "peak_rss_mib": peak_rss_mib(),
            "first_step_s": self.first_step_s,
            "epochs": len(history),
            "final": history[-1] if history else None,
        }

    # === the step loop's hooks ===

    def restored(self, path: str) -> int:
        logging.info("resumed from %s at step %d", path, int(self.step.numpy()))
        return int(self.step.numpy())

    def after_step(self, step: int, out: dict, seconds: float) -> None:
        if self.on_step is not None:
            self.on_step(step, out)
        if step % self.log_every == 0 or step == self.total_steps:
            spe = self.steps_per_epoch
            logging.info("epoch %d step %d/%d (%d/%d) loss_w %.4f acc_w %.3f loss_a %.4f acc_a %.3f %.1f images/s",
                         (step - 1) // spe + 1, step, self.total_steps, (step - 1) % spe + 1, spe, out["loss_w"],
                         out["acc_w"], out["loss_a"], out["acc_a"], self.global_batch / max(seconds, 1e-9))

    def non_finite_message(self, step: int, out: dict) -> str:
        return (f"non-finite loss at step {step} (epoch {(step - 1) // self.steps_per_epoch + 1}): "
                f"loss_w={out['loss_w']}, loss_a={out['loss_a']}. The run stopped before writing anything for "
                f"this step; the last checkpoint in {self.manager.directory} is intact. Lower --w_lr or --a_lr, "
                "or check the input data.")

    def epoch_record(self, stats) -> dict:
        main = ("loss_w", "acc_w", "loss_a", "acc_a")
        return {"epoch": stats.epoch, "step": stats.step, **{k: stats.means[k] for k in main},
                "seconds": stats.seconds, "images_per_s": stats.images_per_s or 0.0,
                "extra": {k: v for k, v in stats.means.items() if k not in main}, "complete_epoch": stats.complete}

    def write_epoch(self, record: dict, history: list) -> None:
        """The epoch's genotype and documents, the best-validation ones, the selected ones and α."""
        arch = self.arch_numpy()
        self._genotype = genotype = self.derive(arch)
        gdir = os.path.join(self.run_dir, "genotypes")
        os.makedirs(gdir, exist_ok=True)
        genotype.save(os.path.join(gdir, f"epoch_{record['epoch']:03d}.json"))
        documents = self.documents(arch) if self.documents is not None else {}
        for name, doc in documents.items():
            write_json_atomic(os.path.join(gdir, f"epoch_{record['epoch']:03d}.{name}.json"), doc)
        if record["acc_a"] > float(self.best_val.numpy()):
            self.best_val.assign(record["acc_a"])
            genotype.save(os.path.join(gdir, "best_val.json"))
            for name, doc in documents.items():
                write_json_atomic(os.path.join(gdir, f"best_val.{name}.json"), doc)
        self._write_selected(history, documents)
        save_npz_atomic(os.path.join(self.run_dir, "alphas.npz"), arch)

    def checkpoint_number(self, record: dict) -> int:
        self.step.assign(record["step"])
        return record["step"]

    def mid_epoch_number(self, step: int) -> int:
        self.step.assign(step)
        return step

    def epoch_done(self, record: dict, history: list) -> None:
        logging.info("epoch %d done in %.1fs: loss_w %.4f acc_w %.3f loss_a %.4f acc_a %.3f, %.1f images/s; "
                     "genotype written to %s", record["epoch"], record["seconds"], record["loss_w"], record["acc_w"],
                     record["loss_a"], record["acc_a"], record["images_per_s"],
                     os.path.join(self.run_dir, "genotypes", f"epoch_{record['epoch']:03d}.json"))
        if self.on_epoch_end is not None:
            self.on_epoch_end(record["epoch"], record, self._genotype)

    def _write_selected(self, history, document_names=()):
        """``RUN_DIR/genotype.json`` and the documents of the epoch the selection rule picks."""
        gdir = os.path.join(self.run_dir, "genotypes")
        if self.select == "best_val" and os.path.exists(os.path.join(gdir, "best_val.json")):
            source = os.path.join(gdir, "best_val.json")
        else:
            source = os.path.join(gdir, f"epoch_{history[-1]['epoch']:03d}.json")
        genotypes.Genotype.load(source).save(os.path.join(self.run_dir, "genotype.json"))
        for name in document_names:
            with open(f"{source[:-len('.json')]}.{name}.json") as f:
                write_json_atomic(os.path.join(self.run_dir, f"{name}.json"), json.load(f))


def run_search(cfg: SearchConfig, run_dir: str, resume: bool = False, out_dir: str | None = None) -> dict:
    """Runs (or resumes) a search in ``run_dir`` and returns the run summary written to run.json.

    ``out_dir``: where this process writes (``run_dir.worker_directory``: ``run_dir`` itself except on a
    non-chief worker of a multi-worker run); by default it is chosen here. A resumed run reads ``run_dir``."""
    if out_dir is None:
        with worker_directory(run_dir, cfg.strategy) as out_dir:
            return run_search(cfg, run_dir, resume, out_dir)
    t_start = time.monotonic()
    source_dir, run_dir = run_dir, out_dir  # everything below writes to out_dir
    ensure_fresh_or_resume(run_dir, resume)
    os.makedirs(run_dir, exist_ok=True)
    write_config(run_dir, cfg)
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
        step = record["step"]
        tb.scalars(step, {f"epoch/{k}": record[k] for k in ("loss_w", "acc_w", "loss_a", "acc_a", "images_per_s")}
                   | {"epoch/w_lr": float(model.w_optimizer.learning_rate)}
                   | {f"epoch/{k}": v for k, v in record["extra"].items()})
        tb.architecture(step, loop.arch_numpy(), op_names, masks)
        tb.genotype(step, genotype)
        tb.flush()

    dataset = tf.data.Dataset.zip((weight_ds, arch_ds)).prefetch(2)
    loop = SearchLoop(model, strategy, dataset, run_dir, steps_per_epoch, cfg.epochs, derive,
                      max_steps=cfg.max_steps, select=cfg.genotype_selection, log_every=cfg.log_every,
                      on_epoch_end=on_epoch_end, on_step=on_step, documents=derive_documents(cfg, space),
                      save_schedule=SaveSchedule(cfg.checkpoint_every_steps, cfg.checkpoint_every_minutes),
                      resume_dir=source_dir, jit_compile=cfg.jit_compile)
    if resume:
        loop.restore()
    if int(loop.step.numpy()) == 0:
        tb.hparams({k: v for k, v in json_ready(cfg).items() if isinstance(v, (int, float, str, bool))})
    result = loop.search()
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
        "mixed_precision": cfg.mixed_precision,
        "jit_compile": cfg.jit_compile,
        "arch_sha256": loop.arch_digest(),
    }
    write_json_atomic(os.path.join(run_dir, "run.json"), run)
    logging.info("search finished: %d steps in %.1fs (%.1f images/s), genotype in %s; α sha256 %s", result["steps"],
                 run["wall_s"], result["images_per_s"] or 0.0, os.path.join(source_dir, "genotype.json"),
                 run["arch_sha256"])
    return run


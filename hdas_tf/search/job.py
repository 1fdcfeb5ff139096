"""A search run assembled from a ``SearchConfig``: data, search space, supernet, model, optimizers, the search
loop (the step loop plus a genotype and its documents every epoch), TensorBoard and the run directory.
``python -m hdas_tf.search`` is this plus flag parsing.
"""

from __future__ import annotations

import dataclasses
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
from hdas_tf.errors import ClusterError, GenotypeError
from hdas_tf.files import save_npz_atomic, write_json_atomic
from hdas_tf.nn.stages import derive_stage_genotype
from hdas_tf.nn.supernets import ChainSupernet, StageSupernet
from hdas_tf.run.checkpoints import SaveSchedule
from hdas_tf.run.loop import StepLoop
from hdas_tf.run.optimizers import DynamicLossScale, FlatSGD
from hdas_tf.run.precision import policy_scope
from hdas_tf.run.run_dir import check_run_dir, json_ready, worker_directory, write_config
from hdas_tf.run.runtime import peak_rss_mib
from hdas_tf.run.schedules import CosineEpochSchedule
from hdas_tf.run.strategy import distributed_step, make_strategy
from hdas_tf.search.config import SearchConfig
from hdas_tf.search.losses import expected_depths, make_arch_regularizer, stage_flops_share
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
        raise ClusterError(f"edge clusters file {cfg.edge_clusters!r} has cell groups {list(hand_off.groups)}, "
                           f"but cells={cfg.cells!r} searches {list(groups)}: run stage 2 with stage 1's --cells")
    return hand_off


def fixed_cells(cfg: SearchConfig) -> genotypes.Genotype:
    """The fixed cell genotype of a stage or distribution search (GenotypeError if it has no cells)."""
    genotype = registry.resolve(cfg.genotype)
    if genotype.cells is None:
        raise GenotypeError(f"genotype {cfg.genotype!r} has no cells; a {cfg.search} search needs a cell genotype "
                            "(e.g. DARTS_V2, HC_DAS or a cell search's genotype.json)")
    return genotype


def check_inputs(cfg: SearchConfig) -> None:
    """Reads the files a config names (genotype, StacNAS clusters and hand-off) so that a bad one stops the run
    before it writes anything; raises a UserError (GenotypeError, ClusterError) naming the file and the problem."""
    if cfg.search != "cell":
        fixed_cells(cfg)
    elif cfg.genotype:
        registry.resolve(cfg.genotype)
    if cfg.stacnas == "clusters":
        stage1_clusters(cfg)
    elif cfg.stacnas == "members":
        stage2_edge_clusters(cfg)


def search_input(cfg: SearchConfig):
    """(weight_ds, arch_ds, info) of a search. The one-level update reads no architecture batches (arch_ds is
    None): its training batches are the weight part of the split, or with train_portion=1 the whole training
    set (the training pipeline, unaugmented unless ``cfg.augment``, no cutout)."""
    common = dict(batch_size=cfg.batch_size, seed=cfg.seed, data_dir=cfg.data_dir, image_size=cfg.image_size,
                  download=cfg.download, manual_dir=cfg.manual_dir, num_examples=cfg.num_examples,
                  augment=cfg.augment)
    if cfg.update == "one_level" and cfg.train_portion == 1.0:
        train_ds, _, info = data.train_test_datasets(cfg.dataset, cutout=0, repeat=True, **common)
        return train_ds, None, info
    weight_ds, arch_ds, info = data.search_datasets(cfg.dataset, train_portion=cfg.train_portion, **common)
    return weight_ds, None if cfg.update == "one_level" else arch_ds, info


@dataclasses.dataclass(frozen=True)
class SearchInputs:
    """The opened data of a search: the two halves of the search split (``arch_ds`` None for the one-level
    update) and what the model needs to know."""

    weight_ds: tf.data.Dataset
    arch_ds: tf.data.Dataset | None
    info: data.DataInfo
    steps_per_epoch: int


def open_inputs(cfg: SearchConfig) -> SearchInputs:
    """Everything a search reads before it writes anything (BUILD_NOTES "Errors and exit codes"): the files the
    config names (``check_inputs``) and the data set, opened and split (a missing set, a corrupt image or a
    split too small for the batch raises DataError here)."""
    check_inputs(cfg)
    weight_ds, arch_ds, info = search_input(cfg.resolved())
    steps_per_epoch = data.search_batches_per_epoch(info, cfg.batch_size, cfg.train_portion, cfg.num_examples)
    if steps_per_epoch < 1:  # search_datasets refuses such splits already; kept as the loop's precondition
        raise data.DataError(f"the weight half of {cfg.dataset} has fewer examples than one batch of "
                             f"{cfg.batch_size}; lower batch_size or raise num_examples")
    return SearchInputs(weight_ds, arch_ds, info, steps_per_epoch)


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
    """Top-2 edges per node, 'none' excluded (BUILD_NOTES "Deriving genotypes"), for every α group of a cell search; with per-edge op
    sets (StacNAS stage 2) each edge chooses among its own ops."""
    cells = {group: derive.parse_cell_alphas(
        arch[f"alpha_{group}"], op_names=space.cell_ops, steps=space.steps, ranking=ranking,
        op_mask=None if space.edge_ops is None else space.op_mask(group))
        for group in space.cell_groups}
    return genotypes.Genotype(cells=cells)


def make_supernet(cfg: SearchConfig, space: SearchSpace):
    """The supernet a config searches over ``space`` (``search_space``): the chain cell supernet, or the stage
    supernet on the config's fixed cells. ``hdas_tf.inspect`` reports exactly this network."""
    if cfg.search == "cell":
        return ChainSupernet(space, pool_bn=cfg.pool_bn)
    return StageSupernet(space, fixed_cells(cfg), pool_bn=cfg.pool_bn)


def build_search(cfg: SearchConfig, strategy, info: data.DataInfo, steps_per_epoch: int):
    """Builds (space, model, derive) inside the strategy scope."""
    space = search_space(cfg, info.num_classes)
    if cfg.search == "cell":
        regularizer = None
        derive = lambda arch: derive_cell_genotype(arch, space, cfg.edge_ranking)  # noqa: E731
    else:
        cell_genotype = fixed_cells(cfg)
        theta = None
        if cfg.theta == "flops":
            theta = stage_flops_share(cell_genotype, cfg.init_channels, info.image_shape[0])
        regularizer = make_arch_regularizer(space, cfg.depth_weight, cfg.complexity_weight, theta)

        def derive(arch):
            stages, _, lengths = derive_stage_genotype(arch, space, cfg.edge_ranking)
            return cell_genotype.with_stages(genotypes.Genotype(cells=None, stages=tuple(stages), stage_lengths=lengths))

    with strategy.scope():
        with policy_scope(cfg.mixed_precision):  # the supernet's layers keep the policy they are built with
            supernet = make_supernet(cfg, space)
        model = ArchitectureSearchModel(supernet, space.arch_shapes(), arch_regularizer=regularizer,
                                        unrolled=cfg.unrolled, weight_decay=cfg.weight_decay,
                                        arch_weight_decay=cfg.a_weight_decay, grad_clip=cfg.grad_clip, seed=cfg.seed,
                                        recompute=cfg.recompute, update=cfg.update)
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


def vote_splitting_clusters(cfg: SearchConfig):
    """The clusters the vote-splitting check of a cell search uses: stage 1's, the default set for a plain cell
    search; None where it does not apply (stage searches, StacNAS stage 2, whose edges hold one cluster)."""
    if cfg.search != "cell" or cfg.stacnas == "members":
        return None
    return stage1_clusters(cfg) if cfg.stacnas == "clusters" else clusters.DEFAULT_CLUSTERS


def log_vote_splitting(tb, step: int, arch: dict, space: SearchSpace, cluster_set) -> dict:
    """Flags every edge whose largest-α op is not the best member of the cluster with the largest summed weight
    (``clusters.vote_splitting``), per α group: the count as the scalar ``diagnostics/vote_splitting/<group>``,
    the flagged edges as text under it and in the log. Returns group → flagged ``VoteSplit``s."""
    edges = [(i, j) for i in range(space.steps) for j in range(i + 2)]
    flagged = {}
    for group in space.cell_groups:
        splits = [s for s in clusters.vote_splitting(arch[f"alpha_{group}"], space.cell_ops, cluster_set)
                  if s.split]
        flagged[group] = splits
        tb.scalars(step, {f"diagnostics/vote_splitting/{group}": float(len(splits))})
        lines = [f"| {s.edge} | node {edges[s.edge][0]} ← {edges[s.edge][1]} | {s.top_op} | {s.cluster} | "
                 f"{s.cluster_best} |" for s in splits]
        text = ("| edge | node ← source | largest α | cluster with largest summed weight | its best member |\n"
                "|---|---|---|---|---|\n" + "\n".join(lines)) if lines else "no edge splits its vote"
        with tb.writer.as_default():
            tf.summary.text(f"diagnostics/vote_splitting/{group}/edges", text, step=step)
        if splits:
            logging.info("vote splitting in %s: %s", group, "; ".join(
                f"edge {s.edge} (node {edges[s.edge][0]} <- {edges[s.edge][1]}): largest alpha {s.top_op}, but "
                f"cluster {s.cluster} (best {s.cluster_best}) has the largest summed weight" for s in splits))
    return flagged


def load_search(run_dir: str):
    """A search's config, search space and model as its latest checkpoint holds them: the model is built as the
    run built it (``build_search``, on the default strategy) and its variables restored (the optimizers' state is
    not). Returns (cfg, space, model, step). Raises ValueError naming what is missing."""
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{run_dir} is not a search run directory: {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"{path} has fields this version does not know: {unknown}")
    if doc.get("stage_lengths") is not None:
        doc["stage_lengths"] = tuple(doc["stage_lengths"])
    cfg = SearchConfig(**doc)
    checkpoint = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if checkpoint is None:
        raise ValueError(f"{run_dir} holds no checkpoint (checkpoints/ is written at every epoch end)")
    check_inputs(cfg)
    info = data.dataset_info(cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size,
                             manual_dir=cfg.manual_dir, download=cfg.download)
    space, model, _ = build_search(cfg, tf.distribute.get_strategy(), info, steps_per_epoch=1)
    # The variables by position, as SearchLoop writes them.
    tf.train.Checkpoint(variables=list(model.variables)).restore(checkpoint).assert_existing_objects_matched() \
        .expect_partial()
    return cfg, space, model, int(checkpoint.rsplit("-", 1)[1])


class SearchLoop(StepLoop):
    """The step loop of a search: a built ``ArchitectureSearchModel`` over a zipped (train, val) dataset, and every
    epoch a genotype derived from α, written with its documents, the selected genotype and α.

    Args:
      model: the search model, built with both optimizers inside ``strategy.scope()``.
      strategy: the run's tf.distribute strategy.
      dataset: an infinite ``((x_train, y_train), (x_val, y_val))`` dataset of *global* batches (``((x_train,
        y_train),)`` for the one-level update), deterministic for a given seed.
      run_dir: the run directory (BUILD_NOTES "Run directory layout").
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
        self.stopped_early = None

    def stop(self, reason: str) -> None:
        """Ends the search after the current epoch, whose files and checkpoint are written (DARTS+ early stopping)."""
        self.stopped_early = reason
        self.total_steps = int(self.step.numpy())

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
            "stopped_early": self.stopped_early,
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


def run_search(cfg: SearchConfig, run_dir: str, resume: bool = False, inputs: SearchInputs | None = None,
               out_dir: str | None = None) -> dict:
    """Runs (or resumes) a search in ``run_dir`` and returns the run summary written to run.json.

    ``inputs``: the ``open_inputs(cfg)`` of a caller that opened them already; a user's mistake (UserError) is
    raised before anything is written. ``out_dir``: where this process writes (``run_dir.worker_directory``:
    ``run_dir`` itself except on a non-chief worker of a multi-worker run); by default it is chosen here. A
    resumed run reads ``run_dir``."""
    if out_dir is None:
        with worker_directory(run_dir, cfg.strategy) as out_dir:
            return run_search(cfg, run_dir, resume, inputs, out_dir)
    t_start = time.monotonic()
    cfg = cfg.resolved()  # the per-data-set defaults (augment), so config.json records what ran
    source_dir, run_dir = run_dir, out_dir  # everything below writes to out_dir
    check_run_dir(run_dir, resume)
    inputs = open_inputs(cfg) if inputs is None else inputs
    weight_ds, arch_ds, info, steps_per_epoch = (inputs.weight_ds, inputs.arch_ds, inputs.info,
                                                 inputs.steps_per_epoch)
    os.makedirs(run_dir, exist_ok=True)
    write_config(run_dir, cfg)
    strategy = make_strategy(cfg.strategy)
    t_build = time.monotonic()
    space, model, derive = build_search(cfg, strategy, info, steps_per_epoch)
    build_s = time.monotonic() - t_build
    logging.info("search space: %s; 10^%.1f architectures; %d weight parameters, %d architecture scalars",
                 space, log10_space_size(space), sum(int(np.prod(v.shape)) for v in model.weight_variables),
                 space.num_arch_params())

    from hdas_tf.summaries.logger import SummaryLogger  # TensorBoard is a leaf concern of the run
    from hdas_tf.summaries.search_board import SearchBoard

    tb = SummaryLogger(os.path.join(run_dir, "tb"))
    masks = None if space.edge_ops is None else {f"alpha_{g}": space.op_mask(g) for g in space.cell_groups}
    vote_clusters = vote_splitting_clusters(cfg)
    board = SearchBoard(tb, space, os.path.join(run_dir, "genotypes"), masks=masks,
                        depths_of=lambda a, n: expected_depths(a, n, space.window, space.stage_ops).numpy())
    # The Hessian of the architecture loss: on a validation batch, or on a training batch under the one-level
    # update (which has no validation half).
    hessian_batch = (next(iter((weight_ds if arch_ds is None else arch_ds).take(1))) if cfg.hessian_every
                     else None)

    def on_step(step, out):
        if step % cfg.log_every == 0:
            lr = float(model.w_optimizer.learning_rate)
            tb.scalars(step, {f"step/{k}": v for k, v in out.items()} | {"step/w_lr": lr})
            board.alpha_lines(step, loop.arch_numpy())

    def on_epoch_end(epoch, record, genotype):
        step = record["step"]
        tb.scalars(step, {f"epoch/{k}": record[k] for k in ("loss_w", "acc_w", "loss_a", "acc_a", "images_per_s")}
                   | {"epoch/w_lr": float(model.w_optimizer.learning_rate)}
                   | {f"epoch/{k}": v for k, v in record["extra"].items()})
        extra = {}
        if cfg.hessian_every and epoch % cfg.hessian_every == 0:
            from hdas_tf.search.hessian import arch_hessian_eigenvalue

            eigenvalue = arch_hessian_eigenvalue(model, *hessian_batch, seed=cfg.seed)
            extra["diagnostics/hessian_eigenvalue/arch"] = eigenvalue
        values = board.epoch(step, epoch, loop.arch_numpy(), genotype, extra)
        if vote_clusters is not None:
            log_vote_splitting(tb, step, loop.arch_numpy(), space, vote_clusters)
            tb.flush()
        skips = max((v for k, v in values.items() if k.startswith("diagnostics/skip_connections/")), default=0)
        if cfg.stop_on_skips and skips >= cfg.stop_on_skips:
            loop.stop(f"a derived normal cell holds {int(skips)} skip connections after epoch {epoch} "
                      f"(--stop_on_skips={cfg.stop_on_skips})")
            logging.warning("search stopped: %s", loop.stopped_early)

    # The one-level step reads the training batch alone: its elements are ((x, y),).
    dataset = tf.data.Dataset.zip((weight_ds,) if arch_ds is None else (weight_ds, arch_ds)).prefetch(2)
    loop = SearchLoop(model, strategy, dataset, run_dir, steps_per_epoch, cfg.epochs, derive,
                      max_steps=cfg.max_steps, select=cfg.genotype_selection, log_every=cfg.log_every,
                      on_epoch_end=on_epoch_end, on_step=on_step, documents=derive_documents(cfg, space),
                      save_schedule=SaveSchedule(cfg.checkpoint_every_steps, cfg.checkpoint_every_minutes),
                      resume_dir=source_dir, jit_compile=cfg.jit_compile)
    if resume:
        loop.restore()
    if int(loop.step.numpy()) == 0:
        tb.hparams({k: v for k, v in json_ready(cfg).items() if isinstance(v, (int, float, str, bool))})
        board.write_layout(hessian=bool(cfg.hessian_every))
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
        "stopped_early": result["stopped_early"],
        "mixed_precision": cfg.mixed_precision,
        "jit_compile": cfg.jit_compile,
        "arch_sha256": loop.arch_digest(),
    }
    write_json_atomic(os.path.join(run_dir, "run.json"), run)
    write_search_report(run_dir, run, info)
    logging.info("search finished: %d steps in %.1fs (%.1f images/s), genotype in %s; α sha256 %s", result["steps"],
                 run["wall_s"], result["images_per_s"] or 0.0, os.path.join(source_dir, "genotype.json"),
                 run["arch_sha256"])
    return run


def write_search_report(run_dir: str, run: dict, info: data.DataInfo) -> None:
    """``RUN_DIR/report.md`` (``hdas_tf.summaries.report``) of the selected genotype."""
    from hdas_tf.summaries.report import eval_network_sizes, search_report

    genotype = genotypes.Genotype.load(os.path.join(run_dir, "genotype.json"))
    try:
        sizes = eval_network_sizes(genotype, info.num_classes, info.image_shape)
    except ValueError as e:  # e.g. an input too small for the evaluation network's reductions
        logging.warning("report.md without the evaluation network's size: %s", e)
        sizes = None
    search_report(run_dir, run, genotype, sizes)

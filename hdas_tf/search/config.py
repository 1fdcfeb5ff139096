"""Run configurations as frozen dataclasses: what a search run needs, independent of how it was given.

The absl mains fill these from flags; tests and notebooks build them directly. Defaults are the
paper's CIFAR-10 settings (BUILD_NOTES "Optimiser parity").
"""

from __future__ import annotations

import dataclasses

from hdas_tf.run.precision import PRECISIONS
from hdas_tf.run.strategy import STRATEGIES, check_run_options

SEARCH_KINDS = ("cell", "distribution", "stage")
EDGE_RANKINGS = ("softmax", "logit")
SELECTIONS = ("last", "best_val")
STACNAS_MODES = ("off", "clusters", "members")
UPDATES = ("bilevel", "one_level")  # ArchitectureSearchModel(update=...)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything a search run needs.

    Args (the main ones):
      search: "cell" (DARTS / H^c-DAS), "distribution" (H^s-DAS β phase) or "stage" (H^s-DAS DAG phase).
      cells: "shared" or "stage_specific" cell α (cell search).
      stage: "shared" or "stage_specific" stage α (stage searches).
      genotype: the fixed cell genotype of a stage search (registry name or file).
      epochs, max_steps: the run stops after ``epochs`` epochs or ``max_steps`` steps in total.
      num_examples: cap on the training examples (tiny runs).
      augment: the augmentation of both halves of the search split (``data.AUGMENTATIONS``, never cutout); None
        resolves per data set (``data.default_search_augment``: "cifar" for CIFAR and folders, "none" for the
        digits) in ``resolved()``, which a run calls before it records its config.
      unrolled: second-order architecture gradient.
      recompute: keep only block inputs for the backward pass and recompute the rest (less memory).
      op_tracebacks: keep TensorFlow's per-op Python stack traces (``hdas_tf.run.op_tracebacks``; off by default).
      update: "bilevel" (DARTS: A on the validation half, w on the training half) or "one_level" (StacNAS: A and w
        from one loss on the same training batch; train_portion may then be 1, the whole training set).
      hessian_every: log the dominant eigenvalue of the architecture Hessian every N epochs (0 = off).
      stop_on_skips: end the search after the first epoch whose derived normal cell holds at least this many skip
        connections (DARTS+ early stopping; 0 = off; cell searches).
      mixed_precision: "off", "bf16" or "fp16" (``hdas_tf.run.precision``); jit_compile: XLA for the step.
      checkpoint_every_steps, checkpoint_every_minutes: checkpoints between epoch ends (0 = none).
      stacnas: StacNAS mode of a cell search (``hdas_tf.space.clusters``): "off"; "clusters" (stage 1: one
        representative op per cluster of ``clusters``, a file, or the default set when None); "members"
        (stage 2: each edge searches the members of the cluster it won in stage 1, read from the hand-off
        file ``edge_clusters``).
    """

    search: str = "cell"
    cells: str = "shared"
    stacnas: str = "off"
    clusters: str | None = None
    edge_clusters: str | None = None
    stage: str = "stage_specific"
    genotype: str | None = None
    stage_lengths: tuple[int, int, int] | None = None
    window: int = 3
    min_cells: int = 4
    max_cells: int = 8
    depth_weight: float = 1.0
    complexity_weight: float = 0.4
    theta: str = "uniform"
    dataset: str = "digits"
    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    num_examples: int | None = None
    augment: str | None = None
    train_portion: float = 0.5
    batch_size: int = 64
    epochs: int = 50
    max_steps: int | None = None
    init_channels: int = 16
    layers: int = 8
    pool_bn: bool = True
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    unrolled: bool = False
    update: str = "bilevel"
    edge_ranking: str = "softmax"
    genotype_selection: str = "last"
    seed: int = 0
    deterministic: bool = False
    grappler: bool = False
    op_tracebacks: bool = False
    recompute: bool = False
    inter_op_threads: int = 0
    intra_op_threads: int = 0
    strategy: str = "default"
    mixed_precision: str = "off"
    jit_compile: bool = False
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 0.0
    log_every: int = 10
    hessian_every: int = 0
    stop_on_skips: int = 0

    def __post_init__(self):
        checks = [
            ("search", self.search, SEARCH_KINDS),
            ("strategy", self.strategy, STRATEGIES),
            ("edge_ranking", self.edge_ranking, EDGE_RANKINGS),
            ("genotype_selection", self.genotype_selection, SELECTIONS),
            ("theta", self.theta, ("uniform", "flops")),
            ("stacnas", self.stacnas, STACNAS_MODES),
            ("update", self.update, UPDATES),
            ("mixed_precision", self.mixed_precision, PRECISIONS),
        ]
        if self.augment is not None:
            from hdas_tf import data  # here, not at the top: the config module stays free of TensorFlow

            checks.append(("augment", self.augment, data.AUGMENTATIONS))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, received {value!r}")
        positive = dict(batch_size=self.batch_size, epochs=self.epochs, init_channels=self.init_channels,
                        window=self.window, log_every=self.log_every)
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, received {value}")
        for name, value in dict(hessian_every=self.hessian_every, stop_on_skips=self.stop_on_skips).items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), received {value}")
        if self.stop_on_skips and self.search != "cell":
            raise ValueError(f"stop_on_skips watches the normal cells a cell search derives; a {self.search} search "
                             "keeps its cells fixed: leave stop_on_skips at 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, received {self.max_steps}")
        if self.checkpoint_every_steps < 0 or self.checkpoint_every_minutes < 0:
            raise ValueError("checkpoint_every_steps and checkpoint_every_minutes must be >= 0 (0 = only at epoch ends)")
        check_run_options(self.strategy, self.jit_compile)
        if self.unrolled and self.mixed_precision == "fp16":
            raise ValueError("unrolled (second-order) search has no loss scaling: use mixed_precision 'bf16' or 'off' "
                             "with it")
        if self.train_portion == 1.0 and self.update != "one_level":
            raise ValueError("train_portion=1 leaves no validation half for the architecture step; it is for "
                             "update='one_level' (A and w from the same batches); or use a portion in (0, 1)")
        if not 0.0 < self.train_portion <= 1.0:
            raise ValueError(f"train_portion must be in (0, 1) (or 1 with update='one_level'), received "
                             f"{self.train_portion}")
        if self.update == "one_level" and self.unrolled:
            raise ValueError("unrolled (second order) is a form of the bi-level update; the one-level update has "
                             "none: leave unrolled off, or use update='bilevel'")
        if self.update == "one_level" and self.genotype_selection == "best_val":
            raise ValueError("genotype_selection='best_val' selects by the accuracy on the architecture batches, "
                             "which the one-level update does not have: use genotype_selection='last'")
        if self.stacnas != "off" and self.search != "cell":
            raise ValueError(f"stacnas={self.stacnas!r} is a mode of the cell search; received search={self.search!r}")
        if self.clusters and self.stacnas != "clusters":
            raise ValueError("clusters (a cluster-set file) is read by StacNAS stage 1 only: set stacnas='clusters', "
                             "or leave clusters unset")
        if (self.stacnas == "members") != bool(self.edge_clusters):
            raise ValueError("StacNAS stage 2 (stacnas='members') needs edge_clusters, the edge_clusters.json a "
                             "stage-1 search (stacnas='clusters') wrote in its run directory; edge_clusters is "
                             "read by stage 2 only")
        if self.search != "cell" and not self.genotype:
            raise ValueError(f"a {self.search} search needs a fixed cell genotype: set genotype "
                             "(a registry name such as DARTS_V2, or a genotype.json from a cell search)")

    def resolved(self) -> "SearchConfig":
        """This config with the per-data-set defaults filled in (``augment``); what a run records."""
        if self.augment is not None:
            return self
        from hdas_tf import data

        return dataclasses.replace(self, augment=data.default_search_augment(self.dataset))

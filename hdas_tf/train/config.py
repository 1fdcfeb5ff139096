"""What a training run needs, as a frozen dataclass: the absl main fills it from flags, tests and notebooks
build it directly."""

from __future__ import annotations

import dataclasses

from hdas_tf import data
from hdas_tf.nn.eval_networks import LAYOUTS
from hdas_tf.run.schedules import LR_SCHEDULES
from hdas_tf.run.precision import PRECISIONS
from hdas_tf.run.strategy import STRATEGIES, check_run_options


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Defaults are the DARTS CIFAR-10 recipe (BUILD_NOTES "Evaluation networks and training recipes") on the digits.

    Args (the main ones):
      genotype: the cells: a registry name (e.g. DARTS_V2) or a genotype file, which may also carry stage
        DAGs (then the network is a stage network).
      stage_genotype: stage DAGs (registry name or file) that add to or replace the genotype's.
      layout: "cifar" or "imagenet" network layout. init_channels, layers: C and L (layers: chain only).
      auxiliary, auxiliary_weight: auxiliary head and its loss weight.
      drop_path_rate: the drop path rate of the last epoch, ramped linearly from 0 at the first.
      validation_fraction: evaluate on this held-out share of the training split instead of the test split.
      augment, cutout: "cifar" (pad-4 crop, flip, cutout after normalisation), "autoaugment" (AutoAugment's
        CIFAR-10 policy, then the cifar recipe), "imagenet" (random-resized crop, flip, colour jitter) or
        "none"; cutout side (cifar and autoaugment only, 0 = off).
      lr, lr_min, lr_schedule, lr_decay, warmup_epochs: SGD learning rate: "cosine" per epoch from lr to
        lr_min, or "exponential" ×lr_decay per epoch; optionally after warmup_epochs of linear warm-up.
      weight_decay: coupled L2. grad_clip: global-norm clip after cross-replica aggregation (0 = off).
      recompute: keep only block inputs for the backward pass and recompute the rest (less memory).
      op_tracebacks: keep TensorFlow's per-op Python stack traces (``hdas_tf.run.op_tracebacks``; off by default).
      mixed_precision: "off", "bf16" or "fp16" (``hdas_tf.run.precision``); jit_compile: XLA for the step.
      checkpoint_every_steps, checkpoint_every_minutes: checkpoints between epoch ends (0 = none).
    """

    genotype: str | None = None
    stage_genotype: str | None = None
    layout: str = "cifar"
    init_channels: int = 36
    layers: int = 20
    pool_bn: bool = True
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_rate: float = 0.2
    dataset: str = "digits"
    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    num_examples: int | None = None
    validation_fraction: float = 0.0
    augment: str = "cifar"
    cutout: int = 16
    batch_size: int = 96
    epochs: int = 600
    lr: float = 0.025
    lr_min: float = 0.0
    lr_schedule: str = "cosine"
    lr_decay: float = 0.97
    warmup_epochs: int = 0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
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
    log_every: int = 50

    def __post_init__(self):
        if not self.genotype:
            raise ValueError("genotype is required: a registry name (e.g. DARTS_V2) or a genotype file")
        for name, value, allowed in (("layout", self.layout, LAYOUTS), ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("augment", self.augment, data.AUGMENTATIONS),
                                     ("strategy", self.strategy, STRATEGIES),
                                     ("mixed_precision", self.mixed_precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, received {value!r}")
        for name, value in dict(batch_size=self.batch_size, epochs=self.epochs, init_channels=self.init_channels,
                                log_every=self.log_every).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, received {value}")
        if self.checkpoint_every_steps < 0 or self.checkpoint_every_minutes < 0:
            raise ValueError("checkpoint_every_steps and checkpoint_every_minutes must be >= 0 (0 = only at epoch ends)")
        check_run_options(self.strategy, self.jit_compile)
        if self.layers < 3:
            raise ValueError(f"layers must be >= 3, received {self.layers}")
        for name, value in dict(auxiliary_weight=self.auxiliary_weight, weight_decay=self.weight_decay,
                                grad_clip=self.grad_clip, lr=self.lr, lr_min=self.lr_min, momentum=self.momentum,
                                cutout=self.cutout, warmup_epochs=self.warmup_epochs).items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, received {value}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), received {self.drop_path_rate}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), received {self.label_smoothing}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), received {self.validation_fraction}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], received {self.lr_decay}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")

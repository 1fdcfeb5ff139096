"""The candidate ops of DARTS-family search spaces as data: what kind each op is and its hyperparameters.

Code that needs an op's kind, kernel size, dilation or pooling type asks ``op_spec(name)``; nothing parses
op names. The layers are built from these specs in ``hdas_tf.nn.ops.make_op``.
"""

from __future__ import annotations

import dataclasses

KINDS = ("none", "skip", "pool", "sep_conv", "dil_conv")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One candidate op.

    Attributes:
      name: str. The op's name in genotypes, α's columns and variable names.
      kind: str. One of ``KINDS``: 'none' (the zero op), 'skip' (identity; FactorizedReduce at stride 2),
        'pool' (3×3 pooling, then a non-affine BN), 'sep_conv' (two ReLU → depthwise → 1×1 → BN blocks),
        'dil_conv' (one ReLU → dilated depthwise → 1×1 → BN block).
      kernel_size: int or None. The spatial kernel (pooling window or depthwise kernel); None for none/skip.
      dilation: int or None. The depthwise dilation of a conv op; None for the others.
      pool: str or None. 'max' or 'avg' for a pooling op; None for the others.
      has_weights: bool. Trainable kernels at stride 1. A strided skip (FactorizedReduce) has kernels even
        though skip_connect has none: see ``weighted``.
    """

    name: str
    kind: str
    kernel_size: int | None = None
    dilation: int | None = None
    pool: str | None = None
    has_weights: bool = False

    def weighted(self, stride: int) -> bool:
        """Whether the op has trainable kernels at ``stride`` (a strided skip_connect is a FactorizedReduce)."""
        return self.has_weights or (self.kind == "skip" and stride != 1)


_SPECS = (
    OpSpec("max_pool_3x3", "pool", kernel_size=3, pool="max"),
    OpSpec("avg_pool_3x3", "pool", kernel_size=3, pool="avg"),
    OpSpec("skip_connect", "skip"),
    OpSpec("sep_conv_3x3", "sep_conv", kernel_size=3, dilation=1, has_weights=True),
    OpSpec("sep_conv_5x5", "sep_conv", kernel_size=5, dilation=1, has_weights=True),
    OpSpec("dil_conv_3x3", "dil_conv", kernel_size=3, dilation=2, has_weights=True),
    OpSpec("dil_conv_5x5", "dil_conv", kernel_size=5, dilation=2, has_weights=True),
    OpSpec("none", "none"),
)
OPS: dict[str, OpSpec] = {spec.name: spec for spec in _SPECS}

# Canonical op order of the cell level, 'none' last. Index order is part of the checkpoint format: α's last
# axis follows this tuple (or the op subset a search space names, in this order).
CELL_OPS = tuple(OPS)
# Stage-level ops: parameter-free (but for the pooling BN), always stride 1.
STAGE_OPS = tuple(name for name in CELL_OPS if not OPS[name].has_weights)


def op_spec(name: str) -> OpSpec:
    """The spec of op ``name``; an unknown name raises ValueError listing the known ones."""
    spec = OPS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")
    return spec

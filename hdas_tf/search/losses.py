"""Architecture losses of H-DAS stage searches: the depth loss (paper Eq. 2, Eq. 4) and the complexity loss (Eq. 5),
combined with the validation loss as L_arch = L_val + δ·L_depth + γ·L_comp (Eq. 6;
BUILD_NOTES "Depth and complexity losses").

Why a depth loss: a mixed stage edge is cheapest to train when it skips straight from the stage inputs, so
without it the search collapses to shallow, wide stages. The loss rewards the *expected depth* of every
cell under the current α:

- edge weight w_{j,e} = softmax over cell j's candidate edges e of (max over non-'none' ops of α_{j,e,o});
- d = 0 for the two stage inputs (projections), d_j = Σ_e w_{j,e}·(d_{src(e)} + 1);
- L_depth = −Σ_stages (1/N) Σ_{j=1..N} (1/j)·d_j·(1 + j·b_j), j 1-based, b_j = softmax(β)_n for the
  candidate stage length n = j in the distribution search (Eq. 4), else 0 (Eq. 2).

L_comp = Σ_stages θ_s Σ_n softmax(β_s)_n·n (Eq. 5) charges the expected stage length, θ_s = 1 by default
or the stage's per-cell FLOPs share (``stage_flops_share``).

All functions take raw α/β tensors (any float dtype, float64 for finite-difference tests) and are
differentiable in them.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from hdas_tf.nn.stages import num_stage_edges, stage_edge_sources


def _non_none(op_names) -> list[int]:
    keep = [o for o, name in enumerate(op_names) if name != "none"]
    if not keep:
        raise ValueError(f"the stage op set has no op other than 'none': {list(op_names)}")
    return keep


def expected_depths(alpha, n_cells: int, window: int, op_names) -> tf.Tensor:
    """Expected depth d_j of cells 0..n_cells-1 of one stage under α [edges, ops], shape [n_cells]
    (BUILD_NOTES "Depth and complexity losses").

    Only the first Σ_{j<n} min(m, j+2) rows are read (a shared α sized for a longer stage has more).
    """
    alpha = tf.convert_to_tensor(alpha)
    need = num_stage_edges(n_cells, window)
    if alpha.shape.rank != 2 or alpha.shape[0] < need or alpha.shape[1] != len(op_names):
        raise ValueError(f"stage α for {n_cells} cells, window {window}, {len(op_names)} ops needs shape "
                         f"({need}, {len(op_names)}), received {tuple(alpha.shape)}")
    # Edge strength: its strongest non-'none' op, on raw α (one gather and one max for all edges).
    strength = tf.reduce_max(tf.gather(alpha[:need], _non_none(op_names), axis=1), axis=1)
    zero = tf.zeros([], alpha.dtype)
    depth = [zero, zero]  # the two stage inputs
    start = 0
    for j, srcs in enumerate(stage_edge_sources(n_cells, window)):
        w = tf.nn.softmax(strength[start:start + len(srcs)])  # over cell j's candidate edges
        start += len(srcs)
        depth.append(tf.reduce_sum(w * (tf.stack([depth[t] for t in srcs]) + 1.0)))
    return tf.stack(depth[2:])


def depth_loss(alphas_per_stage, space, betas=None, stage_op_names=None) -> tf.Tensor:
    """L_depth = −Σ_s (1/N_s) Σ_{j=1..N_s} (1/j)·d_j·(1 + j·b_j) (paper Eq. 2; with β, Eq. 4).

    Args:
      alphas_per_stage: three raw α tensors [edges, ops], one per stage. With a shared stage α pass the same
        tensor three times: it counts in every stage, so its gradient is the sum of the three stages'.
      space: SearchSpace. Gives N_s (``cells_per_stage``: N_max in a distribution search), the window m and,
        with β, the candidate lengths.
      betas: three raw β tensors, or None (b_j = 0: Eq. 2).
      stage_op_names: the ops of α's columns. Defaults to ``space.stage_ops``.
    """
    op_names = tuple(space.stage_ops if stage_op_names is None else stage_op_names)
    if len(alphas_per_stage) != 3:
        raise ValueError(f"depth_loss: expected three stage α tensors, received {len(alphas_per_stage)}")
    if betas is not None:
        if space.max_cells is None:
            raise ValueError("depth_loss: betas given, but the space has no distribution search (max_cells=None)")
        if len(betas) != 3:
            raise ValueError(f"depth_loss: expected three β tensors, received {len(betas)}")
    total = None
    for s, alpha in enumerate(alphas_per_stage):
        n = space.cells_per_stage[s]
        d = expected_depths(alpha, n, space.window, op_names)
        j = tf.range(1, n + 1, dtype=d.dtype)
        per_cell = d / j
        if betas is not None:
            b = tf.nn.softmax(tf.cast(betas[s], d.dtype))
            if b.shape[0] != len(space.candidate_lengths):
                raise ValueError(f"depth_loss: β of stage {s + 1} must have {len(space.candidate_lengths)} entries "
                                 f"(lengths {list(space.candidate_lengths)}), received {tuple(b.shape)}")
            # b_j for j = 1..N: zero below N_min, softmax(β)_n at j = n (n runs N_min..N_max = N).
            b = tf.concat([tf.zeros([space.min_cells - 1], d.dtype), b], axis=0)
            per_cell = per_cell * (1.0 + j * b)
        stage = -tf.reduce_sum(per_cell) / float(n)
        total = stage if total is None else total + stage
    return total


def complexity_loss(betas, candidate_lengths, theta=None) -> tf.Tensor:
    """L_comp = Σ_s θ_s Σ_n softmax(β_s)_n·n: the θ-weighted expected stage length (paper Eq. 5).

    Args:
      betas: raw β tensors, one per stage, each [len(candidate_lengths)].
      candidate_lengths: the stage lengths n that β's entries stand for.
      theta: per-stage weights θ_s; None means θ_s = 1.
    """
    lengths = [int(n) for n in candidate_lengths]
    if not betas:
        raise ValueError("complexity_loss: no β tensors given")
    if theta is not None and len(theta) != len(betas):
        raise ValueError(f"complexity_loss: theta needs one weight per stage ({len(betas)}), received {theta!r}")
    total = None
    for s, beta in enumerate(betas):
        beta = tf.convert_to_tensor(beta)
        if beta.shape != (len(lengths),):
            raise ValueError(f"complexity_loss: β of stage {s + 1} must have shape ({len(lengths)},), "
                             f"received {tuple(beta.shape)}")
        expected_n = tf.reduce_sum(tf.nn.softmax(beta) * tf.constant(lengths, beta.dtype))
        term = expected_n if theta is None else float(theta[s]) * expected_n
        total = term if total is None else total + term
    return total


def stage_alphas(arch: Mapping, space) -> list:
    """The α each stage reads, from an arch dict keyed as ``SearchSpace.arch_shapes()``."""
    if space.stage == "shared":
        return [arch["alpha_stage"]] * 3
    return [arch[f"alpha_stage{s + 1}"] for s in range(3)]


def stage_betas(arch: Mapping, space):
    """The three β of a distribution search, or None."""
    if space.max_cells is None:
        return None
    return [arch[f"beta_stage{s + 1}"] for s in range(3)]


def make_arch_regularizer(space, depth_weight: float = 1.0, complexity_weight: float = 0.4, theta=None):
    """The δ·L_depth + γ·L_comp part of the architecture loss (Eq. 6) for ``ArchitectureSearchModel``.

    Returns None for a chain space (no stage level: nothing to regularise); otherwise
    ``fn(arch) -> (total, {"depth_loss": L_depth, "complexity_loss": L_comp})`` with the terms unweighted
    (for logging) and total = δ·L_depth + γ·L_comp. L_comp is 0 without a β search; a zero weight drops its
    term from the total.

    Args:
      space: SearchSpace.
      depth_weight: δ. Defaults to 1 (BUILD_NOTES "Depth and complexity losses").
      complexity_weight: γ. Defaults to 0.4.
      theta: three θ_s for L_comp; None = 1 each (see ``stage_flops_share`` for the FLOPs-share option).
    """
    if space.stage == "chain":
        return None
    if depth_weight < 0 or complexity_weight < 0:
        raise ValueError(f"make_arch_regularizer: weights must be >= 0, received depth_weight={depth_weight}, "
                         f"complexity_weight={complexity_weight}")
    if theta is not None and len(theta) != 3:
        raise ValueError(f"make_arch_regularizer: theta needs three per-stage weights, received {theta!r}")
    def regularizer(arch):
        alphas = [tf.cast(a, tf.float32) for a in stage_alphas(arch, space)]
        betas = stage_betas(arch, space)
        betas = None if betas is None else [tf.cast(b, tf.float32) for b in betas]
        depth = depth_loss(alphas, space, betas)
        comp = complexity_loss(betas, space.candidate_lengths, theta) if betas is not None else tf.constant(0.0)
        total = tf.constant(0.0)
        if depth_weight:
            total = total + depth_weight * depth
        if complexity_weight and betas is not None:
            total = total + complexity_weight * comp
        return total, {"depth_loss": depth, "complexity_loss": comp}

    return regularizer


# === θ_s as the per-cell FLOPs share (Eq. 5 option) ===


def stage_flops_share(cell_genotype, init_channels: int, image_size: int) -> tuple[float, float, float]:
    """θ_s = MACs of one normal cell of stage s / Σ over the three stages' (the three sum to 1).

    A cell of stage s has C_s = 2^s·C channels, reads a state of width C_s·|concat| (as in the stage
    network) and runs at the stage-1 resolution ``image_size`` halved s times (PyTorch output size of the
    stride-2 reductions). MACs follow ``macs.layer_macs`` (convolutions only, the mult-add convention).
    With θ from here L_comp is about 1/3 of its θ = 1 value; scale γ accordingly.

    Args:
      cell_genotype: Genotype with cells (shared or stage-specific); stage s uses its normal{s+1} cell.
      init_channels: C.
      image_size: spatial size of the stage-1 feature map (32 for CIFAR; 28 in the ImageNet layout).
    """
    # Imported here: macs sits above the evaluation networks in the import graph, and only this option
    # needs it.
    from hdas_tf.nn.cells import FixedCell
    from hdas_tf.nn.macs import layer_macs

    macs, size = [], int(image_size)
    for s in range(3):
        cell = cell_genotype.cell_for(f"normal{s + 1}")
        channels = int(init_channels) * 2 ** s
        layer = FixedCell(channels, cell.nodes, cell.concat)
        state = (1, size, size, channels * len(cell.concat))
        macs.append(layer_macs(layer, (state, state))[0])
        size = (size - 1) // 2 + 1
    total = float(sum(macs))
    return tuple(m / total for m in macs)

"""Host calibration for the issue-7 speed goals: the networks of the PyTorch reference configurations re-written in
plain PyTorch from the conventions of hdas_tf's BUILD_NOTES ("Mixed ops and the PyTorch grid" to "Optimiser parity";
not from any published repository), so that hdas_tf and PyTorch can be timed on the same host. The goals' reference
figures are fixed numbers from one unnamed host, and the hosts this project runs on differ by up to 3×.

- ``--config=train``: the DARTS_V2 evaluation network (C=36, L=20, auxiliary head at 0.4, drop path 0.2, affine
  BN after pooling as every evaluation-network BN), SGD (momentum 0.9, coupled weight decay 3e-4, clip 5) — the benchmark's ``train`` row.
  Parameters: 3,351,502 (3,827,928 with the auxiliary head), as ``hdas_tf.inspect`` counts.
- ``--config=cell_search``: the DARTS cell-search supernet (C=16, L=8, 8 ops per edge, 'none' computed as
  zeros, non-affine BN), a search step: Adam on α (lr 3e-4, β 0.5/0.999, wd 1e-3) on a validation batch,
  then the weight step on a training batch of the same size. Weight parameters: 1,930,618, as hdas_tf's
  supernet. ``--order=2``: the α gradient of DARTS Eq. 7–8 — the validation loss at the virtual step
  w' = w − ξ(momentum·v + ∇w L_train + wd·w), minus ξ times the finite-difference Hessian-vector product
  (∇α L_train(w⁺) − ∇α L_train(w⁻)) / 2ε, w± = w ± ε∇w' L_val, ε = 0.01 / ‖∇w' L_val‖ (ξ = the weight
  learning rate). The virtual weights are used through ``torch.func.functional_call`` instead of a copied
  network, which, if anything, makes this faster than code that builds a copy every step.
  ``--cells=stage_specific``: the H^c-DAS cell supernet, the same cells with 5 α groups (normal1, reduce1,
  normal2, reduce2, normal3).

- ``--config=stage_search``: the H^s-DAS stage supernet: DARTS_V2 cells (affine, their pooling BN too),
  C=16, stages of 6-6-6, window 3, stem 4C; states 0 and 1 of a stage are non-affine 1×1 ReLUConvBN
  projections of its input to 4·C_s; cell j reads the sum of mixed stage edges (max/avg pool + non-affine BN,
  skip, 'none' as zeros) from the last min(3, j+2) states as both its inputs; stage output = concat of the
  last two cells; the reduction cells read the stage output as both inputs. First-order search step as
  for ``cell_search`` (no depth or complexity loss: they are a few scalar ops), or second order with
  ``--order=2`` as for ``cell_search``. Weight parameters: 918,186, as hdas_tf's ``StageSupernet``; α [17, 4]
  per stage.
- ``--config=distribution_search``: the cell-distribution supernet:
  the stage supernet with ``--max_cells`` cells per stage (default 6, L=20) whose stage output is
  Σ_n softmax(β)_n · concat(cell n−2, cell n−1) over n ∈ [``--min_cells``, ``--max_cells``]; β is searched
  with α. The depth and complexity losses are left out as above. Weight parameters: 918,186 (6 cells) and
  1,150,474 (8 cells, L=26), as hdas_tf's; β has n_max − n_min + 1 entries per stage.

Timed as the issue times the reference: 2 threads, 32×32 inputs, 10 classes, the median of 10 steps after
3 warm-up steps. Prints one JSON object. Needs ``pip install torch==2.13.0`` (``scripts/torch_reference.sh``).
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

OPS = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5", "none"]


def bn(c, affine):
    return nn.BatchNorm2d(c, affine=affine, eps=1e-5, momentum=0.1)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, affine):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), bn(c_out, affine))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine):
        super().__init__()
        self.a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = bn(c_out, affine)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.a(x), self.b(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x.mul(0.0) if self.stride == 1 else x[:, :, ::self.stride, ::self.stride].mul(0.0)


def dw_block(c, k, stride, dilation, affine):
    """ReLU → depthwise k×k (groups = C, as PyTorch code writes it) → 1×1 → BN."""
    pad = dilation * (k - 1) // 2
    return [nn.ReLU(), nn.Conv2d(c, c, k, stride, pad, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), bn(c, affine)]


def make_op(name, c, stride, affine):
    if name == "none":
        return Zero(stride)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv"):
        k = int(name[-1])
        return nn.Sequential(*dw_block(c, k, stride, 1, affine), *dw_block(c, k, 1, 1, affine))
    if name.startswith("dil_conv"):
        return nn.Sequential(*dw_block(c, int(name[-1]), stride, 2, affine))
    pool = nn.MaxPool2d(3, stride, 1) if name == "max_pool_3x3" else nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    return nn.Sequential(pool, bn(c, affine))  # affine where the op's other BNs are (BUILD_NOTES "BatchNorm conventions")


def drop_path(x, rate):
    keep = 1.0 - rate
    return x / keep * torch.empty(x.size(0), 1, 1, 1).bernoulli_(keep)


class MixedOp(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c, stride, False) for name in OPS)

    def forward(self, x, w):
        return sum(wi * op(x) for wi, op in zip(w, self.ops))


class Cell(nn.Module):
    """A search cell (``nodes=None``: every edge a MixedOp) or a fixed cell of a genotype."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, nodes=None, concat=(2, 3, 4, 5)):
        super().__init__()
        affine = nodes is not None
        self.pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, affine)
        self.pre1 = ReLUConvBN(c_p, c, affine)
        self.nodes, self.concat = nodes, list(concat)
        if nodes is None:
            self.edges = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1) for i in range(4) for j in range(i + 2))
        else:
            self.edges = nn.ModuleList(make_op(op, c, 2 if reduction and src < 2 else 1, True)
                                       for node in nodes for op, src in node)

    def forward(self, s0, s1, weights=None, rate=0.0):
        states = [self.pre0(s0), self.pre1(s1)]
        if self.nodes is None:
            k = 0
            for _ in range(4):
                states.append(sum(self.edges[k + j](h, weights[k + j]) for j, h in enumerate(states)))
                k += len(states) - 1
            return torch.cat(states[2:], dim=1)
        k = 0
        for node in self.nodes:
            total = 0
            for _, src in node:
                h = self.edges[k](states[src])
                if rate > 0 and not isinstance(self.edges[k], nn.Identity):
                    h = drop_path(h, rate)
                total, k = total + h, k + 1
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class Network(nn.Module):
    """The chain layout (BUILD_NOTES "Cells, chains and stage-specific cells"): stem 3×3 conv to 3C + BN, L cells
    with reductions at L/3 and 2L/3, GAP, dense; with a genotype an evaluation network with the auxiliary head after
    cell 2L/3, else a supernet."""

    def __init__(self, c, layers, classes=10, genotype=None, stage_specific=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), bn(3 * c, True))
        c_pp = c_p = 3 * c
        c_curr, reduction_prev = c, False
        self.cells, self.reductions, self.aux_index = nn.ModuleList(), [], 2 * layers // 3
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr *= 2 if reduction else 1
            g = None if genotype is None else genotype["cells"]["reduce" if reduction else "normal"]
            cell = Cell(c_pp, c_p, c_curr, reduction, reduction_prev, *(() if g is None else (g["nodes"], g["concat"])))
            self.cells.append(cell)
            self.reductions.append(reduction)
            c_pp, c_p, reduction_prev = c_p, len(cell.concat) * c_curr, reduction
            if i == self.aux_index:
                c_aux = c_p
        self.classifier = nn.Linear(c_p, classes)
        if genotype is None:
            # DARTS: one α per cell type. H^c-DAS (BUILD_NOTES "Cells, chains and stage-specific cells"): normal1,
            # reduce1, normal2, reduce2, normal3 — the group of cell i is the number of reductions before it, plus
            # one for a reduction cell itself.
            groups = 5 if stage_specific else 2
            self.alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(14, len(OPS))) for _ in range(groups))
            if stage_specific:
                self.groups = [2 * sum(r for r in self.reductions[:i]) + r for i, r in enumerate(self.reductions)]
            else:
                self.groups = [int(r) for r in self.reductions]
            self.aux = None
        else:
            self.aux = nn.Sequential(nn.ReLU(), nn.AvgPool2d(5, 3, 0, count_include_pad=False),
                                     nn.Conv2d(c_aux, 128, 1, bias=False), bn(128, True), nn.ReLU(),
                                     nn.Conv2d(128, 768, 2, bias=False), bn(768, True), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(768, classes))

    def weights(self, aux=True):
        return [p for n, p in self.named_parameters() if not n.startswith("alphas.") and (aux or not n.startswith("aux."))]

    def arch(self):
        return list(self.alphas)

    def forward(self, x, rate=0.0):
        if self.aux is None:
            w = [F.softmax(a, dim=-1) for a in self.alphas]
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, None if self.aux is not None else w[self.groups[i]], rate)
            if self.aux is not None and i == self.aux_index:
                aux = self.aux(s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1)), aux


def second_order_alpha_grad(net, w_opt, xt, yt, xv, yv, lr, momentum, wd):
    """Sets α.grad to DARTS Eq. 7-8 (see the module docstring)."""
    alphas = net.arch()
    arch_ids = {id(a) for a in alphas}
    named = [(n, p) for n, p in net.named_parameters() if id(p) not in arch_ids]
    names, weights = [n for n, _ in named], [p for _, p in named]
    grads = torch.autograd.grad(F.cross_entropy(net(xt)[0], yt), weights)
    with torch.no_grad():
        virtual = []
        for w, g in zip(weights, grads):
            buf = w_opt.state.get(w, {}).get("momentum_buffer")
            step = g + wd * w + (momentum * buf if buf is not None else 0.0)
            virtual.append((w - lr * step).requires_grad_())
    # α stays the module's own parameter: functional_call replaces only the named weights.
    val_loss = F.cross_entropy(functional_call(net, dict(zip(names, virtual)), (xv,))[0], yv)
    both = torch.autograd.grad(val_loss, alphas + virtual)  # one backward pass for ∇α and ∇w' of L_val
    d_alpha, d_w = both[:len(alphas)], both[len(alphas):]
    eps = 0.01 / torch.sqrt(sum((g * g).sum() for g in d_w))
    hessian = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for w, g in zip(weights, d_w):
                w.add_(sign * eps * g if sign > 0 else -2 * eps * g)
        hessian.append(torch.autograd.grad(F.cross_entropy(net(xt)[0], yt), alphas))
    with torch.no_grad():
        for w, g in zip(weights, d_w):
            w.add_(eps * g)  # back to w
        for a, da, hp, hm in zip(alphas, d_alpha, *hessian):
            a.grad = da - lr * (hp - hm) / (2 * eps)


STAGE_OPS = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"]


class StageEdge(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c, 1, False) for name in STAGE_OPS)

    def forward(self, x, w):
        return sum(wi * op(x) for wi, op in zip(w, self.ops))


class SearchStage(nn.Module):
    def __init__(self, c_in, c, cell, n_cells=6, window=3, min_cells=None):
        super().__init__()
        # Cell-distribution search (BUILD_NOTES "Stage DAGs, the sliding window and β"): candidate length n in
        # [min_cells, n_cells] ends at cells n-2, n-1.
        self.lengths = [] if min_cells is None else list(range(min_cells, n_cells + 1))
        width = len(cell["concat"]) * c
        self.proj = nn.ModuleList(ReLUConvBN(c_in, width, False) for _ in range(2))
        self.sources = [min(window, j + 2) for j in range(n_cells)]
        self.edges = nn.ModuleList(StageEdge(width) for n in self.sources for _ in range(n))
        self.cells = nn.ModuleList(Cell(width, width, c, False, False, cell["nodes"], cell["concat"])
                                   for _ in range(n_cells))
        self.out_channels = 2 * width

    def forward(self, x, w, b=None):
        states = [p(x) for p in self.proj]
        k = 0
        for cell, n in zip(self.cells, self.sources):
            h = sum(self.edges[k + e](states[-n + e], w[k + e]) for e in range(n))
            k += n
            states.append(cell(h, h))
        if b is None:
            return torch.cat(states[-2:], dim=1)
        # Σ_n softmax(β)_n · concat(cell n-2, cell n-1); cell k is state k + 2.
        return sum(bi * torch.cat(states[n:n + 2], dim=1) for bi, n in zip(b, self.lengths))


class StageSupernet(nn.Module):
    def __init__(self, genotype, c=16, classes=10, lengths=(6, 6, 6), min_cells=None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4 * c, 3, padding=1, bias=False), bn(4 * c, True))
        self.stages, self.reductions = nn.ModuleList(), nn.ModuleList()
        c_in = 4 * c
        normal, reduce = genotype["cells"]["normal"], genotype["cells"]["reduce"]
        for s in range(3):
            stage = SearchStage(c_in, c * 2 ** s, normal, lengths[s], min_cells=min_cells)
            self.stages.append(stage)
            c_in = stage.out_channels
            if s < 2:
                self.reductions.append(Cell(c_in, c_in, c * 2 ** (s + 1), True, False, reduce["nodes"], reduce["concat"]))
                c_in = len(reduce["concat"]) * c * 2 ** (s + 1)
        self.classifier = nn.Linear(c_in, classes)
        self.alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(stage.edges), len(STAGE_OPS)))
                                       for stage in self.stages)
        self.betas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(stage.lengths)))
                                      for stage in self.stages if stage.lengths)

    def weights(self, aux=True):
        return [p for n, p in self.named_parameters() if not n.startswith(("alphas.", "betas."))]

    def arch(self):
        return list(self.alphas) + list(self.betas)

    def forward(self, x, rate=0.0):
        h = self.stem(x)
        for s, stage in enumerate(self.stages):
            h = stage(h, F.softmax(self.alphas[s], dim=-1), F.softmax(self.betas[s], dim=-1) if self.betas else None)
            if s < 2:
                h = self.reductions[s](h, h)
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1)), None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=["train", "cell_search", "stage_search", "distribution_search"], required=True)
    p.add_argument("--genotype", help="train, stage and distribution search: a hdas_tf genotype JSON file (DARTS_V2)")
    p.add_argument("--max_cells", type=int, default=6, help="distribution_search: cells per stage")
    p.add_argument("--min_cells", type=int, default=4, help="distribution_search: shortest candidate stage")
    p.add_argument("--batch", type=int, default=None, help="defaults: train 32, cell_search 16")
    p.add_argument("--order", type=int, choices=[1, 2], default=1, help="search configurations: architecture gradient order")
    p.add_argument("--cells", choices=["shared", "stage_specific"], default="shared",
                   help="cell_search: one α per cell type (DARTS) or per stage (H^c-DAS, 5 α groups)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = args.config == "train"
    batch = args.batch or (32 if train else 16)
    t0 = time.perf_counter()
    if args.config == "cell_search":
        net = Network(16, 8, stage_specific=args.cells == "stage_specific")
    else:
        with open(args.genotype) as f:
            genotype = json.load(f)
        if train:
            net = Network(36, 20, genotype=genotype)
        elif args.config == "stage_search":
            net = StageSupernet(genotype)
        else:
            if not 2 <= args.min_cells <= args.max_cells:
                raise SystemExit(f"--min_cells={args.min_cells} must be in [2, --max_cells={args.max_cells}]")
            net = StageSupernet(genotype, lengths=(args.max_cells,) * 3, min_cells=args.min_cells)
    net.train()
    w_opt = torch.optim.SGD(net.weights(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    if not train:
        a_opt = torch.optim.Adam(net.arch(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    xt, yt = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    xv, yv = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for step in range(1 + args.warmup + args.steps):
        t = time.perf_counter()
        if not train and args.order == 1:  # first order: ∇α L_val(w, α), then the weight step
            a_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xv)[0], yv).backward()
            a_opt.step()
        elif not train:
            a_opt.zero_grad(set_to_none=True)
            second_order_alpha_grad(net, w_opt, xt, yt, xv, yv, lr=0.025, momentum=0.9, wd=3e-4)
            a_opt.step()
        w_opt.zero_grad(set_to_none=True)
        logits, aux = net(xt, 0.2 if train else 0.0)
        loss = F.cross_entropy(logits, yt) + (0.4 * F.cross_entropy(aux, yt) if train else 0.0)
        loss.backward()
        nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()
        times.append(time.perf_counter() - t)
        if step == 0:
            first = time.perf_counter() - t0
    timed = times[1 + args.warmup:]
    median = statistics.median(timed)
    print(json.dumps({"config": args.config, "batch": batch, "order": None if train else args.order, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.weights(aux=False)),
                      "params_with_aux": sum(p.numel() for p in net.weights()), "step_s_median": median,
                      "img_per_s": batch / median, "first_step_s": first, "steps_s": timed,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()

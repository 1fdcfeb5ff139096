"""Single-kernel timings in TensorFlow or PyTorch, to explain host-to-host differences of the step times.

The search and training steps spend most of their time in a few kernels (BUILD_NOTES "CPU kernels and their build"
and "Known gaps": depthwise convolutions, 1×1 convolutions, BatchNorm, max-pool backward). Which library is faster
at them depends on the CPU (TF's depthwise kernel lost 3.5–6.4× to PyTorch's on an AVX2 host), so this script times
the same kernels at the supernets' shapes in either library, each in its own virtual environment:

    .venv/bin/python benchmarks/torch_reference/kernels.py --lib=tf
    .venv/bin/python benchmarks/torch_reference/kernels.py --lib=hdas    # hdas_tf's CPU kernels (hdas_tf/csrc)
    .venv-torch/bin/python benchmarks/torch_reference/kernels.py --lib=torch

One JSON line per (kernel, shape): forward and forward+backward milliseconds, median of --repeats calls after
warm-up. Shapes are N×H×W×C; PyTorch gets the same tensors as N×C×H×W, its native layout.
"""

import argparse
import json
import os
import statistics
import sys
import time

# (N, H, W, C): the cell supernet at batch 16 (C=16 at 32×32, doubling per reduction) and the DARTS_V2
# evaluation network at batch 32 (C=36).
SHAPES = [(16, 32, 32, 16), (16, 16, 16, 32), (16, 8, 8, 64), (32, 32, 32, 36), (32, 16, 16, 72), (32, 8, 8, 144)]
KERNELS = ["dw3x3", "dw5x5", "conv1x1", "bn_train", "maxpool3x3"]


def _median_ms(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _tf_kernels(threads, hdas=False):
    """TF's kernels, or with ``hdas`` hdas_tf's CPU kernels where it has them (depthwise, BN, max-pool
    backward; the 1×1 convolution is TF's either way)."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    lib = None
    if hdas:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        from hdas_tf.nn import cpu_kernels
        lib = cpu_kernels.library()
        if lib is None:
            raise SystemExit("hdas_tf's CPU kernels are not available here (see the warning above)")

    def max_pool(x):
        if lib is None:
            return tf.nn.max_pool2d(x, 3, 1, "SAME")

        @tf.custom_gradient
        def pool(t):
            y = tf.nn.max_pool2d(t, 3, 1, "SAME")
            return y, lambda dy: lib.hdas_max_pool_grad(t, y, dy, ksize=3, stride=1, pad=1)

        return pool(x)

    def build(kernel, shape):
        n, h, w, c = shape
        x = tf.Variable(tf.random.stateless_normal(shape, seed=(1, 2)))
        if kernel.startswith("dw"):
            k = int(kernel[2])
            weight = tf.Variable(tf.random.stateless_normal((k, k, c, 1), seed=(3, 4)))
            if lib is None:
                op = lambda: tf.nn.depthwise_conv2d(x, weight, (1, 1, 1, 1), "SAME")
            else:
                op = lambda: lib.hdas_depthwise_conv2d(x, weight, stride=1, pad=k // 2)
        elif kernel == "conv1x1":
            weight = tf.Variable(tf.random.stateless_normal((1, 1, c, c), seed=(3, 4)))
            op = lambda: tf.nn.conv2d(x, weight, 1, "SAME")
        elif kernel == "bn_train":
            weight = tf.Variable(tf.ones((c,)))
            if lib is None:
                op = lambda: tf.compat.v1.nn.fused_batch_norm(x, weight, tf.zeros((c,)), is_training=True)[0]
            else:
                op = lambda: lib.hdas_batch_norm(x, weight, tf.zeros((c,)), epsilon=1e-5)[0]
        else:
            weight = None
            op = lambda: max_pool(x)
        sources = [x] + ([weight] if weight is not None else [])

        @tf.function
        def forward():
            return tf.reduce_sum(op())

        @tf.function
        def forward_backward():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(op() * op_seed)
            return tape.gradient(loss, sources)

        op_seed = tf.random.stateless_normal(shape, seed=(5, 6))
        return (lambda: forward().numpy()), (lambda: [g.numpy() for g in forward_backward()])

    return build, tf.__version__


def _torch_kernels(threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)

    def build(kernel, shape):
        n, h, w, c = shape
        gen = torch.Generator().manual_seed(1)
        x = torch.randn((n, c, h, w), generator=gen, requires_grad=True)
        upstream = torch.randn((n, c, h, w), generator=gen)
        if kernel.startswith("dw"):
            k = int(kernel[2])
            weight = torch.randn((c, 1, k, k), generator=gen, requires_grad=True)
            op = lambda: F.conv2d(x, weight, padding=k // 2, groups=c)
        elif kernel == "conv1x1":
            weight = torch.randn((c, c, 1, 1), generator=gen, requires_grad=True)
            op = lambda: F.conv2d(x, weight)
        elif kernel == "bn_train":
            weight = torch.ones(c, requires_grad=True)
            op = lambda: F.batch_norm(x, None, None, weight, torch.zeros(c), training=True)
        else:
            weight = None
            op = lambda: F.max_pool2d(x, 3, 1, 1)
        sources = [x] + ([weight] if weight is not None else [])

        def forward():
            with torch.no_grad():
                return op().sum().item()

        def forward_backward():
            for s in sources:
                s.grad = None
            (op() * upstream).sum().backward()
            return [s.grad for s in sources]

        return forward, forward_backward

    return build, torch.__version__


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", choices=["tf", "hdas", "torch"], required=True,
                   help="tf: TensorFlow's kernels; hdas: hdas_tf's CPU kernels in TensorFlow; torch: PyTorch's")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (the steps are timed with 2)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated subset of " + ",".join(KERNELS))
    args = p.parse_args()
    kernels = args.kernels.split(",")
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown:
        p.error(f"unknown kernels {unknown}; choose from {KERNELS}")
    if args.lib == "torch":
        build, version = _torch_kernels(args.threads)
    else:
        build, version = _tf_kernels(args.threads, hdas=args.lib == "hdas")
    for kernel in kernels:
        for shape in SHAPES:
            forward, forward_backward = build(kernel, shape)
            print(json.dumps({"lib": args.lib, "version": version, "threads": args.threads, "kernel": kernel,
                              "shape": list(shape), "fwd_ms": round(_median_ms(forward, args.repeats, args.warmup), 3),
                              "fwd_bwd_ms": round(_median_ms(forward_backward, args.repeats, args.warmup), 3)}),
                  flush=True)


if __name__ == "__main__":
    main()

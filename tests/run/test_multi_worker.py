"""Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG per worker) run a tiny search:
both exit 0 with bit-identical α, only the chief writes the run directory (checkpoints, TensorBoard), the
non-chief's temporary directory is gone, and α is bit-identical to one process running the same global batch
over two replicas (--strategy=mirrored --logical_cpus=2).

Why two replicas in one process and not one device: on a supernet this small (C=2, 2×2 maps at the end) α after
a few Adam steps is sensitive to float rounding — Adam moves an entry whose gradient is rounding noise by a full
±lr — so even two one-device runs, with TensorFlow's kernels and with hdas_tf's, differ by ~1e-4 in α after 4
steps (BUILD_NOTES "Synchronized BN and distribution strategies"). One device = two replicas is tested on a
better-conditioned supernet in tests/search/test_search_model.py."""

import json
import os
import re
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 48 digits → 24 in the weight half → 3 steps of a global batch of 8 per epoch; 4 steps end in epoch 2.
TINY = ["--init_channels=2", "--layers=3", "--batch_size=8", "--num_examples=48", "--epochs=2", "--max_steps=4",
        "--log_every=1", "--checkpoint_every_steps=2"]
TIMEOUT_S = 900


def _free_ports(n):
    """Ports the OS hands out for port 0, held open together so that the n are distinct."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(tf_config=None):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _digest(log_text):
    found = re.findall(r"α sha256 ([0-9a-f]{64})", log_text)
    assert len(found) == 1, log_text[-3000:]
    return found[0]


@pytest.mark.slow  # three tiny searches, two of them side by side
def test_two_workers_equal_a_one_process_run(tmp_path):
    run_dir = tmp_path / "run"  # one --run_dir for both workers, as on a shared file system
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs, logs = [], []
    try:
        for i in range(2):
            # Logs to files, not pipes: a worker blocked on a full pipe would stall the other in a collective.
            log = open(tmp_path / f"worker{i}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "hdas_tf.search", f"--run_dir={run_dir}", "--strategy=multi_worker", *TINY],
                cwd=ROOT, env=_env({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                stdout=log, stderr=subprocess.STDOUT))
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p in procs:  # stopped on any failure (a timeout included)
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    texts = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for p, text in zip(procs, texts):
        assert p.returncode == 0, text[-4000:]
    assert _digest(texts[0]) == _digest(texts[1])  # identical α on both workers

    # Only the chief's files are in the run directory; the other worker's went to a temporary directory, now gone.
    (temp,) = re.findall(r"is not the chief: its run files go to (\S+)", texts[1])
    assert not os.path.exists(temp)
    assert "is not the chief" not in texts[0]
    checkpoints = sorted(f for f in os.listdir(run_dir / "checkpoints") if f.endswith(".index"))
    assert checkpoints == ["ckpt-2.index", "ckpt-3.index", "ckpt-4.index"]  # every 2 steps, epoch 1 end, the end
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run_dir / "tb"))
    run = json.loads((run_dir / "run.json").read_text())
    assert run["replicas"] == 2 and run["steps"] == 4 and run["strategy"] == "multi_worker"
    assert run["arch_sha256"] == _digest(texts[0])

    # One process, the same global batch of 8 over two replicas: the same arithmetic, so the same bits.
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.search", f"--run_dir={single}", "--strategy=mirrored",
                           "--logical_cpus=2", *TINY], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two, one = np.load(run_dir / "alphas.npz"), np.load(single / "alphas.npz")
    assert sorted(two.files) == sorted(one.files) == ["alpha_normal", "alpha_reduce"]
    for i, name in enumerate(["alpha_normal", "alpha_reduce"]):
        np.testing.assert_array_equal(two[name], one[name])
        # α's start (ArchitectureSearchModel: 1e-3·N(0, 1) seeded seed + i): four Adam steps of 3e-4 moved it,
        # so the equality is about the steps.
        start = keras.initializers.RandomNormal(stddev=1e-3, seed=i)(one[name].shape).numpy()
        assert np.abs(one[name] - start).max() > 1e-4
    assert json.loads((single / "run.json").read_text())["arch_sha256"] == _digest(texts[0])

"""Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG per worker) run a tiny search:
both exit 0 with bit-identical α, only the chief writes the run directory (checkpoints, TensorBoard), the
non-chief's temporary directory is gone, and α is bit-identical to one process running the same global batch
over two replicas (--strategy=mirrored --logical_cpus=2). Preempted: SIGTERM to one worker stops both at the
same step with the chief's checkpoint, and both resumed end bit-identical to an uninterrupted run.

Why two replicas in one process and not one device: on a supernet this small (C=2, 2×2 maps at the end) α after
a few Adam steps is sensitive to float rounding — Adam moves an entry whose gradient is rounding noise by a full
±lr — so even two one-device runs, with TensorFlow's kernels and with hdas_tf's, differ by ~1e-4 in α after 4
steps (BUILD_NOTES "Synchronized BN and distribution strategies"). One device = two replicas is tested on a
better-conditioned supernet in tests/search/test_search_model.py."""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading

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


def _assert_equals_one_process(run_dir, single, args):
    """Runs ``args`` in one process over two replicas (--strategy=mirrored --logical_cpus=2) in ``single`` and
    checks that its α is bit-identical to the multi-worker run's in ``run_dir``; returns the one-process α."""
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.search", f"--run_dir={single}", "--strategy=mirrored",
                           "--logical_cpus=2", *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two, one = np.load(run_dir / "alphas.npz"), np.load(single / "alphas.npz")
    assert sorted(two.files) == sorted(one.files) == ["alpha_normal", "alpha_reduce"]
    for name in two.files:
        np.testing.assert_array_equal(two[name], one[name])
    return one


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
    one = _assert_equals_one_process(run_dir, single, TINY)
    for i, name in enumerate(["alpha_normal", "alpha_reduce"]):
        # α's start (ArchitectureSearchModel: 1e-3·N(0, 1) seeded seed + i): four Adam steps of 3e-4 moved it,
        # so the equality is about the steps.
        start = keras.initializers.RandomNormal(stddev=1e-3, seed=i)(one[name].shape).numpy()
        assert np.abs(one[name] - start).max() > 1e-4
    assert json.loads((single / "run.json").read_text())["arch_sha256"] == _digest(texts[0])


# 80 digits → 40 in the weight half → 5 steps of 8 per epoch, 10 in all. The chief's clock makes a checkpoint
# due after every step (0.0001 min), which the other worker must follow (run.checkpoints.WorkerAgreement).
PREEMPT = ["--init_channels=2", "--layers=3", "--batch_size=8", "--num_examples=80", "--epochs=2", "--log_every=1",
           "--deterministic"]
SIGNAL_AFTER = 2  # the chief's log line of this step triggers SIGTERM to the other worker


def _workers(args, log_dir, tag, on_chief_line=None):
    """Runs two workers of ``args``; the chief's stderr goes through ``on_chief_line(line, procs)``. Returns the
    return codes and the two logs; both are killed on a timeout or any failure."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs, files = [], []
    try:
        files.append(None)
        procs.append(subprocess.Popen([sys.executable, "-m", "hdas_tf.search", *args], cwd=ROOT,
                                      env=_env({"cluster": cluster, "task": {"type": "worker", "index": 0}}),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        files.append(open(log_dir / f"{tag}_worker1.log", "w"))
        procs.append(subprocess.Popen([sys.executable, "-m", "hdas_tf.search", *args], cwd=ROOT,
                                      env=_env({"cluster": cluster, "task": {"type": "worker", "index": 1}}),
                                      stdout=files[1], stderr=subprocess.STDOUT))
        timers = [threading.Timer(TIMEOUT_S, p.kill) for p in procs]  # bounded: a hung worker is killed
        for t in timers:
            t.start()
        chief = []
        try:
            for line in procs[0].stderr:
                chief.append(line)
                if on_chief_line is not None:
                    on_chief_line(line, procs)
            for p in procs:
                p.wait()
        finally:
            for t in timers:
                t.cancel()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if files[1] is not None:
            files[1].close()
    return [p.returncode for p in procs], ["".join(chief), (log_dir / f"{tag}_worker1.log").read_text()]


@pytest.mark.slow  # two two-worker searches and one one-process search
def test_sigterm_to_one_worker_stops_both_then_resume_is_bit_identical(tmp_path):
    run_dir = tmp_path / "run"
    args = [f"--run_dir={run_dir}", "--strategy=multi_worker", "--checkpoint_every_minutes=0.0001", *PREEMPT]

    def preempt(line, procs):
        if f"step {SIGNAL_AFTER}/10 " in line and procs[1].poll() is None:
            procs[1].send_signal(signal.SIGTERM)

    codes, (chief, other) = _workers(args, tmp_path, "preempted", preempt)
    assert codes == [143, 143], (chief[-3000:], other[-3000:])
    assert "Traceback" not in chief + other
    # The signalled worker and the chief stop after the same step; the chief's checkpoint is in the run directory.
    (step_other, _), = re.findall(r"stopped by SIGTERM after step (\d+); checkpoint (\S+)\. Resume with: ", other)
    (step, path), = re.findall(r"stopped by SIGTERM \(sent to another worker\) after step (\d+); checkpoint (\S+)\. "
                               r"Resume with: ", chief)
    assert step == step_other and int(step) in (SIGNAL_AFTER, SIGNAL_AFTER + 1)
    assert path == str(run_dir / "checkpoints" / f"ckpt-{step}") and os.path.exists(path + ".index")
    # Minute-based checkpoints ran on the chief's clock: one after every step, the last 3 kept.
    kept = sorted(f for f in os.listdir(run_dir / "checkpoints") if f.endswith(".index"))
    assert kept == [f"ckpt-{k}.index" for k in range(max(1, int(step) - 2), int(step) + 1)]
    assert not (run_dir / "alphas.npz").exists()  # epoch 1 never ended

    command, = set(re.findall(r"Resume with: (.+)$", chief + other, re.M))
    resume = shlex.split(command)[3:]
    assert resume == [f"--flagfile={run_dir}/flags.cfg", f"--run_dir={run_dir}", "--resume"]
    codes, (chief, other) = _workers(resume, tmp_path, "resumed")
    assert codes == [0, 0], (chief[-3000:], other[-3000:])
    assert f"resumed from {path} at step {step}" in chief
    assert _digest(chief) == _digest(other)

    # Uninterrupted, one process with the same global batch over two replicas: the same bits.
    _assert_equals_one_process(run_dir, tmp_path / "single", PREEMPT)

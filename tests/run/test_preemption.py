"""A search preempted in the middle of an epoch: SIGTERM once the log shows step k → the step in flight finishes,
a checkpoint at that step is written, the process exits 143 with the exact resume command → that command ends
with α bit-identical to an uninterrupted run (--deterministic)."""

import os
import re
import shlex
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 80 digits → 40 in the weight half → 5 steps of 8 per epoch; 2 epochs.
TINY = ["--init_channels=2", "--layers=3", "--batch_size=8", "--num_examples=80", "--epochs=2", "--log_every=1",
        "--deterministic"]
TIMEOUT_S = 900
SIGNAL_AFTER = 2  # the step whose log line triggers SIGTERM (epoch 1 ends at step 5)


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return env


def _search(run_dir, *extra):
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.search", f"--run_dir={run_dir}", *TINY, *extra],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow  # three tiny searches
def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path):
    whole = tmp_path / "whole"
    _search(whole)

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hdas_tf.search", f"--run_dir={run_dir}", *TINY], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(TIMEOUT_S, proc.kill)  # bounded: a hung run is killed
    timer.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if f"step {SIGNAL_AFTER}/10 " in line:
                proc.send_signal(signal.SIGTERM)
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    assert proc.returncode == 143, log[-4000:]
    assert "Traceback" not in log
    # The step in flight when the signal came finished; the checkpoint is at it (k or k + 1, inside epoch 1).
    (step, path) = re.findall(r"stopped by SIGTERM after step (\d+); checkpoint (\S+)\. Resume with: ", log)[0]
    step = int(step)
    assert step in (SIGNAL_AFTER, SIGNAL_AFTER + 1) and path == str(run_dir / "checkpoints" / f"ckpt-{step}")
    assert os.path.exists(path + ".index")
    assert not re.search(rf"step {step + 1}/10 ", log)  # no step after it
    assert not (run_dir / "alphas.npz").exists()  # epoch 1 never ended

    command = re.findall(r"Resume with: (.+)$", log, re.M)[0]
    assert command == (f"python -m hdas_tf.search --flagfile={run_dir}/flags.cfg --run_dir={run_dir} --resume")
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "hdas_tf.search"]
    resumed = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resumed from {path} at step {step}" in resumed.stderr
    a, b = np.load(whole / "alphas.npz"), np.load(run_dir / "alphas.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])

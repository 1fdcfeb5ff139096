"""The run directory: flags.cfg and the log file of a main, the refusal to mix a new run into another's
checkpoints, the config as JSON, the history a resumed run continues, and the directory each worker of a
multi-worker run writes."""

import dataclasses
import json
import logging as std_logging
import os

import pytest
import tensorflow as tf
from absl import logging

from hdas_tf.run import run_dir


@pytest.fixture
def no_file_handlers():
    before = list(logging.get_absl_logger().handlers)
    yield
    for handler in logging.get_absl_logger().handlers[len(before):]:
        logging.get_absl_logger().removeHandler(handler)
        handler.close()


def _checkpoint(directory):
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(directory / "checkpoints" / "ckpt"))


def test_start_writes_flags_and_logs_to_the_file(tmp_path, no_file_handlers):
    d = tmp_path / "run"
    run_dir.start(str(d), False, ["--a=1", "--nob"], "x.log")
    assert (d / "flags.cfg").read_text() == "--a=1\n--nob\n"
    logging.info("hello from the test")
    assert isinstance(logging.get_absl_logger().handlers[-1], std_logging.FileHandler)
    assert "hello from the test" in (d / "x.log").read_text()


def test_start_refuses_another_runs_checkpoints_before_writing(tmp_path, no_file_handlers):
    _checkpoint(tmp_path)
    (tmp_path / "flags.cfg").write_text("--old\n")
    with pytest.raises(ValueError, match="--resume"):
        run_dir.start(str(tmp_path), False, ["--new"], "x.log")
    assert (tmp_path / "flags.cfg").read_text() == "--old\n" and not (tmp_path / "x.log").exists()
    run_dir.start(str(tmp_path), True, ["--new"], "x.log", keep_flags_on_resume=True)
    assert (tmp_path / "flags.cfg").read_text() == "--old\n"
    run_dir.start(str(tmp_path), True, ["--new"], "x.log")
    assert (tmp_path / "flags.cfg").read_text() == "--new\n"


def test_config_and_history(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Config:
        lengths: tuple = (6, 6)
        name: str = "x"

    assert run_dir.json_ready(Config()) == {"lengths": [6, 6], "name": "x"}
    run_dir.write_config(str(tmp_path), Config())
    assert json.loads((tmp_path / "config.json").read_text()) == {"lengths": [6, 6], "name": "x"}
    assert run_dir.load_history(str(tmp_path), lambda h: True) == []
    (tmp_path / "history.json").write_text(json.dumps([{"step": 2}, {"step": 4}]))
    assert run_dir.load_history(str(tmp_path), lambda h: h["step"] <= 3) == [{"step": 2}]


# === the directory each worker of a multi-worker run writes ===


def _tf_config(monkeypatch, task_type, index, chief=False):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    if chief:
        cluster["chief"] = ["127.0.0.1:3"]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))


def test_worker_task_follows_tensorflows_chief_rule(monkeypatch):
    from hdas_tf.run.strategy import worker_task

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_task() == ("", 0, True)
    _tf_config(monkeypatch, "worker", 0)
    assert worker_task() == ("worker", 0, True)  # no chief task: worker 0 is the chief
    _tf_config(monkeypatch, "worker", 1)
    assert worker_task() == ("worker", 1, False)
    _tf_config(monkeypatch, "worker", 0, chief=True)
    assert worker_task() == ("worker", 0, False)
    _tf_config(monkeypatch, "chief", 0, chief=True)
    assert worker_task() == ("chief", 0, True)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        worker_task()


def test_only_the_chief_writes_the_run_directory(tmp_path, monkeypatch):
    _tf_config(monkeypatch, "worker", 1)
    with run_dir.worker_directory(str(tmp_path / "run"), "multi_worker") as out:
        assert out != str(tmp_path / "run") and os.path.isdir(out)
        with open(os.path.join(out, "x"), "w") as f:
            f.write("a non-chief's file")
    assert not os.path.exists(out)  # removed on exit
    with pytest.raises(RuntimeError):
        with run_dir.worker_directory(str(tmp_path / "run"), "multi_worker") as out:
            raise RuntimeError("a failed run")
    assert not os.path.exists(out)  # removed on failure too
    with run_dir.worker_directory(str(tmp_path / "run"), "default") as out:
        assert out == str(tmp_path / "run")  # TF_CONFIG matters only to a multi-worker run
    _tf_config(monkeypatch, "worker", 0)
    with run_dir.worker_directory(str(tmp_path / "run"), "multi_worker") as out:
        assert out == str(tmp_path / "run")
    assert not os.path.exists(tmp_path / "run")  # the chief's directory is the job's to make

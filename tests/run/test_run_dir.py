"""The run directory: flags.cfg and the log file of a main, the refusal to mix a new run into another's
checkpoints, the config as JSON and the history a resumed run continues."""

import dataclasses
import json
import logging as std_logging

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

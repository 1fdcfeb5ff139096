"""How the mains end an interrupted or out-of-memory run: one log line, an exit code, no traceback."""

import logging
import signal

import pytest
import tensorflow as tf

from hdas_tf.cli.run_exits import OUT_OF_MEMORY_EXIT, clean_exits
from hdas_tf.run.checkpoints import Interrupted
from hdas_tf.run.loop import MEMORY_FLAGS, OutOfMemoryError, out_of_memory_message


def test_interrupted_run_gives_the_resume_command(caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        with clean_exits("hdas_tf.search", "runs/demo"):
            raise Interrupted(signal.SIGTERM, 7, "runs/demo/checkpoints/ckpt-7")
    assert info.value.code == 143
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == ("stopped by SIGTERM after step 7; checkpoint runs/demo/checkpoints/ckpt-7. Resume "
                                   "with: python -m hdas_tf.search --flagfile=runs/demo/flags.cfg "
                                   "--run_dir=runs/demo --resume")
    assert record.exc_info is None


@pytest.mark.parametrize("error", [OutOfMemoryError(out_of_memory_message("at step 3")),
                                   tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")])
def test_out_of_memory_is_one_line_naming_the_flags(caplog, error):
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        with clean_exits("hdas_tf.train", "runs/t"):
            raise error
    assert info.value.code == OUT_OF_MEMORY_EXIT
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert message.startswith("out of memory") and "\n" not in message and record.exc_info is None
    assert all(flag in message for flag in MEMORY_FLAGS)


def test_other_errors_pass_through():
    with pytest.raises(KeyError):
        with clean_exits("hdas_tf.search", "runs/demo"):
            raise KeyError("x")

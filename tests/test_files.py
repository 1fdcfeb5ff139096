"""Atomic writes: the content round-trips, a failed write leaves the old file and no temporary file behind."""

import json
import os
import stat

import numpy as np
import pytest

from hdas_tf.files import atomic_path, save_npz_atomic, write_json_atomic, write_text_atomic


def test_json_round_trip_with_sorted_keys_and_newline(tmp_path):
    path = tmp_path / "sub" / "doc.json"  # the folder is created
    write_json_atomic(path, {"b": 1, "a": [1.5, None]})
    text = path.read_text()
    assert text == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    assert json.loads(text) == {"a": [1.5, None], "b": 1}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path / "sub") == ["doc.json"]


def test_npz_keeps_its_name_and_arrays(tmp_path):
    path = tmp_path / "alphas.npz"
    save_npz_atomic(path, {"alpha_normal": np.arange(6.0).reshape(2, 3)})
    assert sorted(os.listdir(tmp_path)) == ["alphas.npz"]
    with np.load(path) as f:
        np.testing.assert_array_equal(f["alpha_normal"], np.arange(6.0).reshape(2, 3))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "genotype.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["genotype.json"]

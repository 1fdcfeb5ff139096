"""``code_version``: the commit of the checkout, dirty for any change outside benchmarks/."""

import importlib.util
import shutil
import subprocess

from hdas_tf.timing import host


def test_code_version_ignores_the_benchmark_outputs_only(tmp_path):
    """A standard run rewrites benchmarks/ after every row: that must not mark the code dirty, other edits must."""
    repo = tmp_path / "repo"
    (repo / "hdas_tf" / "timing").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    shutil.copy(host.__file__, repo / "hdas_tf" / "timing" / "host.py")
    (repo / "benchmarks" / "results.json").write_text("{}\n")
    (repo / "README.md").write_text("x\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "init"], check=True)
    spec = importlib.util.spec_from_file_location("copied_host", repo / "hdas_tf" / "timing" / "host.py")
    copied = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copied)
    clean = copied.code_version()
    assert clean and not clean.endswith("-dirty")
    (repo / "benchmarks" / "results.json").write_text('{"results": []}\n')
    assert copied.code_version() == clean
    (repo / "README.md").write_text("y\n")
    assert copied.code_version() == clean + "-dirty"


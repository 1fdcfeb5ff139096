"""`scripts/hdas_pipeline.sh --paper RUN_DIR --dry_run`: the phase logic of the paper pipeline without running a
phase — the four commands and their order, a finished phase (run.json) skipped, an interrupted one (a checkpoint,
no run.json) resumed with --resume, --cells skipping the cell search, extra flags passed to every phase."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "hdas_pipeline.sh")


def _dry(run, *args, check=True):
    proc = subprocess.run(["bash", SCRIPT, "--paper", str(run), *args, "--dry_run"], capture_output=True, text=True,
                          timeout=60, cwd="/")
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _commands(stdout):
    return [line.split(": ", 1) for line in stdout.splitlines() if line.startswith(("run: ", "skip "))]


def test_fresh_run_has_four_phases_in_order(tmp_path):
    run = tmp_path / "paper"
    lines = _commands(_dry(run, "--data_dir=/data").stdout)
    assert [kind for kind, _ in lines] == ["run"] * 4
    cmds = [cmd.split() for _, cmd in lines]
    assert cmds[0] == ["python", "-m", "hdas_tf.search", "--flagfile=flags/cifar10_hc_das.cfg",
                       f"--run_dir={run}/1_cells", "--data_dir=/data"]
    assert cmds[1] == ["python", "-m", "hdas_tf.search", "--flagfile=flags/cifar10_hs_das_distribution.cfg",
                       f"--genotype={run}/1_cells/genotype.json", f"--run_dir={run}/2_distribution", "--data_dir=/data"]
    assert cmds[2] == ["python", "-m", "hdas_tf.search", "--flagfile=flags/cifar10_hs_das_stage.cfg",
                       f"--genotype={run}/2_distribution/genotype.json", "--stage_lengths=",
                       f"--run_dir={run}/3_stages", "--data_dir=/data"]
    assert cmds[3] == ["python", "-m", "hdas_tf.train", "--flagfile=flags/cifar10_train.cfg",
                       f"--genotype={run}/3_stages/genotype.json", f"--run_dir={run}/4_train", "--data_dir=/data"]
    for cmd in cmds:  # every flag file a phase names exists
        assert os.path.isfile(os.path.join(ROOT, cmd[3].split("=", 1)[1]))
    assert not run.exists()  # a dry run creates nothing


def test_finished_phases_are_skipped_and_interrupted_ones_resumed(tmp_path):
    run = tmp_path / "paper"
    (run / "1_cells").mkdir(parents=True)
    (run / "1_cells" / "run.json").write_text("{}")
    (run / "2_distribution" / "checkpoints").mkdir(parents=True)
    (run / "2_distribution" / "checkpoints" / "ckpt-12.index").write_text("")
    (run / "3_stages").mkdir()  # started but no checkpoint yet: starts fresh
    (run / "4_train" / "checkpoints").mkdir(parents=True)
    (run / "4_train" / "checkpoints" / "ckpt-3.index").write_text("")
    lines = _commands(_dry(run).stdout)
    assert [kind for kind, _ in lines] == ["skip (finished, " + f"{run}/1_cells/run.json exists)", "run", "run", "run"]
    assert [("--resume" in cmd.split()) for _, cmd in lines[1:]] == [True, False, True]
    (run / "4_train" / "run.json").write_text("{}")
    lines = _commands(_dry(run).stdout)
    assert lines[3][0].startswith("skip") and "hdas_tf.train" in lines[3][1]


def test_given_cells_skip_the_cell_search_and_darts_search_is_an_option(tmp_path):
    run = tmp_path / "paper"
    out = _dry(run, "--cells=DARTS_V2").stdout
    runs = [cmd for kind, cmd in _commands(out) if kind == "run"]
    assert "skip (cells given)" in out and len(runs) == 3
    assert "--flagfile=flags/cifar10_hs_das_distribution.cfg" in runs[0].split()
    assert "--genotype=DARTS_V2" in runs[0].split()
    darts = _commands(_dry(run, "--cell_search=darts").stdout)
    assert "--flagfile=flags/cifar10_darts.cfg" in darts[0][1].split()


def test_bad_arguments_are_refused(tmp_path):
    proc = _dry(tmp_path, "--cell_search=enas", check=False)
    assert proc.returncode == 2 and "choose --cell_search=hc_das or darts" in proc.stderr
    proc = subprocess.run(["bash", SCRIPT, "--paper"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--paper needs a run directory" in proc.stderr

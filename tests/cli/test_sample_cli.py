"""`python -m hdas_tf.sample`: genotype files of random cells and stage DAGs that `train` builds unchanged, the
same files for the same seed, and wrong flags refused with one message before anything is written."""

import os
import subprocess
import sys

import pytest

from hdas_tf.space.genotypes import Genotype
from hdas_tf.space.registry import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "hdas_tf.sample", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_stage_specific_cells_reproducible_from_the_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    proc = _cli("--kind=cell", "--cells=stage_specific", "--num=3", "--seed=7", f"--out_dir={a}")
    names = [f"random_cell_s7_{i:03d}.json" for i in range(3)]
    assert _files(a) == names and proc.stdout.split() == [str(a / n) for n in names]
    _cli("--kind=cell", "--cells=stage_specific", "--num=3", "--seed=7", f"--out_dir={b}")
    _cli("--kind=cell", "--cells=stage_specific", "--num=3", "--seed=8", f"--out_dir={c}")
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()
        g = Genotype.load(a / n)
        assert g.cell_sharing == "stage_specific" and g.stages is None
    assert [Genotype.load(a / n).cells for n in names] != [Genotype.load(c / f"random_cell_s8_{i:03d}.json").cells
                                                          for i in range(3)]


def test_stage_dags_on_fixed_cells_build_as_train_builds_them(tmp_path):
    from hdas_tf.nn.eval_networks import StageNetwork, build_eval_network
    from hdas_tf.train.model import combine_genotypes

    _cli("--kind=stage", "--genotype=DARTS_V2", "--window=2", "--stage_lengths=2,3,2", "--num=2", "--seed=1",
         f"--out_dir={tmp_path}")
    path = tmp_path / "random_stage_s1_000.json"
    g = Genotype.load(path)
    g.validate(window=2)
    assert g.cells == REGISTRY["DARTS_V2"].cells and g.stage_lengths == (2, 3, 2) and len(g.stages) == 3
    # what `train --genotype=FILE` does with it: resolve + combine, then the evaluation network (tiny C)
    net = build_eval_network(combine_genotypes(str(path), None), 10, 4, None, "cifar", auxiliary=True)
    assert isinstance(net, StageNetwork)
    net.build((None, 32, 32, 3))
    assert net.stage_lengths == (2, 3, 2)
    cells = tmp_path / "cells"
    _cli("--kind=cell", "--num=1", f"--out_dir={cells}")
    chain = build_eval_network(combine_genotypes(str(cells / "random_cell_s0_000.json"), None), 10, 4, 5, "cifar",
                               auxiliary=False)
    chain.build((None, 32, 32, 3))
    assert chain.num_cells == 5


@pytest.mark.parametrize("args, message", [
    (["--kind=stage", "--num=1"], "--kind=stage needs --genotype"),
    (["--kind=cell", "--window=2", "--num=1"], "--kind=cell takes no --window"),
    (["--kind=stage", "--genotype=DARTS_V2", "--cells=stage_specific", "--num=1"], "--cells describes a cell sample"),
    (["--kind=stage", "--genotype=DARTS_V2", "--stage_lengths=a,b,c", "--num=1"], "three integers"),
    (["--kind=stage", "--genotype=DARTS_V2", "--stage_lengths=4,4", "--num=1"], "three positive integers"),
    (["--kind=stage", "--genotype=HS_DAS_CIFAR", "--num=1"], "has no cells"),
    (["--kind=stage", "--genotype=NO_SUCH", "--num=1"], "unknown genotype 'NO_SUCH'"),
    (["--kind=stage", "--stage=shared", "--genotype=DARTS_V2", "--stage_lengths=4,6,6", "--num=1"],
     "equal stage lengths"),
    (["--num=0"], "--num"),
])
def test_wrong_flags_are_refused_before_writing(tmp_path, args, message):
    out = tmp_path / "out"
    proc = _cli(*args, f"--out_dir={out}", check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert _files(out) == []


def test_existing_files_are_never_overwritten(tmp_path):
    _cli("--num=2", f"--out_dir={tmp_path}")
    before = {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)}
    proc = _cli("--num=3", "--cells=stage_specific", f"--out_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "random_cell_s0_000.json exists already (2 of the 3 files)" in proc.stderr
    assert {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)} == before  # nothing written, not even _002

"""Every flags/*.cfg parses through the real absl flag definitions of its main and builds that main's config
(a search file also its SearchSpace); the paper-protocol files hold the settings they document."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAG_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "flags", "*.cfg")))
TRAIN_FILES = [f for f in FLAG_FILES if "train" in f]
SEARCH_FILES = [f for f in FLAG_FILES if f not in TRAIN_FILES]
TRAIN_EXTRA = ["--genotype=DARTS_V2"]  # a training file leaves the genotype to the command line

# One process per main: parse each file from defaults (FLAGS.unparse_flags), build the config, print it as JSON.
_SCRIPT = """
import dataclasses, json, sys
from absl import flags
from hdas_tf.cli import {main} as main
FLAGS = flags.FLAGS
out = {{}}
for name, extra in json.loads(sys.argv[1]):
    FLAGS.unparse_flags()
    FLAGS(["prog", "--flagfile=flags/" + name, *extra])
    cfg = main.config_from_flags()
    out[name] = {{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}}
    if "{main}" == "search":
        from hdas_tf.search.job import search_space
        from hdas_tf.space.search_space import space_to_config
        out[name]["space"] = space_to_config(search_space(cfg, 10))
print(json.dumps(out))
"""


def _configs(main: str, files, extra_for) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    jobs = json.dumps([[f, extra_for(f)] for f in files])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(main=main), jobs], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def search_configs(tmp_path_factory):
    from hdas_tf.space.clusters import DEFAULT_CLUSTERS, EdgeClusters

    # StacNAS stage 2 leaves stage 1's hand-off to the command line; its search space reads the file.
    hand_off = tmp_path_factory.mktemp("stacnas1") / "edge_clusters.json"
    hand_off.write_text(json.dumps(EdgeClusters(DEFAULT_CLUSTERS, 4, (("normal", ("separable",) * 14),
                                                                      ("reduce", ("pooling",) * 14))).to_dict()))
    extra = {f: [f"--edge_clusters={hand_off}"] for f in SEARCH_FILES if "stacnas_members" in f}
    return _configs("search", SEARCH_FILES, lambda f: extra.get(f, []))


@pytest.fixture(scope="module")
def train_configs():
    return _configs("train", TRAIN_FILES, lambda f: TRAIN_EXTRA)


def test_every_flag_file_builds_its_config(search_configs, train_configs):
    assert set(search_configs) == set(SEARCH_FILES) and set(train_configs) == set(TRAIN_FILES)
    assert len(FLAG_FILES) >= 16 and "imagenet_train.cfg" in TRAIN_FILES


def test_imagenet_recipe_is_the_darts_one(train_configs):
    """DARTS train_imagenet.py, which the H-DAS paper follows: batch 128, lr 0.1 ×0.97 per epoch, no warm-up,
    250 epochs, label smoothing 0.1, weight decay 3e-5, auxiliary weight 0.4."""
    cfg = train_configs["imagenet_train.cfg"]
    expected = dict(batch_size=128, lr=0.1, lr_schedule="exponential", lr_decay=0.97, warmup_epochs=0, epochs=250,
                    label_smoothing=0.1, weight_decay=3e-5, auxiliary=True, auxiliary_weight=0.4, momentum=0.9,
                    layout="imagenet", init_channels=48, layers=14, drop_path_rate=0.0, augment="imagenet")
    assert {k: cfg[k] for k in expected} == expected
    cosine = train_configs["imagenet_train_cosine.cfg"]
    assert (cosine["lr_schedule"], cosine["warmup_epochs"]) == ("cosine", 5)
    assert {k: v for k, v in cosine.items() if k not in ("lr_schedule", "warmup_epochs")} == \
           {k: v for k, v in cfg.items() if k not in ("lr_schedule", "warmup_epochs")}


def test_stage_search_for_imagenet_has_four_cells_per_stage(search_configs):
    cfg = search_configs["cifar10_hs_das_stage_imagenet.cfg"]
    assert cfg["search"] == "stage" and cfg["stage_lengths"] == [4, 4, 4] and cfg["dataset"] == "cifar10"
    assert cfg["space"]["stage_lengths"] == [4, 4, 4] and cfg["space"]["layers"] == 14  # 3·4 + 2 reductions
    assert (cfg["batch_size"], cfg["weight_decay"]) == (128, 0.0027)


def test_window_ablation_differs_from_the_stage_search_in_m_only(search_configs):
    base = search_configs["cifar10_hs_das_stage.cfg"]
    assert base["window"] == 3
    for m in (2, 7):
        cfg = search_configs[f"cifar10_hs_das_stage_window{m}.cfg"]
        assert cfg["window"] == cfg["space"]["window"] == m
        assert {k: v for k, v in cfg.items() if k not in ("window", "space")} == \
               {k: v for k, v in base.items() if k not in ("window", "space")}

"""The public API (`import hdas_tf`): every Keras-serializable class registered by the import alone (a trained
model loads in a fresh process), and each function on a tiny case against hand-derived facts."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hdas_tf
from hdas_tf.nn.macs import count_params
from hdas_tf.space.genotypes import CellGenotype, Genotype
from hdas_tf.space.registry import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(script, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


# === import hdas_tf registers the package's Keras classes ===


def _decorated_classes() -> set:
    """``hdas_tf>Name`` of every class of the package's source decorated with register_keras_serializable,
    read from the source (not from the registry the test checks)."""
    names = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "hdas_tf")):
        for file in files:
            if not file.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(folder, file), encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(d, ast.Call) and ast.unparse(d.func).endswith("register_keras_serializable")
                        for d in node.decorator_list):
                    names.add(f"hdas_tf>{node.name}")
    return names


def test_import_hdas_tf_alone_registers_every_serializable_class(tmp_path):
    expected = _decorated_classes()
    assert {"hdas_tf>ChainNetwork", "hdas_tf>StageNetwork", "hdas_tf>ChainSupernet",
            "hdas_tf>CosineEpochSchedule"} <= expected
    proc = _python("""
        import json, pkgutil, importlib
        import keras
        import hdas_tf

        def ours():
            return sorted(k for k in keras.saving.get_custom_objects() if k.startswith("hdas_tf>"))

        after_import = ours()
        # Then every module (the mains define absl flags of the same names, and __main__ modules run): the
        # registry must not grow.
        for m in pkgutil.walk_packages(hdas_tf.__path__, "hdas_tf."):
            if not m.name.startswith("hdas_tf.cli") and not m.name.endswith("__main__"):
                importlib.import_module(m.name)
        print(json.dumps({"after_import": after_import, "after_all": ours()}))
    """, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["after_import"]) == expected
    assert result["after_all"] == result["after_import"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DARTS_V2 network trained one epoch (4 steps) on digits through ``hdas_tf.train``."""
    import keras

    keras.utils.set_random_seed(0)
    run_dir = tmp_path_factory.mktemp("api") / "run"
    cfg = hdas_tf.TrainConfig(genotype="DARTS_V2", init_channels=4, layers=3, batch_size=16, num_examples=64,
                              epochs=1, auxiliary=False, drop_path_rate=0.0, augment="none", log_every=2)
    summary = hdas_tf.train(cfg, run_dir)
    return run_dir, summary


def test_train_writes_a_model_that_loads_in_a_fresh_process_after_import_hdas_tf(trained, tmp_path):
    run_dir, summary = trained
    assert summary["steps"] == 4 and summary["epochs"] == 1  # 64 examples, batches of 16
    x = np.random.default_rng(1).normal(size=(5, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    # The reference: the same architecture built here, with the trained weights of model.keras.
    net = hdas_tf.build_network("DARTS_V2", num_classes=10, init_channels=4, layers=3, auxiliary=False,
                                image_size=32)
    net.load_weights(str(run_dir / "model.keras"))
    reference = net(x, training=False).numpy()
    model_path = str(run_dir / "model.keras")
    load = f"""
        import numpy as np
        import keras
        model = keras.models.load_model({model_path!r})
        np.save("y.npy", model(np.load("x.npy"), training=False).numpy())
        print(type(model).__name__)
    """
    proc = _python("import hdas_tf\n" + textwrap.dedent(load), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "ChainNetwork"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference, rtol=1e-5, atol=1e-6)
    # Without the import, Keras cannot find the class: the import is what makes it work.
    os.remove(tmp_path / "y.npy")
    without = _python(load, cwd=tmp_path)
    assert without.returncode != 0 and "Could not locate class 'ChainNetwork'" in without.stderr, without.stderr[-2000:]
    assert not (tmp_path / "y.npy").exists()


# === the functions ===


def test_load_genotype_by_name_and_file(tmp_path):
    assert hdas_tf.load_genotype("darts_v2") == REGISTRY["DARTS_V2"]
    REGISTRY["PDARTS"].save(tmp_path / "g.json")
    assert hdas_tf.load_genotype(tmp_path / "g.json") == REGISTRY["PDARTS"]
    with pytest.raises(hdas_tf.GenotypeError, match="unknown genotype 'NOPE'"):
        hdas_tf.load_genotype("NOPE")
    assert issubclass(hdas_tf.GenotypeError, hdas_tf.UserError) and issubclass(hdas_tf.UserError, ValueError)


SKIP_CELL = {"nodes": [[["skip_connect", 0], ["skip_connect", 1]]] * 4, "concat": [2, 3, 4, 5]}


def test_build_network_parameter_count_by_hand():
    """Every edge a skip_connect, so the weights are the stem, the preprocessing, the strided skips
    (FactorizedReduce) of the reduction cells and the classifier. C=4, L=3 (cells: normal, reduce, reduce),
    10 classes, no auxiliary head; convolutions without bias, every BN affine (γ, β):

    - stem: 3×3 conv 3→12: 324, BN(12): 24 → 348
    - cell 0, normal, C=4: ReLU-conv-BN 1×1 12→4 twice: 2·(48 + 8) → 112; output 16 channels
    - cell 1, reduce, C=8: ReLU-conv-BN 12→8: 96 + 16, 16→8: 128 + 16; 8 strided skips = FactorizedReduce
      8→8 (two 1×1 convs 8→4: 64, BN(8): 16) → 112 + 144 + 8·80 = 896; output 32
    - cell 2, reduce, C=16: FactorizedReduce 16→16 (the previous cell reduced): 256 + 32, ReLU-conv-BN 32→16:
      512 + 32; 8 FactorizedReduce 16→16: 8·288 → 288 + 544 + 2304 = 3136; output 64
    - classifier 64→10 with bias: 650
    Total 348 + 112 + 896 + 3136 + 650 = 5142.
    """
    genotype = Genotype(cells={"normal": CellGenotype(**_frozen(SKIP_CELL)),
                               "reduce": CellGenotype(**_frozen(SKIP_CELL))}, name="all_skip")
    net = hdas_tf.build_network(genotype, num_classes=10, init_channels=4, layers=3, auxiliary=False, image_size=32)
    assert type(net).__name__ == "ChainNetwork" and net.num_cells == 3
    assert count_params(net) == 5142
    assert net(np.zeros((2, 32, 32, 3), "float32"), training=False).shape == (2, 10)


def _frozen(cell):
    return {"nodes": tuple(tuple((op, src) for op, src in node) for node in cell["nodes"]),
            "concat": tuple(cell["concat"])}


def _alphas():
    """Hand-written α (CELL_OPS order: max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5,
    dil_conv_3x3, dil_conv_5x5, none); rows node by node, sources 0..i+1."""
    ops = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
           "dil_conv_5x5", "none"]
    normal, reduce = np.zeros((14, 8), np.float32), np.zeros((14, 8), np.float32)
    for a, row, op, value in [
        (normal, 0, "sep_conv_3x3", 2.0), (normal, 1, "skip_connect", 1.0),  # node 0: both inputs
        (normal, 2, "none", 5.0), (normal, 3, "dil_conv_5x5", 3.0), (normal, 4, "avg_pool_3x3", 1.5),
        (normal, 5, "sep_conv_5x5", 1.0), (normal, 7, "max_pool_3x3", 2.5), (normal, 8, "skip_connect", 0.5),
        (normal, 10, "dil_conv_3x3", 4.0), (normal, 13, "skip_connect", 3.0),
        (reduce, 0, "max_pool_3x3", 1.0), (reduce, 1, "max_pool_3x3", 2.0),
        (reduce, 3, "skip_connect", 1.0), (reduce, 4, "sep_conv_3x3", 2.0),
        (reduce, 5, "avg_pool_3x3", 2.0), (reduce, 8, "dil_conv_5x5", 1.0),
        (reduce, 12, "sep_conv_5x5", 2.0), (reduce, 13, "sep_conv_3x3", 1.0),
    ]:
        a[row, ops.index(op)] = value
    return {"alpha_normal": normal, "alpha_reduce": reduce}


# Per node the two edges of highest softmax probability of their best op other than 'none', strongest first.
# Normal node 1: row 2 (source 0) has 'none' at 5 and zeros elsewhere (best op probability 1/(7 + e^5) ≈ 0.006),
# below row 3 (dil_conv_5x5 at 3: e^3/(e^3 + 7) ≈ 0.74) and row 4 (avg_pool_3x3 at 1.5: ≈ 0.39).
# Normal node 2: rows 5..8 score e/(e + 7) ≈ 0.28, 1/8, e^2.5/(e^2.5 + 7) ≈ 0.64, e^0.5/(e^0.5 + 7) ≈ 0.19.
EXPECTED = {
    "normal": ((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_5x5", 1), ("avg_pool_3x3", 2)),
               (("max_pool_3x3", 2), ("sep_conv_5x5", 0)), (("dil_conv_3x3", 1), ("skip_connect", 4))),
    "reduce": ((("max_pool_3x3", 1), ("max_pool_3x3", 0)), (("sep_conv_3x3", 2), ("skip_connect", 1)),
               (("avg_pool_3x3", 0), ("dil_conv_5x5", 3)), (("sep_conv_5x5", 3), ("sep_conv_3x3", 4))),
}


def test_derive_genotype_from_a_hand_written_alphas_file(tmp_path):
    np.savez(tmp_path / "alphas.npz", **_alphas())
    genotype = hdas_tf.derive_genotype(tmp_path / "alphas.npz", name="hand")
    assert genotype.cells == {group: CellGenotype(nodes=nodes, concat=(2, 3, 4, 5))
                              for group, nodes in EXPECTED.items()}
    assert genotype.name == "hand" and genotype.stages is None
    with pytest.raises(hdas_tf.UserError, match="does not exist"):
        hdas_tf.derive_genotype(tmp_path / "missing.npz")
    np.savez(tmp_path / "stage.npz", alpha_stage=np.zeros((17, 4)))
    with pytest.raises(hdas_tf.GenotypeError, match="alpha_stage"):
        hdas_tf.derive_genotype(tmp_path / "stage.npz")
    with pytest.raises(hdas_tf.GenotypeError, match=r"alpha_normal: .*expected shape \(14, 8\)"):
        hdas_tf.derive_genotype({"alpha_normal": np.zeros((14, 7)), "alpha_reduce": np.zeros((14, 8))})


TINY_SEARCH = dict(init_channels=2, layers=3, batch_size=8, num_examples=32, epochs=1, max_steps=1, log_every=1)


def test_build_search_model_without_data():
    model = hdas_tf.build_search_model(hdas_tf.SearchConfig(**TINY_SEARCH), num_classes=10, image_size=16)
    assert {k: tuple(v.shape) for k, v in model.arch_dict().items()} == {"alpha_normal": (14, 8),
                                                                         "alpha_reduce": (14, 8)}
    cells = hdas_tf.build_search_model(hdas_tf.SearchConfig(cells="stage_specific", **TINY_SEARCH), num_classes=10,
                                       image_size=16)
    assert sorted(cells.arch_dict()) == ["alpha_normal1", "alpha_normal2", "alpha_normal3", "alpha_reduce1",
                                         "alpha_reduce2"]


def test_search_writes_a_genotype_that_derive_genotype_reproduces(tmp_path):
    run_dir = tmp_path / "run"
    summary = hdas_tf.search(hdas_tf.SearchConfig(**TINY_SEARCH), run_dir)
    assert summary["steps"] == 1 and summary["arch_params"] == 2 * 14 * 8
    genotype = hdas_tf.load_genotype(run_dir / "genotype.json")
    assert hdas_tf.derive_genotype(run_dir / "alphas.npz").cells == genotype.cells
    # A refused search writes nothing: 36 examples split 18/18 cannot fill a batch of 32.
    refused = tmp_path / "refused"
    with pytest.raises(hdas_tf.DataError, match="has 18 examples .* largest batch that fits is 18"):
        hdas_tf.search(hdas_tf.SearchConfig(**{**TINY_SEARCH, "batch_size": 32, "num_examples": 36}), refused)
    assert not refused.exists()

"""Export for TF Serving (`python -m hdas_tf.export`, BUILD_NOTES "Export for TF Serving"): the signature as
`saved_model_cli` reports it, outputs equal to the Keras model's when loaded in a process that cannot import
hdas_tf, batches of 1 and 7, the TFLite model, atomic versions (existing ones refused unless overwrite; a run
without a model writes nothing), `--resize`, where the normalisation constants come from, and
`scripts/serving_smoke.sh`.

The model is a tiny DARTS_V2 chain network (C=4, 3 cells, 10 classes, 32×32×3) with an auxiliary head and drop
path, after one training step (so BN running statistics are not trivial), normalised with the digits' constants.
Subprocesses cost ~10 s each on the shared CPU (TensorFlow import), so there are few of them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf import data
from hdas_tf import serving as ex
from hdas_tf.nn.eval_networks import ChainNetwork

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = (32, 32, 3)


def _env(pythonpath=True):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if pythonpath:
        env["PYTHONPATH"] = ROOT
    return env


def _export_cli(*args):
    return subprocess.run([sys.executable, "-m", "hdas_tf.export", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny network after one SGD step, its .keras file in a run directory with data_info.json, the digits'
    DataInfo, and test images (real digits, 7 of them)."""
    keras.utils.set_random_seed(0)
    info = data.dataset_info("digits")
    net = ChainNetwork("DARTS_V2", num_classes=10, init_channels=4, layers=3, auxiliary=True, drop_path=True)
    net.build((None, *IMAGE))
    images = np.stack([x for x, _ in data.raw_examples("digits", "test").take(16).as_numpy_iterator()])
    labels = np.arange(16) % 10
    net.drop_path_rate.assign(0.1)
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        logits, aux = net(data.normalize(images, info), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                              + 0.4 * tf.nn.sparse_softmax_cross_entropy_with_logits(labels, aux))
    variables = net.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, [v.value for v in variables]), variables))
    moving_means = [v for v in net.variables if v.path.endswith("moving_mean")]
    assert any(np.abs(v.numpy()).max() > 1e-3 for v in moving_means)  # BN statistics moved off their init

    run_dir = tmp_path_factory.mktemp("export") / "run"
    run_dir.mkdir()
    with warnings.catch_warnings():  # numpy 2 "__array__ ... copy keyword", once per variable, from Keras
        warnings.simplefilter("ignore", DeprecationWarning)
        keras.saving.save_model(net, run_dir / "model.keras")
    ex.write_data_info(str(run_dir), info, augment="cifar")
    (run_dir / "config.json").write_text(json.dumps({"dataset": "digits", "augment": "cifar", "image_size": None}))
    test_images = images[:7]
    return dict(net=net, info=info, run_dir=run_dir, images=test_images,
                reference=_keras_outputs(net, info, test_images))


def _keras_outputs(net, info, images):
    logits = net(data.normalize(images, info), training=False).numpy()
    return {"logits": logits, "probabilities": tf.nn.softmax(logits).numpy(), "classes": logits.argmax(-1)}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """`python -m hdas_tf.export --run_dir=RUN --export_dir=BASE --tflite` → BASE."""
    base = tmp_path_factory.mktemp("serving") / "digits"
    proc = _export_cli(f"--run_dir={trained['run_dir']}", f"--export_dir={base}", "--tflite")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == str(base / "1")
    return base


def test_cli_writes_one_integer_version_with_assets_and_extras(exported, trained):
    assert sorted(os.listdir(exported)) == ["1"]  # no temporary folders left
    version = exported / "1"
    for name in ("saved_model.pb", "variables", "assets/class_names.txt", "assets.extra/export.json",
                 "assets.extra/model.tflite"):
        assert (version / name).exists(), name
    # Traced with TF's own kernels: TF Serving and TFLite know none of hdas_tf's CPU ops (hdas_tf.cpu_kernels).
    assert b"Hdas" not in (version / "saved_model.pb").read_bytes()
    info = trained["info"]
    assert (version / "assets" / "class_names.txt").read_text().splitlines() == list(info.class_names)
    meta = json.loads((version / "assets.extra" / "export.json").read_text())
    assert meta["mean"] == list(info.mean) and meta["std"] == list(info.std) and meta["image_size"] == [32, 32]
    assert meta["class_names"] == list(info.class_names) and meta["resize"] is False
    assert meta["metadata_sources"]["mean"].endswith("data_info.json")
    assert meta["source"] == str(trained["run_dir"]) and meta["tflite_flex_ops"] == []
    # Only what inference uses is saved: no auxiliary head, drop path rate or drop path seeds.
    net = trained["net"]
    used = [v for v in net.variables if "auxiliary_head" not in v.path and "seed_generator" not in v.path
            and v.path != net.drop_path_rate.path]
    saved = [shape for name, shape in tf.train.list_variables(str(version / "variables" / "variables"))
             if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert sorted(map(tuple, saved)) == sorted(tuple(v.shape) for v in used)


def test_clean_process_without_hdas_tf_matches_keras(exported, trained, tmp_path):
    images = trained["images"]
    np.save(tmp_path / "x.npy", images)
    # hdas_tf is installed in the environment, so hide it as a serving host without the library would.
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hdas_tf"] = None  # any import of hdas_tf, direct or by TensorFlow, now fails
        import numpy as np
        try:
            import hdas_tf
        except ImportError:
            print("NO_HDAS_TF")
        import tensorflow as tf
        serve = tf.saved_model.load({str(exported / "1")!r}).signatures["serving_default"]
        x = np.load("x.npy")
        out = {{}}
        for name, batch in (("b1", x[:1]), ("b7", x)):
            for k, v in serve(images=tf.constant(batch)).items():
                out[name + "_" + k] = v.numpy()
        np.savez("out.npz", **out)
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=_env(pythonpath=False),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "NO_HDAS_TF" in proc.stdout  # the export is used without the library
    out = dict(np.load(tmp_path / "out.npz", allow_pickle=True))
    ref, names = trained["reference"], np.array(trained["info"].class_names)
    for prefix, n in (("b1", 1), ("b7", 7)):
        assert out[f"{prefix}_probabilities"].dtype == np.float32 and out[f"{prefix}_classes"].dtype == np.int64
        np.testing.assert_allclose(out[f"{prefix}_probabilities"], ref["probabilities"][:n], atol=1e-5, rtol=0)
        np.testing.assert_allclose(out[f"{prefix}_logits"], ref["logits"][:n], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(out[f"{prefix}_classes"], ref["classes"][:n])
        assert [b.decode() for b in out[f"{prefix}_class_names"]] == list(names[ref["classes"][:n]])


def test_serving_smoke_script_shows_signature_and_runs(exported):
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "serving_smoke.sh"), str(exported / "1"), "3"],
                          cwd=ROOT, env=_env(pythonpath=False), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "serving smoke test passed" in out
    # `saved_model_cli show --all`, as TF Serving will read the signature.
    block = out[out.index("signature_def['serving_default']"):]
    block = block[:block.index("Method name is:") + 60]
    assert "Method name is: tensorflow/serving/predict" in block

    def tensor(kind, name):
        m = re.search(rf"{kind}\['{name}'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", block)
        assert m, f"{kind} {name} missing from:\n{block}"
        return m.group(1), m.group(2)

    assert tensor("inputs", "images") == ("DT_UINT8", "(-1, 32, 32, 3)")
    assert tensor("outputs", "logits") == ("DT_FLOAT", "(-1, 10)")
    assert tensor("outputs", "probabilities") == ("DT_FLOAT", "(-1, 10)")
    assert tensor("outputs", "classes") == ("DT_INT64", "(-1)")
    assert tensor("outputs", "class_names") == ("DT_STRING", "(-1)")
    assert len(re.findall(r"outputs\['", block)) == 4
    assert "classes: int64 (3,)" in out  # the `saved_model_cli run` outputs, checked by the script


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_matches_keras(exported, trained):
    images, ref = trained["images"], trained["reference"]
    interpreter = tf.lite.Interpreter(model_path=str(exported / "1" / "assets.extra" / "model.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    for n in (1, 7):
        out = runner(images=images[:n])
        assert sorted(out) == ["classes", "logits", "probabilities"]
        np.testing.assert_allclose(out["probabilities"], ref["probabilities"][:n], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(out["classes"], ref["classes"][:n])


@pytest.fixture(scope="module")
def replaced(exported, trained, tmp_path_factory):
    """A copy of the export; version 1 refused, then overwritten from --model with flag metadata and --resize."""
    base = tmp_path_factory.mktemp("replace") / "digits"
    shutil.copytree(exported, base)
    before = os.stat(base / "1" / "saved_model.pb").st_ino
    model_dir = tmp_path_factory.mktemp("model_only")  # no data_info.json beside it
    model = shutil.copy(trained["run_dir"] / "model.keras", model_dir / "net.keras")
    info = trained["info"]
    args = dict(model=str(model), mean=list(info.mean), std=list(info.std), resize=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        ex.export(str(base), **args)
    assert os.stat(base / "1" / "saved_model.pb").st_ino == before and sorted(os.listdir(base)) == ["1"]
    path = ex.export(str(base), overwrite=True, **args)
    return dict(base=base, path=path, inode_before=before)


def test_overwrite_replaces_the_version_atomically(replaced):
    base = replaced["base"]
    assert replaced["path"] == str(base / "1") and sorted(os.listdir(base)) == ["1"]
    assert os.stat(base / "1" / "saved_model.pb").st_ino != replaced["inode_before"]
    meta = json.loads((base / "1" / "assets.extra" / "export.json").read_text())
    assert meta["resize"] is True and meta["resize_method"] == "resize" and meta["class_names"] is None
    assert meta["metadata_sources"] == {"mean": "arguments", "std": "arguments", "image_size": "model build shape"}
    assert not (base / "1" / "assets" / "class_names.txt").exists()


def test_resize_export_takes_any_size(replaced, trained):
    serve = tf.saved_model.load(replaced["path"]).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, None, None, 3]
    assert sorted(serve.structured_outputs) == ["classes", "logits", "probabilities"]
    net, info, images = trained["net"], trained["info"], trained["images"]
    same = serve(images=tf.constant(images[:2]))
    np.testing.assert_allclose(same["probabilities"], trained["reference"]["probabilities"][:2], atol=1e-5, rtol=0)
    big = tf.image.resize(images[:3], (40, 44), method="nearest").numpy().astype(np.uint8)
    out = serve(images=tf.constant(big))
    # The run's evaluation transform: antialiased bilinear resize to the trained size, clipped, normalised.
    resized = tf.clip_by_value(tf.image.resize(big, (32, 32), method="bilinear", antialias=True), 0.0, 255.0)
    expected = _keras_outputs(net, info, resized)
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-5, rtol=0)


def test_batched_resize_functions_equal_the_data_pipeline():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 37, 50, 3)).astype(np.uint8)
    crop = data.resize_and_center_crop(tf.cast(batch, tf.float32), (32, 32), ex.DEFAULT_CROP_FRACTION)
    resize = data.resize_to(tf.cast(batch, tf.float32), (32, 32))
    for i in range(3):
        np.testing.assert_allclose(crop[i], data.resize_and_center_crop(batch[i], (32, 32)), atol=1e-4)
        np.testing.assert_allclose(resize[i], data.eval_transform(batch[i], (32, 32), "cifar", 0.875), atol=1e-4)
    same = data.resize_to(tf.cast(batch[:, :32, :32], tf.float32), (32, 32))
    np.testing.assert_array_equal(same, batch[:, :32, :32].astype(np.float32))


def test_run_without_model_is_a_clear_error_and_writes_nothing(tmp_path, trained):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(trained["run_dir"] / "config.json", run_dir)
    tf.train.Checkpoint(step=tf.Variable(1)).save(str(run_dir / "checkpoints" / "ckpt"))  # training in progress
    base = tmp_path / "serving"
    proc = _export_cli(f"--run_dir={run_dir}", f"--export_dir={base}")
    assert proc.returncode == 2  # a user error (BUILD_NOTES "Errors and exit codes")
    assert "has no trained model (model.keras" in proc.stderr and "--resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not base.exists()
    # An existing base directory gains nothing either (no version, no temporary folder).
    (base / "7").mkdir(parents=True)
    with pytest.raises(ex.ExportError, match="no trained model"):
        ex.export(str(base), run_dir=str(run_dir), version=3)
    assert os.listdir(base) == ["7"]


def test_metadata_resolution(trained, tmp_path):
    net, info, run_dir = trained["net"], trained["info"], trained["run_dir"]
    model_path = str(run_dir / "model.keras")
    from_info = ex.resolve_spec(net, model_path=model_path, run_dir=str(run_dir))
    assert (from_info.mean, from_info.std, from_info.class_names) == (info.mean, info.std, info.class_names)
    assert from_info.image_size == (32, 32) and from_info.resize_method == "resize"
    # Without data_info.json, a run's config.json names the data set (digits: constants computed again).
    bare = tmp_path / "run"
    bare.mkdir()
    shutil.copy(run_dir / "config.json", bare)
    from_config = ex.resolve_spec(net, model_path=str(bare / "model.keras"), run_dir=str(bare))
    assert from_config == from_info and from_config.sources["mean"].endswith("config.json")
    # Arguments win; an explicit data-info file replaces the one beside the model.
    spec = ex.resolve_spec(net, model_path=model_path, mean=[0.5] * 3, image_size=["28"])
    assert spec.mean == (0.5,) * 3 and spec.std == info.std and spec.image_size == (28, 28)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1], "image_shape": [36, 30, 3],
                                 "class_names": None, "eval_transform": "center_crop"}))
    spec = ex.resolve_spec(net, model_path=model_path, run_dir=str(run_dir), data_info=str(other))
    assert (spec.mean, spec.image_size, spec.class_names, spec.resize_method) == (
        (0.1, 0.2, 0.3), (36, 30), None, "center_crop")
    # A bare model file: the size from its build shape, but mean/std must be given.
    with pytest.raises(ex.ExportError, match="--mean, --std"):
        ex.resolve_spec(net, model_path=str(tmp_path / "net.keras"))
    with pytest.raises(ex.ExportError, match="3 class names for a model with 10 classes"):
        ex.export_model(net, ex.ServingSpec((32, 32), info.mean, info.std, ("a", "b", "c")), str(tmp_path / "b"))
    for bad in (0, -1, "1"):
        with pytest.raises(ex.ExportError, match="integer >= 1"):
            ex.version_dir(str(tmp_path / "b"), bad)
    with pytest.raises(ex.ExportError, match="line breaks"):
        ex.ServingSpec((32, 32), info.mean, info.std, ("a\nb",))
    assert not (tmp_path / "b").exists()


def test_benchmark_saved_model(exported):
    result = ex.benchmark_saved_model(str(exported / "1"), batch=2, steps=2)
    assert result["batch"] == 2 and result["steps"] == 2 and result["images_per_s"] > 0

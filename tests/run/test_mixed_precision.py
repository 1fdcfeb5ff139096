"""--mixed_precision and --jit_compile on tiny networks: a bf16 search step keeps α/β, their softmaxes and the BN
statistics float32 and gives the float32 step's losses within bf16's precision; fp16 steps with a dynamic loss
scale (its rule checked by hand on FlatSGD); an XLA step gives the float32 step's numbers; a mixed-precision
network is saved in float32; and the combinations that cannot work are refused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hdas_tf.nn.eval_networks import build_eval_network
from hdas_tf.nn.supernets import ChainSupernet
from hdas_tf.run.optimizers import DynamicLossScale, FlatSGD
from hdas_tf.run.precision import policy_name, policy_scope
from hdas_tf.run.strategy import distributed_step
from hdas_tf.search.config import SearchConfig
from hdas_tf.search.model import ArchitectureSearchModel
from hdas_tf.space.registry import REGISTRY
from hdas_tf.space.search_space import SearchSpace
from hdas_tf.train.config import TrainConfig
from hdas_tf.train.job import float32_network
from hdas_tf.train.model import TrainingModel

SPACE = SearchSpace(layers=3, init_channels=4, num_classes=4,
                    cell_ops=("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none"))
IMAGE = (8, 8, 3)
# bfloat16 keeps 8 significant bits: each rounding is off by up to 2^-9 ≈ 0.2 %. Through the tiny supernet
# (stem, three cells of sums of convolutions, BN re-normalising every block) the errors partly cancel; a
# cross-entropy near 1.5 may move by a few tenths of a percent: allowed 0.01 (≈ 0.7 %).
BF16_LOSS_TOL = 0.01
# The α gradient is a small difference of large sums (the mixed ops' outputs), so it carries bf16's rounding
# amplified (20-25 % of its norm here): allowed half its norm; a gradient unrelated to it would be off by ~140 %.
BF16_ARCH_GRAD_REL_TOL = 0.5


def _search_model(mode="off", seed=0):
    keras.utils.set_random_seed(seed)
    with policy_scope(mode):
        supernet = ChainSupernet(SPACE)
    model = ArchitectureSearchModel(supernet, SPACE.arch_shapes(), seed=seed)
    fp16 = mode == "fp16"
    w_opt = FlatSGD(0.05, momentum=0.9, loss_scale=DynamicLossScale() if fp16 else None)
    a_opt = keras.optimizers.Adam(3e-3, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
    if fp16:
        a_opt = keras.optimizers.LossScaleOptimizer(a_opt)
    model.build_all(IMAGE, w_opt, a_opt)
    return model


def _step(model, jit_compile=False):
    return distributed_step(tf.distribute.get_strategy(), model.train_step, jit_compile)


def test_policy_names_and_scope_restores_the_global_policy():
    assert [policy_name(m) for m in ("off", "bf16", "fp16")] == ["float32", "mixed_bfloat16", "mixed_float16"]
    before = keras.config.dtype_policy().name
    with policy_scope("bf16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        policy_name("fp8")


def test_bf16_search_step_keeps_the_architecture_float32_and_matches_float32(search_batch):
    m32, m16 = _search_model("off"), _search_model("bf16")
    # Same seed: the same float32 starting values (a mixed policy keeps its variables float32).
    for a, b in zip(m32.variables, m16.variables):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    seen = {}
    call = m16.supernet.call

    def spy(images, arch, training=None):
        seen.update({name: value.dtype for name, value in arch.items()})
        return call(images, arch, training=training)

    m16.supernet.call = spy
    batch = search_batch()
    (_, _), (xv, yv) = batch
    g32 = tf.function(m32.arch_gradients)(xv, yv)[0]
    g16 = tf.function(m16.arch_gradients)(xv, yv)[0]
    for a, b in zip(g32, g16):
        assert b.dtype == tf.float32
        assert np.linalg.norm(b.numpy() - a.numpy()) < BF16_ARCH_GRAD_REL_TOL * np.linalg.norm(a.numpy())
    logits16 = m16(batch[1][0], training=False)
    assert logits16.dtype == tf.bfloat16  # the weights' layers really compute in bfloat16
    assert seen and set(seen.values()) == {tf.float32}  # α reaches the supernet (and its softmax) as float32
    out32 = {k: float(v) for k, v in _step(m32)(batch).items()}
    out16 = {k: float(v) for k, v in _step(m16)(batch).items()}
    for v in m16.arch_variables:
        assert v.dtype == "float32" and np.all(np.isfinite(v.numpy()))
    moving = [v for v in m16.non_trainable_variables if "moving" in v.path]
    assert moving and all(v.dtype == "float32" for v in moving)
    # loss_a is the first forward pass, at identical weights; loss_w follows one (tiny) α step.
    assert abs(out16["loss_a"] - out32["loss_a"]) < BF16_LOSS_TOL
    assert abs(out16["loss_w"] - out32["loss_w"]) < BF16_LOSS_TOL


def test_flat_sgd_loss_scale_by_hand():
    """scale 8: the caller's gradient is 8·g; the update is the unscaled SGD one (v = g + λw, w −= lr·v). A
    non-finite gradient changes nothing but halves the scale; two finite steps in a row double it."""
    w = tf.Variable([1.0, -2.0])
    opt = FlatSGD(0.1, momentum=0.9, loss_scale=DynamicLossScale(initial=8.0, growth_steps=2))
    opt.build([w])
    g = np.array([0.5, 0.25], np.float32)
    opt.apply([tf.constant(8.0 * g)], [w], weight_decay=0.01)
    v1 = g + 0.01 * np.array([1.0, -2.0], np.float32)
    w1 = np.array([1.0, -2.0], np.float32) - 0.1 * v1
    np.testing.assert_allclose(w.numpy(), w1, rtol=1e-6)
    assert int(opt.iterations.numpy()) == 1 and float(opt.loss_scale.scale.numpy()) == 8.0
    opt.apply([tf.constant([np.inf, 1.0], tf.float32)], [w], weight_decay=0.01)
    np.testing.assert_array_equal(w.numpy(), w1)  # skipped
    np.testing.assert_allclose(opt.buffer.numpy(), v1, rtol=1e-6)
    assert int(opt.iterations.numpy()) == 1 and float(opt.loss_scale.scale.numpy()) == 4.0
    assert int(opt.loss_scale.good_steps.numpy()) == 0
    opt.apply([tf.constant(4.0 * g)], [w], weight_decay=0.0)
    assert float(opt.loss_scale.scale.numpy()) == 4.0 and int(opt.loss_scale.good_steps.numpy()) == 1
    opt.apply([tf.constant(4.0 * g)], [w], weight_decay=0.0)
    assert float(opt.loss_scale.scale.numpy()) == 8.0 and int(opt.loss_scale.good_steps.numpy()) == 0
    assert int(opt.iterations.numpy()) == 3


def test_fp16_search_step_runs_with_loss_scaling(search_batch):
    model = _search_model("fp16")
    assert isinstance(model.a_optimizer, keras.optimizers.LossScaleOptimizer)
    step = _step(model)
    for seed in range(3):
        out = {k: float(v) for k, v in step(search_batch(seed=seed)).items()}
        assert np.isfinite(out["loss_w"]) and np.isfinite(out["loss_a"])
    scale = model.w_optimizer.loss_scale
    skipped = 3 - int(model.w_optimizer.iterations.numpy())
    # The rule: 2^15 halved once per skipped (non-finite) step, no growth within 2000 steps.
    assert float(scale.scale.numpy()) == 2.0 ** 15 / 2 ** skipped and skipped < 3
    for v in model.arch_variables:
        assert v.dtype == "float32" and np.all(np.isfinite(v.numpy()))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weight_variables)


@pytest.mark.slow  # ~45 s on a loaded 2-core host: XLA compiles the whole step
def test_jit_compiled_step_gives_the_float32_step(search_batch):
    plain, xla = _search_model("off"), _search_model("off")
    batch = search_batch()
    out = {k: float(v) for k, v in _step(plain)(batch).items()}
    out_xla = {k: float(v) for k, v in _step(xla, jit_compile=True)(batch).items()}
    assert out.keys() == out_xla.keys()
    for k in out:
        assert out_xla[k] == pytest.approx(out[k], rel=1e-4, abs=1e-5), k
    # One step of both optimizers: the variables agree to float32 rounding (XLA fuses and reorders sums).
    for a, b in zip(plain.variables, xla.variables):
        np.testing.assert_allclose(np.asarray(b.numpy()), np.asarray(a.numpy()), rtol=1e-4, atol=1e-5)


def test_bf16_training_step_and_float32_model():
    cfg = TrainConfig(genotype="DARTS_V2", init_channels=4, layers=3, auxiliary=False, drop_path_rate=0.0,
                      mixed_precision="bf16")
    outs = {}
    nets = {}
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 32, 32, 3)), tf.float32)
    y = tf.constant([0, 1, 2, 3, 4, 0], tf.int32)
    for mode in ("off", "bf16"):
        keras.utils.set_random_seed(0)
        with policy_scope(mode):
            net = build_eval_network(REGISTRY["DARTS_V2"], 5, 4, 3, auxiliary=False, drop_path=False)
        model = TrainingModel(net, grad_clip=0.0)
        model.build_all((32, 32, 3), FlatSGD(0.1, momentum=0.9))
        outs[mode] = {k: float(v) for k, v in _step(model)((x, y)).items()}
        nets[mode] = net
    assert abs(outs["bf16"]["loss"] - outs["off"]["loss"]) < BF16_LOSS_TOL
    copy = float32_network(cfg, REGISTRY["DARTS_V2"], 5, (32, 32, 3), nets["bf16"])
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    for a, b in zip(copy.variables, nets["bf16"].variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    y32 = copy(x, training=False)
    assert y32.dtype == tf.float32
    y16 = nets["bf16"](x, training=False)
    np.testing.assert_allclose(y32.numpy(), tf.cast(y16, tf.float32).numpy(), atol=0.1)


def test_refused_combinations():
    with pytest.raises(ValueError, match="--jit_compile works with --strategy=default only"):
        SearchConfig(jit_compile=True, strategy="mirrored")
    with pytest.raises(ValueError, match="--jit_compile works with --strategy=default only"):
        TrainConfig(genotype="DARTS_V2", jit_compile=True, strategy="multi_worker")
    # Minute-based checkpoints are the chief's decision on a multi-worker run (run.checkpoints.WorkerAgreement).
    assert SearchConfig(checkpoint_every_minutes=5, strategy="multi_worker").checkpoint_every_minutes == 5
    with pytest.raises(ValueError, match="unrolled .* has no loss scaling"):
        SearchConfig(unrolled=True, mixed_precision="fp16")
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        TrainConfig(genotype="DARTS_V2", mixed_precision="fp8")


def test_bf16_training_run_saves_a_float32_model(tmp_path):
    from hdas_tf.train.job import TrainJob

    cfg = TrainConfig(genotype="DARTS_V2", init_channels=4, layers=3, batch_size=16, num_examples=32, epochs=1,
                      auxiliary=False, drop_path_rate=0.0, augment="none", mixed_precision="bf16")
    keras.utils.set_random_seed(0)
    job = TrainJob(cfg, tmp_path / "run")
    summary = job.run()
    assert summary["mixed_precision"] == "bf16"
    assert job.network.cells[0].compute_dtype == "bfloat16"  # it trained in bfloat16
    loaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert {layer.dtype_policy.name for layer in loaded._flatten_layers()} == {"float32"}
    for a, b in zip(loaded.variables, job.network.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    x = tf.zeros((2, 8, 8, 3))
    assert loaded(x, training=False).dtype == tf.float32

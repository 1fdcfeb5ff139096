"""Tests of hdas_tf.data: sources, the search split, augmentation, sharding and error messages.

Everything here runs offline: TFDS sets through tfds.testing.mock_data, the digits set from scikit-learn,
folders written into tmp_path. No test may reach TFDS's download path (it retries for minutes offline).
"""

import collections
import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from hdas_tf import data
from hdas_tf.data import folders


def _mock(tmp_path, num_examples):
    return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE,
                                  data_dir=str(tmp_path))


def _keys(images):
    """Hashable identity of each image in a batch (rounded, so graph and eager float math compare equal)."""
    return [np.round(np.asarray(im), 3).tobytes() for im in images]


# --- digits ----------------------------------------------------------------------------------------


def test_digits_info():
    info = data.dataset_info("digits")
    assert info.name == "digits"
    assert info.num_classes == 10
    assert info.image_shape == (32, 32, 3)
    assert (info.num_train, info.num_test) == (1500, 297)
    assert info.num_train + info.num_test == 1797
    assert info.class_names == tuple("0123456789")
    # The three channels are copies, so their statistics are equal; values match the training images.
    x_train = np.stack([x for x, _ in data.raw_examples("digits", "train").as_numpy_iterator()])
    expected_mean = x_train.astype(np.float64).mean() / 255.0
    np.testing.assert_allclose(info.mean, [expected_mean] * 3, rtol=1e-9)
    np.testing.assert_allclose(info.std, [(x_train / 255.0).std()] * 3, rtol=1e-9)


def test_digits_images_and_labels_are_sklearns():
    digits = load_digits()
    perm = np.random.default_rng(data.DIGITS_SPLIT_SEED).permutation(1797)
    for split, idx in (("train", perm[:1500]), ("test", perm[1500:])):
        pairs = list(data.raw_examples("digits", split).as_numpy_iterator())
        images = np.stack([x for x, _ in pairs])
        labels = np.array([y for _, y in pairs])
        assert images.dtype == np.uint8 and images.shape == (len(idx), 32, 32, 3)
        np.testing.assert_array_equal(labels, digits.target[idx])
        # Pixel (r, c) of the 32×32 image is pixel (r // 4, c // 4) of the 8×8 one, 0..16 → 0..255.
        expected = np.round(digits.images[idx][:, np.arange(32) // 4][:, :, np.arange(32) // 4] * 255 / 16)
        np.testing.assert_array_equal(images[..., 0], expected.astype(np.uint8))
        np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert images.max() == 255 and images.min() == 0


def test_digits_search_batches():
    weight_ds, arch_ds, info = data.search_datasets("digits", batch_size=64, seed=0)
    assert weight_ds.cardinality() == tf.data.INFINITE_CARDINALITY
    assert arch_ds.cardinality() == tf.data.INFINITE_CARDINALITY
    for ds in (weight_ds, arch_ds):
        x, y = next(iter(ds))
        assert x.shape == (64, 32, 32, 3) and x.dtype == tf.float32
        assert y.shape == (64,) and y.dtype == tf.int32
        assert 0 <= int(tf.reduce_min(y)) and int(tf.reduce_max(y)) <= 9
    assert data.search_batches_per_epoch(info, 64, 0.5) == 750 // 64 == 11
    assert data.search_batches_per_epoch(info, 16, 0.5, num_examples=100) == 50 // 16


def test_search_split_indices():
    a, b = data.split_indices(1500, 0.5, seed=3)
    assert len(a) == len(b) == 750
    assert not set(a) & set(b)
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(1500))
    a2, b2 = data.split_indices(1500, 0.5, seed=3)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    a3, _ = data.split_indices(1500, 0.5, seed=4)
    assert not np.array_equal(a, a3)
    assert len(data.split_indices(101, 0.3, seed=0)[0]) == 30  # floor(0.3 * 101)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.split_indices(10, 1.0, seed=0)


def test_search_split_halves_by_example_identity():
    """One batch of the half's size is exactly one shuffled pass over the half: compare image multisets."""
    info = data.dataset_info("digits")
    all_train = np.stack([x for x, _ in data.raw_examples("digits", "train").as_numpy_iterator()])
    all_keys = _keys(data.normalize(all_train, info).numpy())

    def halves(seed):
        w, a, _ = data.search_datasets("digits", batch_size=750, seed=seed)
        return collections.Counter(_keys(next(iter(w))[0])), collections.Counter(_keys(next(iter(a))[0]))

    w0, a0 = halves(0)
    assert sum(w0.values()) == sum(a0.values()) == 750
    assert w0 + a0 == collections.Counter(all_keys)  # cover the training set, no example twice
    idx_w, idx_a = data.split_indices(1500, 0.5, seed=0)
    assert w0 == collections.Counter(all_keys[i] for i in idx_w)
    assert a0 == collections.Counter(all_keys[i] for i in idx_a)
    assert halves(0) == (w0, a0)
    w1, a1 = halves(1)
    assert w1 != w0 and w1 + a1 == w0 + a0


def test_search_same_seed_same_batches_with_augmentation():
    def first(seed):
        w, _, _ = data.search_datasets("digits", batch_size=8, seed=seed, augment="cifar")
        return next(iter(w))[0].numpy()

    np.testing.assert_array_equal(first(5), first(5))
    assert not np.array_equal(first(5), first(6))


def test_num_examples_caps_training_set():
    w, a, info = data.search_datasets("digits", batch_size=20, num_examples=40, seed=0)
    keys_w = _keys(next(iter(w))[0])
    keys_a = _keys(next(iter(a))[0])
    first40 = np.stack([x for x, _ in data.raw_examples("digits", "train").take(40).as_numpy_iterator()])
    allowed = collections.Counter(_keys(data.normalize(first40, info).numpy()))
    assert collections.Counter(keys_w) + collections.Counter(keys_a) == allowed
    with pytest.raises(ValueError, match="fewer than batch_size=32"):
        data.search_datasets("digits", batch_size=32, num_examples=40)


def test_input_context_shards_and_uses_per_replica_batch():
    seen = collections.Counter()
    for pipeline in (0, 1):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        w, _, _ = data.search_datasets("digits", batch_size=750, seed=0, input_context=ctx)
        x, _ = next(iter(w))
        assert x.shape[0] == 375  # per-replica batch = global 750 / 2 replicas = one shard's size
        seen.update(_keys(x))
    w_global, _, _ = data.search_datasets("digits", batch_size=750, seed=0)
    assert seen == collections.Counter(_keys(next(iter(w_global))[0]))

    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=4)
    fn = data.search_input_fn(dataset="digits", batch_size=64)
    (xw, yw), (xa, ya) = next(iter(fn(ctx)))
    assert xw.shape == xa.shape == (16, 32, 32, 3) and yw.shape == ya.shape == (16,)


def test_train_test_datasets_digits():
    train, test, info = data.train_test_datasets("digits", batch_size=96, augment="cifar", cutout=16)
    assert train.cardinality() == 1500 // 96  # drop_remainder, one pass (repeat=False)
    x, y = next(iter(train))
    assert x.shape == (96, 32, 32, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    # The test set is unaugmented, in order, and keeps the remainder: 297 = 3 * 96 + 9.
    batches = list(test.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [96, 96, 96, 9]
    raw = list(data.raw_examples("digits", "test").as_numpy_iterator())
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]),
                               data.normalize(np.stack([r[0] for r in raw]), info).numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), [r[1] for r in raw])
    repeated, _, _ = data.train_test_datasets("digits", batch_size=96, repeat=True)
    assert repeated.cardinality() == tf.data.INFINITE_CARDINALITY


def test_validation_fraction_holds_out_part_of_training_split():
    train, val, info = data.train_test_datasets("digits", batch_size=50, validation_fraction=0.2,
                                                augment="none", seed=7)
    val_x = np.concatenate([x for x, _ in val.as_numpy_iterator()])
    assert len(val_x) == 300  # 1500 - floor(0.8 * 1500)
    train_x = np.concatenate([x for x, _ in train.as_numpy_iterator()])
    assert len(train_x) == 1200
    all_train = np.stack([x for x, _ in data.raw_examples("digits", "train").as_numpy_iterator()])
    all_keys = collections.Counter(_keys(data.normalize(all_train, info).numpy()))
    assert collections.Counter(_keys(train_x)) + collections.Counter(_keys(val_x)) == all_keys


# --- augmentation ----------------------------------------------------------------------------------


def _cifar_like_info():
    return data.DataInfo(name="t", num_classes=10, image_shape=(32, 32, 3), mean=data.CIFAR10_MEAN,
                         std=data.CIFAR10_STD, class_names=None, num_train=1, num_test=1)


def test_normalize_values():
    info = _cifar_like_info()
    out = data.normalize(tf.fill([1, 1, 3], tf.constant(255, tf.uint8)), info).numpy()
    np.testing.assert_allclose(out[0, 0], (1 - np.array(data.CIFAR10_MEAN)) / np.array(data.CIFAR10_STD),
                               rtol=1e-6)


def test_cutout_zeroes_at_most_a_16x16_square_only_in_training():
    info = _cifar_like_info()
    image = tf.fill([32, 32, 3], tf.constant(200, tf.uint8))
    inner = data.normalize(image, info).numpy()[0, 0]
    assert np.all(inner != 0)
    zero_counts = []
    for i in range(40):
        out = data.preprocess(image, info, training=True, augment="cifar", cutout=16,
                              seed=tf.constant([1, i], tf.int64)).numpy()
        assert out.shape == (32, 32, 3)
        zero = np.all(out == 0, axis=-1)
        assert np.array_equal(np.any(out == 0, axis=-1), zero)  # all channels together
        rows, cols = np.nonzero(zero)
        if len(rows):
            h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert h <= 16 and w <= 16 and zero.sum() == h * w  # one solid rectangle
        zero_counts.append(zero.sum())
        # Everything else is the image or the zero padding of the random crop, normalised.
        pad = data.normalize(tf.zeros([3], tf.uint8), info).numpy()
        rest = out[~zero]
        assert np.all(np.isclose(rest, inner, atol=1e-5).all(-1) | np.isclose(rest, pad, atol=1e-5).all(-1))
    assert max(zero_counts) == 256  # a full square appears when the centre is away from the border
    # Evaluation and "none" never cut out or crop.
    for training, augment in ((False, "cifar"), (True, "none")):
        out = data.preprocess(image, info, training=training, augment=augment, cutout=16)
        np.testing.assert_array_equal(out.numpy(), data.normalize(image, info).numpy())


def test_cutout_function_directly():
    ones = tf.ones([32, 32, 3])
    out = data.apply_cutout(ones, 16, tf.constant([0, 0], tf.int64)).numpy()
    zeros = (out == 0).all(-1)
    assert 0 < zeros.sum() <= 256 and np.all(out[~zeros] == 1)


def test_imagenet_style_preprocessing_shapes():
    info = data.DataInfo(name="t", num_classes=10, image_shape=(24, 24, 3), mean=data.IMAGENET_MEAN,
                         std=data.IMAGENET_STD, class_names=None, num_train=1, num_test=1)
    image = tf.cast(tf.random.stateless_uniform([40, 70, 3], [0, 1], maxval=255), tf.uint8)
    train = data.preprocess(image, info, training=True, augment="imagenet", seed=tf.constant([0, 3]))
    assert train.shape == (24, 24, 3) and train.dtype == tf.float32
    # Eval: resize so 24 is 7/8 of the shorter side (40 → 27.43 → 27 rows, 48 columns), centre crop.
    evaluated = data.preprocess(image, info, training=False, augment="imagenet").numpy()
    resized = tf.image.resize(image, [27, 48], antialias=True).numpy()
    np.testing.assert_allclose(evaluated, data.normalize(resized[1:25, 12:36], info).numpy(), atol=1e-4)


# --- TFDS through mock_data ------------------------------------------------------------------------


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_mock(tmp_path, name, num_classes):
    with _mock(tmp_path, 16):
        w, a, info = data.search_datasets(name, batch_size=4, data_dir=str(tmp_path))
        assert info.num_classes == num_classes and info.image_shape == (32, 32, 3)
        assert info.num_train == 16
        assert info.mean == (data.CIFAR10_MEAN if name == "cifar10" else data.CIFAR100_MEAN)
        for ds in (w, a):
            x, y = next(iter(ds))
            assert x.shape == (4, 32, 32, 3) and x.dtype == tf.float32
            assert y.shape == (4,) and y.dtype == tf.int32
            assert np.all((y.numpy() >= 0) & (y.numpy() < num_classes))
        train, test, _ = data.train_test_datasets(name, batch_size=5, data_dir=str(tmp_path))
        assert [b[0].shape[0] for b in train] == [5, 5, 5]
        assert [b[0].shape[0] for b in test] == [5, 5, 5, 1]


def test_imagenet_mock_resizes_random_sizes(tmp_path):
    with _mock(tmp_path, 6):
        info = data.dataset_info("imagenet2012", data_dir=str(tmp_path))
        assert info.image_shape == (224, 224, 3) and info.num_classes == 1000
        assert info.mean == data.IMAGENET_MEAN and len(info.class_names) == 1000
        sizes = {x.shape for x, _ in data.raw_examples("imagenet2012", "train", data_dir=str(tmp_path))}
        assert len(sizes) > 1  # the mock's images really do vary
        w, _, _ = data.search_datasets("imagenet2012", batch_size=3, data_dir=str(tmp_path))
        x, y = next(iter(w))
        assert x.shape == (3, 224, 224, 3) and y.dtype == tf.int32
        assert np.all((y.numpy() >= 0) & (y.numpy() < 1000))
        train, val, info = data.train_test_datasets("imagenet2012", batch_size=2, image_size=64,
                                                    augment="imagenet", data_dir=str(tmp_path))
        assert info.image_shape == (64, 64, 3)
        assert [tuple(b[0].shape) for b in train] == [(2, 64, 64, 3)] * 3
        assert [tuple(b[0].shape) for b in val] == [(2, 64, 64, 3)] * 3


def test_tfds_generic_grayscale_mock(tmp_path):
    with _mock(tmp_path, 10):
        info = data.dataset_info("tfds:mnist", data_dir=str(tmp_path))
        assert info.image_shape == (28, 28, 3) and info.num_classes == 10
        x_train = np.stack([x for x, _ in data.raw_examples("tfds:mnist", data_dir=str(tmp_path))])
        assert x_train.shape == (10, 28, 28, 3)
        np.testing.assert_array_equal(x_train[..., 0], x_train[..., 1])
        np.testing.assert_allclose(info.mean, [x_train.mean() / 255.0] * 3, rtol=1e-9)


# --- TFDS missing: fast failure, no download ------------------------------------------------------


def test_missing_cifar10_fails_fast_and_names_archive(tmp_path):
    # Import TFDS's dataset registry first: a one-time module import (~0.6 s), not a download attempt.
    tfds.builder_cls("cifar10")
    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        data.search_datasets("cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - start < 1.0
    message = str(err.value)
    assert "cifar-10-binary.tar.gz" in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert "--download" in message


def test_missing_imagenet_names_both_archives_and_manual_dir(tmp_path):
    tfds.builder_cls("imagenet2012")
    manual = tmp_path / "archives"
    for download in (False, True):  # ImageNet is never downloaded, even when allowed
        start = time.monotonic()
        with pytest.raises(ValueError) as err:
            data.dataset_info("imagenet2012", data_dir=str(tmp_path), manual_dir=str(manual),
                              download=download)
        assert time.monotonic() - start < 1.0
        message = str(err.value)
        assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
        assert str(manual) in message


def test_wrong_manual_archive_is_reported(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"not the archive" * 10)
    start = time.monotonic()
    with pytest.raises(ValueError, match="wrong size or checksum"):
        data.dataset_info("cifar10", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert time.monotonic() - start < 5.0


def test_unknown_dataset_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'"):
        data.dataset_info("cifar11")
    with pytest.raises(ValueError, match="no data set named 'no_such_set'"):
        data.dataset_info("tfds:no_such_set")
    with pytest.raises(ValueError, match="augment must be one of"):
        data.search_datasets("digits", augment="randaugment")


def test_check_num_classes():
    info = data.dataset_info("digits")
    data.check_num_classes(info, 10)
    data.check_num_classes(info, None)
    with pytest.raises(ValueError, match="num_classes=100 was requested but data set 'digits' has 10"):
        data.check_num_classes(info, 100)


# --- image folders ---------------------------------------------------------------------------------


def _write(path, array, fmt="png"):
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = tf.io.encode_png(array) if fmt == "png" else tf.io.encode_jpeg(array, quality=100)
    path.write_bytes(encoded.numpy())


def _make_folder(root):
    """Three classes; 'bird' holds a grayscale image, 'cat' an 8×10 one (resized to the common 12×12)."""
    colours = {"bird": 30, "cat": 120, "dog": 250}
    for name, value in colours.items():
        for i in range(2):
            _write(root / name / f"{i}.png", np.full((12, 12, 3), value, np.uint8))
    _write(root / "bird" / "2_gray.png", np.full((12, 12, 1), 77, np.uint8))
    _write(root / "cat" / "3_small.png", np.full((8, 10, 3), 120, np.uint8))
    _write(root / "dog" / "4.jpg", np.full((12, 12, 3), 250, np.uint8), fmt="jpeg")
    (root / "dog" / "notes.txt").write_text("not an image: ignored")
    return colours


def _folder_examples(spec, split="train"):
    pairs = list(data.raw_examples(spec, split).as_numpy_iterator())
    return np.stack([x for x, _ in pairs]), [int(y) for _, y in pairs]


def test_flat_folder(tmp_path):
    _make_folder(tmp_path)
    spec = f"folder:{tmp_path}"
    info = data.dataset_info(spec)
    assert info.class_names == ("bird", "cat", "dog")
    assert info.num_classes == 3 and info.image_shape == (12, 12, 3)
    assert (info.num_train, info.num_test) == (9, 0)
    images, labels = _folder_examples(spec)
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Sorted files: bird/0, bird/1, bird/2_gray, cat/0, cat/1, cat/3_small, dog/0, dog/1, dog/4.jpg.
    expected = [30, 30, 77, 120, 120, 120, 250, 250, 250]
    for image, value in zip(images, expected):
        assert np.abs(image.astype(int) - value).max() <= 2  # JPEG may be off by a little
    np.testing.assert_allclose(info.mean, [images.mean() / 255.0] * 3, rtol=1e-9)
    with pytest.raises(ValueError, match="no test split"):
        data.train_test_datasets(spec, batch_size=2)
    train, val, _ = data.train_test_datasets(spec, batch_size=2, validation_fraction=1 / 3)
    assert sum(len(y) for _, y in val) == 3 and sum(len(y) for _, y in train) == 6
    w, a, _ = data.search_datasets(spec, batch_size=2)
    x, y = next(iter(w))
    assert x.shape == (2, 12, 12, 3) and y.dtype == tf.int32


def test_folder_with_train_and_test(tmp_path):
    _make_folder(tmp_path / "train")
    _write(tmp_path / "test" / "bird" / "t.png", np.full((12, 12, 3), 30, np.uint8))
    _write(tmp_path / "test" / "dog" / "t.png", np.full((20, 20, 3), 250, np.uint8))
    spec = f"folder:{tmp_path}"
    info = data.dataset_info(spec, image_size=16)
    assert info.class_names == ("bird", "cat", "dog")
    assert (info.num_train, info.num_test) == (9, 2)
    assert info.image_shape == (16, 16, 3)
    images, labels = _folder_examples(spec, "test")
    assert labels == [0, 2]  # 'dog' keeps its training index although 'cat' has no test folder
    assert images.shape == (2, 12, 12, 3)
    _, test, _ = data.train_test_datasets(spec, batch_size=4, image_size=16)
    x, y = next(iter(test))
    assert x.shape == (2, 16, 16, 3) and list(y.numpy()) == [0, 2]


def test_large_folder_path_reads_lazily(tmp_path, monkeypatch):
    _make_folder(tmp_path)
    eager_images, eager_labels = _folder_examples(f"folder:{tmp_path}")
    monkeypatch.setattr(folders, "FOLDER_EAGER_MAX_FILES", 0)
    (tmp_path / "cat" / "1.png").touch()  # new mtime: not served from the in-process cache
    lazy_images, lazy_labels = _folder_examples(f"folder:{tmp_path}")
    assert lazy_labels == eager_labels
    np.testing.assert_array_equal(lazy_images, eager_images)
    (tmp_path / "cat" / "bad.png").write_bytes(b"garbage, not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*cat/bad\.png"):
        data.dataset_info(f"folder:{tmp_path}")


def test_corrupt_image_is_named(tmp_path):
    _make_folder(tmp_path)
    bad = tmp_path / "cat" / "x.png"
    bad.write_bytes(b"\x00garbage bytes" * 5)
    with pytest.raises(ValueError, match=r"cannot read image file .*cat/x\.png"):
        data.dataset_info(f"folder:{tmp_path}")
    truncated = tmp_path / "cat" / "x.png"
    truncated.write_bytes(tf.io.encode_png(np.zeros((12, 12, 3), np.uint8)).numpy()[:30])
    with pytest.raises(ValueError, match=r"cannot read image file .*cat/x\.png"):
        data.search_datasets(f"folder:{tmp_path}", batch_size=2)


def test_empty_class_folder_is_named(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"class folder .*emu contains no image files"):
        data.dataset_info(f"folder:{tmp_path}")


def test_folder_path_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        data.dataset_info(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        data.dataset_info(f"folder:{tmp_path}")

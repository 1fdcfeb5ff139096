"""The image transforms the pipelines and the serving graph share (hdas_tf.data.images): size parsing, and the
resize and centre crop on single images, static batches and batches of unknown size (the serving signature)."""

import numpy as np
import pytest
import tensorflow as tf

from hdas_tf import data


def test_parse_image_size_forms_and_errors():
    assert data.parse_image_size(None) is None
    assert data.parse_image_size(28) == (28, 28)
    assert data.parse_image_size(np.int64(28)) == (28, 28)
    assert data.parse_image_size(["28"]) == (28, 28)  # a --image_size list flag
    assert data.parse_image_size((36, 30)) == (36, 30)
    assert data.parse_image_size([36, 30, 3]) == (36, 30)  # an image shape, as data_info.json stores it
    for bad in (0, (32, 0), (1, 2, 4), ["x"], [1, 2, 3, 4]):
        with pytest.raises(data.DataError, match="image_size must be a positive int or"):
            data.parse_image_size(bad)


def _unknown_size(fn):
    return tf.function(fn, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])


def test_batch_of_unknown_size_equals_single_images():
    batch = np.random.default_rng(2).integers(0, 256, (2, 41, 45, 3)).astype(np.uint8)
    resize = _unknown_size(lambda x: data.resize_to(x, (32, 32)))
    crop = _unknown_size(lambda x: data.resize_and_center_crop(x, (32, 32)))
    assert resize.get_concrete_function().structured_outputs.shape.as_list() == [None, 32, 32, 3]
    assert crop.get_concrete_function().structured_outputs.shape.as_list() == [None, 32, 32, 3]
    resized, cropped = resize(tf.cast(batch, tf.float32)).numpy(), crop(tf.cast(batch, tf.float32)).numpy()
    for i in range(2):
        np.testing.assert_allclose(resized[i], data.resize_to(batch[i], (32, 32)), atol=1e-4)
        np.testing.assert_allclose(cropped[i], data.resize_and_center_crop(batch[i], (32, 32)), atol=1e-4)
    # At the target size the graph's check passes the images through untouched.
    same = batch[:, :32, :32].astype(np.float32)
    np.testing.assert_array_equal(resize(same).numpy(), same)


def test_resize_and_center_crop_of_a_uniform_image():
    # Any size comes out at the target size, float32 on the 0..255 scale; a uniform image stays uniform.
    out = data.resize_and_center_crop(np.full((375, 500, 3), 100, np.uint8), (224, 224)).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 100.0, atol=1e-3)

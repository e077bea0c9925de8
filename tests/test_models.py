"""Model builders: input/output contract and parameter counts."""

import numpy as np
import pytest

from fer_utils import models
from fer_utils.config import import_keras

keras = import_keras()


@pytest.mark.parametrize("name", sorted(models.BUILDERS))
def test_builder_takes_uint8_faces_and_outputs_probabilities(name):
    model = models.build(name)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    proba = model.predict(faces, verbose=0)
    assert proba.shape == (3, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_fully_connected_parameter_counts_follow_the_layer_sizes():
    # 2304-256-512-7 and 2304-512-256-7: weights + biases of three dense layers
    assert models.build("fc_2304_256_512_7").count_params() == 2304 * 256 + 256 + 256 * 512 + 512 + 512 * 7 + 7
    assert models.build("fc_2304_512_256_7").count_params() == 2304 * 512 + 512 + 512 * 256 + 256 + 256 * 7 + 7


def test_cnn_sizes_match_write_up_004_classes():
    assert 100_000 < models.build("cnn_small").count_params() < 200_000     # write-up: 132,167
    assert 700_000 < models.build("cnn_medium").count_params() < 1_100_000  # write-up: 948,875


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'resnet999'"):
        models.build("resnet999")


def test_multiply_adds_counts_a_known_layer():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)           # 8*8*4 outputs x 27 weights each
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))      # 256 x 5
    assert models.multiply_adds(keras.Model(inputs, outputs)) == 8 * 8 * 4 * 27 + 256 * 5

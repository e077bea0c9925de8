"""The synthetic stand-in: FER2013-like shape and imbalance, and learnable expression cues."""

import numpy as np
import pytest

from fer_utils import config
from fer_utils.config import CLASS_NAMES, TEST, TRAIN, USAGES, VAL
from fer_utils.synthetic import make_synthetic_fer


def test_shape_dtype_and_flags(small_ds):
    assert small_ds.pixels.shape == (len(small_ds), 48, 48) and small_ds.pixels.dtype == np.uint8
    assert small_ds.synthetic and small_ds.notes[0].startswith("SYNTHETIC")
    assert set(small_ds.usage) == set(USAGES)


def test_fer2013_like_imbalance_and_splits():
    ds = make_synthetic_fer(2000, seed=0, label_noise=0.0)
    counts = np.bincount(ds.labels, minlength=7)
    assert CLASS_NAMES[counts.argmax()] == "happy" and CLASS_NAMES[counts.argmin()] == "disgust"
    assert counts.max() / counts.min() > 10
    for usage in USAGES:
        assert (np.bincount(ds.split(usage)[1], minlength=7) > 0).all(), usage
    assert 0.75 < (ds.usage == TRAIN).mean() < 0.85


def test_seeded():
    a, b, c = make_synthetic_fer(100, seed=5), make_synthetic_fer(100, seed=5), make_synthetic_fer(100, seed=6)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_too_small_is_refused():
    with pytest.raises(ValueError, match="at least 70"):
        make_synthetic_fer(20)


def test_a_tiny_keras_model_learns_it_far_above_chance():
    keras = config.import_keras()
    from keras import layers

    config.set_seed(0)
    ds = make_synthetic_fer(2400, seed=0)
    x_train, y_train = ds.split(TRAIN)
    x_val, y_val = ds.split(VAL)
    model = keras.Sequential([
        keras.Input((48, 48, 1)),
        layers.Rescaling(1 / 255),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(7, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train[..., None], y_train, epochs=10, batch_size=32, verbose=0)
    accuracy = model.evaluate(x_val[..., None], y_val, verbose=0)[1]
    majority = np.bincount(y_val).max() / len(y_val)
    assert accuracy > 0.6, f"val accuracy {accuracy:.2f} (chance 0.14, majority {majority:.2f})"
    assert TEST in ds.usage

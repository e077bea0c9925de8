"""Shared by the export, real-time and CLI tests: a tiny CNN trained for a few seconds on the
synthetic stand-in (confident enough that int8 quantization keeps its answers), and its ONNX export."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from fer_utils.config import TRAIN, VAL, import_keras
from fer_utils.synthetic import make_synthetic_fer


@functools.lru_cache(maxsize=1)
def faces():
    """(train faces, train labels, PublicTest faces): uint8 (N, 48, 48), int (N,), uint8 (M, 48, 48)."""
    ds = make_synthetic_fer(700, seed=1)
    (x, y), (xv, _) = ds.split(TRAIN), ds.split(VAL)
    return x, y, xv


def build_tiny(num_classes: int = 7):
    """A two-conv functional Keras 3 model with the project's contract ((N,48,48) 0-255 -> (N, classes))."""
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input((48, 48), name="face")
    x = layers.Rescaling(1 / 255.0)(layers.Reshape((48, 48, 1))(inputs))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(layers.MaxPooling2D()(x))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="probabilities")(x), name="tiny")


@functools.lru_cache(maxsize=1)
def trained_tiny():
    """``build_tiny()`` trained 10 epochs (a few seconds) on the synthetic Training split."""
    keras = import_keras()
    keras.utils.set_random_seed(0)
    x, y, _ = faces()
    model = build_tiny()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32), y, epochs=10, batch_size=32, verbose=0)
    return model


def tiny_onnx(folder: Path) -> Path:
    """The trained tiny model exported to ``<folder>/tiny.onnx``."""
    from fer_utils import export

    return export.export_onnx(trained_tiny(), Path(folder) / "tiny.onnx")


@functools.lru_cache(maxsize=1)
def trained_tiny_ferplus():
    """``build_tiny(8)`` trained 10 epochs (seconds) on the stand-in's FER+ vote distributions: an
    8-class model (FER2013's seven and contempt) as notebook 13 makes one."""
    from fer_utils import ferplus

    keras = import_keras()
    keras.utils.set_random_seed(0)
    x, targets = ferplus.training_targets(make_synthetic_fer(700, seed=1), "distribution")
    model = build_tiny(8)
    model.compile(keras.optimizers.Adam(3e-3), "categorical_crossentropy")
    model.fit(x.astype(np.float32), targets, epochs=10, batch_size=32, verbose=0)
    return model


def tiny_ferplus_onnx(folder: Path, name: str = "tiny_ferplus.onnx") -> Path:
    """The trained 8-class tiny model exported to ``<folder>/<name>``, its class names in its metadata."""
    from fer_utils import export
    from fer_utils.config import FERPLUS_CLASS_NAMES

    return export.export_onnx(trained_tiny_ferplus(), Path(folder) / name, class_names=FERPLUS_CLASS_NAMES)

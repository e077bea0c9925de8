"""The champion: the project's best single model, trainable from scratch on a 2-core CPU.

The recipe (``champion_config``) is what works on FER2013 and costs nothing extra per image:
augmentation (flip, shift, rotation, zoom, noise), label smoothing 0.1, Adam with a cosine
learning-rate decay over a fixed number of epochs, the best PublicTest epoch kept, and horizontal
flip test-time augmentation reported beside the single-pass result. The network is
``models.champion_cnn``. ``measure_throughput`` times training steps of candidate networks and batch
sizes on the machine at hand, which is how the network and batch size were chosen.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

from .config import NUM_CLASSES, import_keras
from .models import build
from .train import TrainConfig, make_augmenter, make_dataset, train_and_evaluate

keras = import_keras()

MODEL_NAME = "champion_cnn"

#: Epochs and a time cap (minutes) per profile. ``cpu``: 36 epochs take about 85 minutes at
#: ~210 faces/s on 2 cores; the cap keeps the run under the 2-hour target on a slower machine
#: (the cosine schedule is then cut short, and the metrics file says "time budget").
CHAMPION_RECIPES: dict[str, dict] = {
    "smoke": dict(epochs=1, budget_min=None),
    "cpu": dict(epochs=36, budget_min=115),
    "full": dict(epochs=120, budget_min=None),
}

#: Published FER2013 accuracies to compare with (``../shared/SEEDS.md``), in percent.
LITERATURE: dict[str, float] = {
    "human accuracy (about)": 65.0,
    "Kaggle 2013 winner (Tang, CNN + SVM loss)": 71.2,
    "VGGNet, Khaireddin & Chen 2021 (~300 GPU epochs)": 73.28,
    "write-up 004: best CNN (balanced by augmentation)": 66.97,
    "write-up 004: CNN without balancing": 65.29,
    "write-up 004: InceptionV3 transfer": 64.98,
    "write-up 003: VGGNet in Keras, tuned": 66.15,
    "write-up 001: CLIP ViT-B/32": 62.44,
}


def champion_config(profile, seed: int = 42, epochs: int | None = None) -> TrainConfig:
    """The champion's ``TrainConfig`` for a profile (``epochs`` overrides the profile's)."""
    recipe = CHAMPION_RECIPES[profile.name]
    return TrainConfig(
        epochs=epochs or recipe["epochs"], batch_size=128, learning_rate=1e-3, optimizer="adam",
        schedule="cosine", patience=None, augment="standard", label_smoothing=0.1,
        time_budget_s=recipe["budget_min"] and 60 * recipe["budget_min"], seed=seed,
    )


def train_champion(run, config: TrainConfig | None = None) -> dict:
    """Train (or load, when its results exist) the champion on the run's Training split, select
    the epoch on PublicTest, and write its metrics file with and without flip TTA."""
    config = config or champion_config(run.profile, run.seed)
    return train_and_evaluate(run, MODEL_NAME, lambda: build(MODEL_NAME), config, report_flip_tta=True)


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one face (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def measure_throughput(builders: dict[str, Callable[[], keras.Model]], batch_sizes: tuple[int, ...] = (128,),
                       steps: int = 20, warmup: int = 3, augment: str | None = "standard",
                       seed: int = 0) -> pd.DataFrame:
    """Training throughput (faces/s) of each builder and batch size, with the champion's input
    pipeline (tf.data, augmentation), on random faces. One row per (model, batch size)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, builder in builders.items():
        for batch_size in batch_sizes:
            n = batch_size * (steps + warmup)
            x = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
            y = rng.integers(0, NUM_CLASSES, n)
            model = builder()
            model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
            data = make_dataset(x, y, batch_size, augmenter=make_augmenter(augment, seed))
            model.fit(data.take(warmup), shuffle=False, verbose=0)  # builds and compiles the step function
            start = time.perf_counter()
            model.fit(data.skip(warmup), shuffle=False, verbose=0)
            seconds = time.perf_counter() - start
            rows.append({"model": name, "batch size": batch_size, "parameters": model.count_params(),
                         "multiply-adds (M)": round(multiply_adds(model) / 1e6, 1),
                         "faces/s": round(steps * batch_size / seconds, 1)})
    return pd.DataFrame(rows)


def with_and_without_tta(record: dict) -> pd.DataFrame:
    """Accuracy, balanced accuracy and macro F1 (percent) per split, single pass vs flip TTA."""
    rows = {}
    for label, key in (("single pass", "metrics"), ("flip TTA", "metrics_flip_tta")):
        for split, m in record.get(key, {}).items():
            rows[(label, split)] = {"accuracy": 100 * m["accuracy"], "balanced accuracy": 100 * m["balanced_accuracy"],
                                    "macro F1": 100 * m["macro_f1"]}
    return pd.DataFrame(rows).T.round(2)


def literature_table(accuracy_pct: dict[str, float]) -> pd.DataFrame:
    """Our PrivateTest accuracies (``{label: percent}``) beside ``LITERATURE``, best first."""
    rows = [{"model": k, "PrivateTest accuracy %": v, "source": "this project"} for k, v in accuracy_pct.items()]
    rows += [{"model": k, "PrivateTest accuracy %": v, "source": "published (SEEDS.md)"} for k, v in LITERATURE.items()]
    return pd.DataFrame(rows).sort_values("PrivateTest accuracy %", ascending=False).reset_index(drop=True)

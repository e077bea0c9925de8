"""Training: one ``fit`` used by every notebook, and ``train_and_evaluate`` that skips runs
whose results already exist.

``fit`` selects the model on PublicTest (early stopping and best-checkpoint on its accuracy),
supports constant, cosine and plateau learning-rate schedules, Keras augmentation layers, label
smoothing, class weights and a time budget, and resumes an interrupted run from its last
completed epoch (``keras.callbacks.BackupAndRestore``). Given a ``tf.distribute`` strategy it
builds and trains the model under it (several GPUs, a TPU) with no other change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .config import NUM_CLASSES, TEST, TRAIN, VAL, import_keras
from .evaluate import evaluate_splits, metrics_record, write_metrics

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after the quiet import above)

#: Set by the pipeline for notebooks run by papermill: one log line per epoch, no progress bar.
BATCH_RUN_ENV = "FER_BATCH_RUN"


@dataclass
class TrainConfig:
    """How to train. Every field lands in the metrics file's ``params``.

    ``schedule``: ``constant``, ``cosine`` (decay to 1% over all epochs) or ``plateau`` (x0.75
    after 5 epochs without PublicTest improvement). ``augment``: None, ``flip`` or ``standard``
    (flip, shift, rotation, zoom, Gaussian noise). ``patience``: early-stopping epochs on
    PublicTest accuracy (None: off). ``time_budget_s``: stop after the epoch that crosses it.
    ``optimizer``: ``adam``, ``adamw`` or ``sgd`` (Nesterov momentum 0.9). ``epoch_size``:
    images drawn per epoch (None: one pass over the training set), so runs on training sets of
    different sizes (e.g. after oversampling) cost the same per epoch.
    """

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    patience: int | None = 10
    augment: str | None = None
    label_smoothing: float = 0.0
    class_weight: dict | None = None
    time_budget_s: float | None = None
    epoch_size: int | None = None
    seed: int = 42

    def params(self) -> dict:
        """The settings as JSON-normal data (what a metrics file stores and compares)."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class FitResult:
    """A trained model (best PublicTest epoch) and how training went."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    stopped: str
    resumed_from_epoch: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self, n_train: int, images_per_epoch: int | None = None) -> dict:
        """The metrics file's ``train`` entry: epochs, seconds, why it stopped, training-set size,
        throughput (``images_per_epoch`` defaults to ``n_train``) and the epoch it resumed from."""
        seen = self.epochs * (images_per_epoch or n_train)
        return {"epochs": self.epochs, "seconds": round(self.seconds, 1), "stopped": self.stopped,
                "n_train": int(n_train), "images_per_second": round(seen / max(self.seconds, 1e-9), 1),
                "resumed_from_epoch": self.resumed_from_epoch}


def make_augmenter(kind: str | None, seed: int = 0) -> keras.Sequential | None:
    """Keras augmentation layers for (B, 48, 48, 1) batches scaled to 0-1, training data only."""
    if kind is None or kind == "none":
        return None
    if kind == "flip":
        return keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed)], name="augment_flip")
    if kind == "standard":
        return keras.Sequential([
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed),
            keras.layers.GaussianNoise(0.02, seed=seed),  # on the 0-1 scale: about 5 grey levels
        ], name="augment_standard")
    raise ValueError(f"augment={kind!r}: choose None, 'flip' or 'standard'")


def make_dataset(x, y, batch_size, shuffle=False, augmenter=None, class_weight=None, seed=0):
    """tf.data pipeline of (faces float32 (B,48,48), one-hot labels[, sample weights])."""
    y_onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    tensors = (x, y_onehot)
    if class_weight:
        weights = np.array([class_weight.get(c, class_weight.get(str(c), 1.0)) for c in range(NUM_CLASSES)])
        tensors += (weights[y].astype(np.float32),)
    data = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)

    def prepare(images, *rest):
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            augmented = augmenter(images[..., None] / 255.0, training=True)[..., 0]
            images = tf.clip_by_value(augmented, 0.0, 1.0) * 255.0
        return (images, *rest)

    return data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=config.epochs * steps_per_epoch, alpha=0.01)
    elif config.schedule not in ("constant", "plateau"):
        raise ValueError(f"schedule={config.schedule!r}: choose 'constant', 'cosine' or 'plateau'")
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay or 1e-4)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer={config.optimizer!r}: choose 'adam', 'adamw' or 'sgd'")


class _EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the logs and stops once the time budget is spent."""

    def __init__(self, budget_s: float | None, already_spent_s: float):
        super().__init__()
        self.budget_s, self.spent = budget_s, already_spent_s
        self.budget_hit = False

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.t0
        self.spent += seconds
        if logs is not None:
            logs["epoch_seconds"] = seconds
        if self.budget_s is not None and self.spent >= self.budget_s:
            self.budget_hit = True
            self.model.stop_training = True


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose best value and patience counter continue from an earlier history."""

    def __init__(self, prior: list[float], **kwargs):
        super().__init__(**kwargs)
        self.prior = prior

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.prior:
            best = int(np.argmax(self.prior))
            self.best, self.wait = self.prior[best], len(self.prior) - 1 - best


def read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch history written by CSVLogger (later rows win if an epoch was logged twice)."""
    if not path.exists() or path.stat().st_size == 0:
        return {}
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return {c: frame[c].tolist() for c in frame.columns if c != "epoch"}


def _builtin_callbacks(timer, best_path, history_csv, workdir, prior, config) -> list:
    """Timer/budget, best-PublicTest checkpoint, history CSV, backup for resuming, early
    stopping and the plateau schedule, in the order they must run."""
    callbacks = [
        timer,  # first, so the loggers below see epoch_seconds
        keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_accuracy", mode="max", save_best_only=True,
            initial_value_threshold=max(prior["val_accuracy"]) if prior.get("val_accuracy") else None,
        ),
        keras.callbacks.CSVLogger(history_csv, append=True),
        keras.callbacks.BackupAndRestore(workdir / "backup"),
    ]
    if config.patience:
        callbacks.append(_ResumableEarlyStopping(prior.get("val_accuracy", []), monitor="val_accuracy",
                                                 mode="max", patience=config.patience))
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.75,
                                                           patience=5, min_lr=1e-6))
    return callbacks


def fit(build: Callable[[], keras.Model], x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray, y_val: np.ndarray, config: TrainConfig, workdir: str | os.PathLike,
        strategy: tf.distribute.Strategy | None = None, verbose: int | str = "auto",
        callbacks: list | None = None, loss=None) -> FitResult:
    """Train ``build()`` on uint8 faces ``(N, 48, 48)`` (or feature rows ``(N, F)``, never
    augmented) and labels ``(N,)``; pick the best PublicTest epoch. ``workdir`` keeps the
    resumable state (backup, best checkpoint, history CSV); calling again with the same
    ``workdir`` after an interruption continues the run. ``loss`` defaults to cross-entropy with
    the config's label smoothing; ``callbacks`` are appended to the built-in ones. The returned
    model is the best checkpoint, uncompiled (ready to predict, save or compile anew).
    """
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError("fit: the training and validation sets must not be empty")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    history_csv, best_path = workdir / "history.csv", workdir / "best.keras"
    prior = read_history(history_csv)
    resumed_from = len(prior.get("loss", []))
    if verbose == "auto":
        verbose = 2 if os.environ.get(BATCH_RUN_ENV) else 1

    def scope():  # a fresh context each time: strategy scopes cannot be re-entered
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    steps = int(np.ceil((config.epoch_size or len(x_train)) / config.batch_size))
    with scope():
        model = build()
        model.compile(
            optimizer=_optimizer(config, steps),
            loss=loss if loss is not None else keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
        )
    augmenter = make_augmenter(config.augment, config.seed) if x_train.ndim == 3 else None  # faces, not features
    train_data = make_dataset(x_train, y_train, config.batch_size, shuffle=True, augmenter=augmenter,
                              class_weight=config.class_weight, seed=config.seed)
    if config.epoch_size:
        train_data = train_data.repeat()
    val_data = make_dataset(x_val, y_val, max(config.batch_size, 256))

    timer = _EpochTimer(config.time_budget_s, already_spent_s=float(np.sum(prior.get("epoch_seconds", []))))
    callbacks = [*_builtin_callbacks(timer, best_path, history_csv, workdir, prior, config), *(callbacks or [])]
    finished = workdir / "finished.txt"  # written when model.fit returns: nothing left to resume
    if not finished.exists():
        model.fit(train_data, validation_data=val_data, epochs=config.epochs, callbacks=callbacks,
                  steps_per_epoch=steps if config.epoch_size else None, verbose=verbose,
                  shuffle=False)  # the tf.data pipeline shuffles; Keras would only warn
        epochs_run = len(read_history(history_csv).get("loss", []))
        if epochs_run >= config.epochs:
            reason = "completed"
        elif timer.budget_hit:
            reason = f"time budget ({config.time_budget_s:.0f} s)"
        else:
            reason = f"early stopping (patience {config.patience})"
        finished.write_text(reason)
    stopped = finished.read_text()
    history = read_history(history_csv)
    epochs = len(history.get("loss", []))
    if best_path.exists():
        with scope():
            model = keras.models.load_model(best_path, compile=False)  # custom losses need no registry
    return FitResult(model, history, epochs, float(np.sum(history.get("epoch_seconds", [0.0]))), stopped,
                     resumed_from)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 512, tta_flip: bool = False) -> np.ndarray:
    """Class probabilities ``(N, 7)`` for uint8 faces ``(N, 48, 48)``; ``tta_flip`` averages in
    the horizontally flipped faces (test-time augmentation)."""
    proba = model.predict(x, batch_size=batch_size, verbose=0)
    if tta_flip:
        proba = (proba + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    return proba


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """``model.save`` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def train_and_evaluate(run, model_name: str, build: Callable[[], keras.Model], config: TrainConfig,
                       sampling: str = "none", train_data=None,
                       extra_params: dict | None = None, strategy=None, tta_flip: bool = False,
                       dataset=None, derived_how: str = "", report_flip_tta: bool = False) -> dict:
    """Train (or load) one model for a notebook run and write its metrics file.

    ``run`` is the notebook's ``NotebookRun``. ``train_data`` replaces the Training split (e.g.
    after balancing): ``(x, y)`` or a function returning it, called only if training is needed
    (so loading saved results skips an expensive resampling). PublicTest selects the epoch; PrivateTest is only reported. When a metrics
    file for the same dataset fingerprint and settings and its model exist, they are loaded
    instead of retraining, unless ``run.force``. Returns the metrics record.

    ``report_flip_tta`` also evaluates with horizontal-flip test-time augmentation and stores those
    metrics under ``metrics_flip_tta`` (``metrics`` stays the single-pass model's, what an export runs).

    ``dataset`` replaces the run's dataset everywhere (training, selection and evaluation) when it
    is derived from it, e.g. MTCNN-aligned faces: the metrics file keeps the source dataset's
    fingerprint and records the derived one, with ``derived_how``, under ``dataset.derived``.
    """
    ds = dataset if dataset is not None else run.dataset
    described = run.dataset.describe()
    if dataset is not None:
        described["derived"] = {"fingerprint": ds.fingerprint, "how": derived_how}
    run_id = f"{run.notebook[:2]}_{model_name}_{sampling}_{run.profile.name}"
    params = json.loads(json.dumps({"model": model_name, "sampling": sampling, **config.params(),
                                    **(extra_params or {}), "tta_flip": tta_flip,
                                    **({"report_flip_tta": True} if report_flip_tta else {})}))
    metrics_path = run.metrics_dir / f"{run_id}.json"
    model_path = run.models_dir / f"{run_id}.keras"
    if metrics_path.exists() and model_path.exists() and not run.force:
        record = json.loads(metrics_path.read_text())
        fingerprints = (record["dataset"].get("fingerprint"), record["dataset"].get("derived", {}).get("fingerprint"))
        if fingerprints == (described["fingerprint"], described.get("derived", {}).get("fingerprint")) \
                and record["params"] == params:
            print(f"{run_id}: results exist ({metrics_path.name}, trained {record['train']['seconds'] / 60:.1f} min); "
                  "loaded, not retrained (force=True retrains)")
            return record
    if callable(train_data):
        train_data = train_data()
    x_train, y_train = train_data if train_data is not None else ds.split(TRAIN)
    x_val, y_val = ds.split(VAL)
    workdir = run.models_dir / f"{run_id}.work"
    if run.force and workdir.exists():
        shutil.rmtree(workdir)
    print(f"{run_id}: training on {len(x_train):,} images, selecting on {len(x_val):,} PublicTest images")
    result = fit(build, x_train, y_train, x_val, y_val, config, workdir, strategy=strategy)
    save_model(result.model, model_path)
    t0 = time.perf_counter()
    metrics = evaluate_splits(lambda x: predict_proba(result.model, x, tta_flip=tta_flip), ds)
    ms_per_face = 1000 * (time.perf_counter() - t0) / int((ds.usage != TRAIN).sum())
    if report_flip_tta:
        extra_metrics = {"metrics_flip_tta": evaluate_splits(
            lambda x: predict_proba(result.model, x, tta_flip=True), ds)}
    else:
        extra_metrics = {}
    record = metrics_record(
        run_id, run.notebook, model_name, sampling, run.profile.name, params, described,
        result.summary(len(x_train), config.epoch_size),
        metrics, weights="none", n_params=int(result.model.count_params()),
        keras_predict_ms_per_face=round(ms_per_face, 3),
        model_file=display_path(model_path),
        history=result.history, **extra_metrics,
    )
    return finish_run(record, run.metrics_dir, workdir)


def finish_run(record: dict, metrics_dir: str | os.PathLike, workdir: str | os.PathLike) -> dict:
    """Write a trained run's metrics file, remove its resumable state and print its one-line
    result (training time, PublicTest and PrivateTest accuracy). Returns ``record``."""
    write_metrics(record, metrics_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    t, m = record["train"], record["metrics"]
    print(f"{record['run']}: {t['epochs']} epochs in {t['seconds'] / 60:.1f} min ({t['stopped']}); "
          f"PublicTest {100 * m[VAL]['accuracy']:.2f}%, PrivateTest {100 * m[TEST]['accuracy']:.2f}%")
    return record


def display_path(path: Path) -> str:
    """``path`` relative to the project when inside it (metrics files stay machine-independent)."""
    from .config import PROJECT_ROOT

    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


#: The baseline recipes of notebooks 03 and 07, per profile: epochs, early-stopping patience and
#: a time cap (minutes). CNN epochs draw ``epoch_size`` images each (the Training split's size),
#: so runs on balanced (larger) training sets cost the same.
BASELINE_RECIPES: dict[str, dict[str, dict]] = {
    "fc": {
        "smoke": dict(epochs=1, patience=None),
        "cpu": dict(epochs=40, patience=6),
        "full": dict(epochs=100, patience=10),
    },
    "cnn": {
        "smoke": dict(epochs=1, patience=None, budget_min=None),
        "cpu": dict(epochs=4, patience=None, budget_min=15),
        "full": dict(epochs=150, patience=15, budget_min=None),
    },
}


def baseline_config(kind: str, profile, epoch_size: int | None = None, seed: int = 42) -> TrainConfig:
    """The shared baseline ``TrainConfig`` for ``kind`` ``"fc"`` or ``"cnn"`` under a profile.

    FC nets: Adam 1e-3, early stopping on PublicTest. CNNs: Adam 1e-3 with a cosine schedule over
    the profile's epochs of ``epoch_size`` images each, capped by a time budget.
    """
    recipe = BASELINE_RECIPES[kind][profile.name]
    if kind == "fc":
        return TrainConfig(epochs=recipe["epochs"], batch_size=profile.batch_size, learning_rate=1e-3,
                           patience=recipe["patience"], seed=seed)
    return TrainConfig(epochs=recipe["epochs"], batch_size=profile.batch_size, learning_rate=1e-3,
                       schedule="cosine", patience=recipe["patience"], epoch_size=epoch_size,
                       time_budget_s=recipe["budget_min"] and 60 * recipe["budget_min"], seed=seed)

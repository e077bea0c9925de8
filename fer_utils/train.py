"""Training: one ``fit`` used by every notebook, on any Keras 3 backend, and ``train_and_evaluate``
that skips runs whose results already exist.

``fit`` feeds numpy faces through a ``keras.utils.PyDataset`` (no tf.data, so it runs under
TensorFlow, JAX or PyTorch), with augmentation and random crops as Keras layers inside the compiled
training step. It selects the model on PublicTest (early stopping and best checkpoint on its
accuracy), supports constant, cosine (over the epochs or the time budget) and plateau
learning-rate schedules, label smoothing, class weights, mixed bfloat16, weight averaging (EMA)
and a time budget, and resumes an interrupted run from its last completed epoch
(``keras.callbacks.BackupAndRestore``). Given a ``tf.distribute`` strategy (TensorFlow only) it
builds and trains the model under it with no other change.

The model ``fit`` returns is the inference model: float32, taking raw 48x48 faces, with the
config's centre crop and test-time augmentation inside its graph, so an exported model needs no
preprocessing code and computes exactly what was evaluated.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import machine
from .config import IMAGE_SIZE, NUM_CLASSES, TEST, TRAIN, VAL, import_keras
from .evaluate import CAPPED, evaluate_splits, ferplus_cell, metrics_record, model_path, with_ferplus
from .machine import cpu_flags  # a name here: resolve_precision reads it (and tests replace it)
from .models import AverageViews, HorizontalFlip, ViewsToBatch, make_augmenter
from .progress import batch_run
from .runs import RunRecord, RunStore
from .timing import Stopwatch

keras = import_keras()
layers = keras.layers

#: Test-time augmentation kinds: the views of each face whose probabilities are averaged.
TTA_KINDS = ("none", "flip", "ten_crop")
#: Learning-rate schedules (``TrainConfig.schedule``).
SCHEDULES = ("constant", "cosine", "cosine_budget", "plateau")
#: Where the cosine schedules end, as a fraction of the initial learning rate.
COSINE_FLOOR = 0.01
#: Ways of mixing training faces and their labels (``TrainConfig.mix``).
MIX_KINDS = (None, "mixup", "cutmix")


@dataclass
class TrainConfig:
    """How to train. Every field lands in the metrics file's ``params``.

    ``schedule``: ``constant``, ``cosine`` (decay to 1% over all epochs), ``cosine_budget`` (the
    same decay, set each epoch, over the epochs or ``time_budget_s``, whichever runs out first:
    a slower machine that hits the cap still ends on a small learning rate) or ``plateau`` (x0.75
    after 5 epochs without PublicTest improvement). ``augment``: None, ``flip``, ``standard``
    (flip, shift, rotation, zoom, Gaussian noise) or ``cached`` (the training faces are augmented
    views made beforehand: none added, the centre crop only). ``patience``: early-stopping epochs on
    PublicTest accuracy (None: off). ``time_budget_s``: stop after the epoch that crosses it.
    ``optimizer``: ``adam``, ``adamw`` or ``sgd`` (Nesterov momentum 0.9); ``weight_decay``:
    decoupled, for ``adamw`` (default 1e-4) and ``sgd`` (default none). ``epoch_size``:
    images drawn per epoch (None: one pass over the training set), so runs on training sets of
    different sizes (e.g. after oversampling) cost the same per epoch.

    Opt-in speed and accuracy settings (left out of ``params`` at their defaults, so runs that do
    not use them keep their identity): ``crop``: train on random ``crop``-pixel crops of the 48 px
    face (a random shift, then a centre crop) and test on the centre crop; ``precision``:
    ``float32``, ``mixed_bfloat16`` or ``auto`` (bfloat16 where the CPU or GPU computes it
    natively, see ``resolve_precision``); ``ema_momentum``: keep an exponential moving average of
    the weights and select, save and evaluate it; ``tta``: test-time augmentation inside the
    returned model, one of ``TTA_KINDS`` (``ten_crop``: four corner crops and the centre crop,
    each also mirrored; needs ``crop``); ``mix``: ``mixup`` or ``cutmix`` (Keras' ``MixUp`` /
    ``CutMix`` layers on each training batch, labels mixed with the faces); ``erasing``: the
    probability of random erasing (Keras' ``RandomErasing``) after the other augmentation.
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
    crop: int | None = None
    precision: str = "float32"
    ema_momentum: float | None = None
    tta: str = "none"
    mix: str | None = None
    erasing: float = 0.0

    #: The opt-in fields and their defaults (omitted from ``params`` while at the default).
    OPT_IN = {"crop": None, "precision": "float32", "ema_momentum": None, "tta": "none", "mix": None, "erasing": 0.0}

    def __post_init__(self):
        if self.crop is not None and not 8 <= self.crop <= IMAGE_SIZE:
            raise ValueError(f"crop={self.crop}: choose a crop size between 8 and {IMAGE_SIZE} pixels, or None")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: choose one of {SCHEDULES}")
        if self.tta not in TTA_KINDS:
            raise ValueError(f"tta={self.tta!r}: choose one of {TTA_KINDS}")
        if self.tta == "ten_crop" and not self.crop:
            raise ValueError("tta='ten_crop' needs crop (the corner crops are crop-sized)")
        if self.mix not in MIX_KINDS:
            raise ValueError(f"mix={self.mix!r}: choose one of {MIX_KINDS}")
        if not 0.0 <= self.erasing <= 1.0:
            raise ValueError(f"erasing={self.erasing}: a probability between 0 and 1")
        if self.precision not in ("float32", "mixed_bfloat16", "auto"):
            raise ValueError(f"precision={self.precision!r}: choose 'float32', 'mixed_bfloat16' or 'auto'")

    def params(self) -> dict:
        """The settings as JSON-normal data (what a metrics file stores and compares)."""
        values = {k: v for k, v in asdict(self).items() if k not in self.OPT_IN or v != self.OPT_IN[k]}
        return json.loads(json.dumps(values))

    def with_batch_size(self, batch_size: int) -> "TrainConfig":
        """The same recipe at another batch size, the learning rate scaled linearly with it."""
        return replace(self, batch_size=batch_size, learning_rate=self.learning_rate * batch_size / self.batch_size)


@dataclass
class FitResult:
    """A trained model (best PublicTest epoch, as the inference model) and how training went."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    stopped: str
    resumed_from_epoch: int = 0
    precision: str = "float32"
    extra: dict = field(default_factory=dict)

    @property
    def capped(self) -> bool:
        """Stopped by the time cap before its epochs: never released, never counted as a seed."""
        return self.stopped.startswith(CAPPED)

    def summary(self, n_train: int, images_per_epoch: int | None = None) -> dict:
        """The metrics file's ``train`` entry: epochs, seconds, why it stopped, training-set size,
        throughput (``images_per_epoch`` defaults to ``n_train``), the epoch it resumed from, and
        where it ran (backend, device, precision)."""
        seen = self.epochs * (images_per_epoch or n_train)
        return {"epochs": self.epochs, "seconds": round(self.seconds, 1), "stopped": self.stopped,
                "capped": self.capped,
                "n_train": int(n_train), "images_per_second": round(seen / max(self.seconds, 1e-9), 1),
                "resumed_from_epoch": self.resumed_from_epoch, **machine_description(), "precision": self.precision}


# ---------------------------------------------------------------------------------------------
# Where training runs: backend, device, precision


def accelerator() -> str | None:
    """The first GPU or TPU the Keras backend sees, in words, or None on a CPU-only machine."""
    return machine.accelerator(keras.backend.backend())


def machine_description() -> dict:
    """Backend, device and CPU model, for a metrics file's ``train`` entry (``machine.describe``)."""
    return machine.describe(keras.backend.backend())


def resolve_precision(setting: str) -> str:
    """``float32`` or ``mixed_bfloat16`` for a config's ``precision``. ``auto`` picks bfloat16 on
    a GPU/TPU and on CPUs with native bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``),
    float32 elsewhere (emulated bfloat16 is slower than float32)."""
    if setting != "auto":
        return setting
    native = accelerator() is not None or bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return "mixed_bfloat16" if native else "float32"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Build layers under the Keras dtype policy ``name``, restoring the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------------------------------
# Input pipeline and the models around a network


class FaceBatches(keras.utils.PyDataset):
    """Shuffled batches of ``(faces float32 (B, 48, 48), targets (B, classes)[, sample weights])``.

    ``y``: int labels ``(N,)`` (one-hot targets over ``num_classes``) or soft targets ``(N, classes)``,
    each row a distribution (e.g. FER+'s vote shares; their width sets the classes).

    Each epoch draws ``epoch_size`` images (default: one pass over ``x``) from a stream of seeded
    permutations, so an epoch of an oversampled set costs the same as one of the original set.
    ``mix`` (``mixup`` or ``cutmix``) blends each batch's faces and labels with Keras' layer of
    that name. ``full_batches`` rounds the epoch up to whole batches (the extra faces come from the
    next permutation), as a multi-replica strategy needs: a last batch of 21 split 11/10 between
    two replicas crashes TensorFlow's gradient aggregation. Backend-neutral: Keras feeds it to
    TensorFlow, JAX or PyTorch alike.
    """

    def __init__(self, x, y, batch_size: int, epoch_size: int | None = None, sample_weight=None,
                 shuffle: bool = True, seed: int = 0, mix: str | None = None, full_batches: bool = False,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.mixer = {None: None, "mixup": lambda: layers.MixUp(seed=seed),
                      "cutmix": lambda: layers.CutMix(seed=seed)}[mix]
        self.mixer = self.mixer and self.mixer()
        self.x, self.y_onehot = x, targets(y, num_classes)
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight, np.float32)
        self.batch_size, self.epoch_size = batch_size, epoch_size or len(x)
        if full_batches:
            self.epoch_size = -(-self.epoch_size // batch_size) * batch_size
        self.shuffle, self.rng = shuffle, np.random.default_rng(seed)
        self._stream = np.empty(0, dtype=np.int64)
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(self.epoch_size / self.batch_size))

    def on_epoch_end(self):
        """Draw the next epoch's indices (continuing the permutation stream)."""
        while len(self._stream) < self.epoch_size:
            order = self.rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
            self._stream = np.concatenate([self._stream, order])
        self.indices, self._stream = self._stream[:self.epoch_size], self._stream[self.epoch_size:]

    def __getitem__(self, step: int):
        rows = np.sort(self.indices[step * self.batch_size:(step + 1) * self.batch_size])
        batch = (self.x[rows].astype(np.float32), self.y_onehot[rows])
        if self.mixer is not None:
            mixed = self.mixer({"images": batch[0][..., None], "labels": batch[1]}, training=True)
            batch = (np.asarray(mixed["images"])[..., 0], np.asarray(mixed["labels"]))
        return batch if self.sample_weight is None else (*batch, self.sample_weight[rows])


def targets(y: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Training targets float32 ``(N, classes)``: one-hot rows for int labels ``(N,)`` in
    ``0..num_classes-1``, or soft targets ``(N, classes)`` as given (each row must sum to 1)."""
    y = np.asarray(y)
    if y.ndim == 1:
        return np.eye(num_classes, dtype=np.float32)[y]
    if y.ndim != 2 or not np.allclose(y.sum(axis=1), 1, atol=1e-4) or (y < 0).any():
        raise ValueError(f"targets must be labels (N,) or distributions (N, classes) whose rows sum to 1; "
                         f"got shape {y.shape}")
    return y.astype(np.float32)


def _views(x, crop: int | None, tta: str) -> list:
    """The test-time views of ``(B, 48, 48, 1)`` faces: the centre crop (or the whole face), plus
    its mirror for ``flip``, plus the four corner crops and all mirrors for ``ten_crop``."""
    margin = IMAGE_SIZE - crop if crop else 0
    lo, hi = margin // 2, margin - margin // 2
    views = [layers.Cropping2D(((lo, hi), (lo, hi)), name="centre_crop")(x) if margin else x]
    if tta == "ten_crop":
        corners = {"top_left": ((0, margin), (0, margin)), "top_right": ((0, margin), (margin, 0)),
                   "bottom_left": ((margin, 0), (0, margin)), "bottom_right": ((margin, 0), (margin, 0))}
        views += [layers.Cropping2D(box, name=f"crop_{name}")(x) for name, box in corners.items()]
    if tta in ("flip", "ten_crop"):
        views += [HorizontalFlip(name=f"mirror_{i}")(v) for i, v in enumerate(list(views))]
    return views


def _face_batch_input():
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE), name="face")
    return inputs, layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1))(inputs)


def training_model(net: keras.Model, augment: str | None, crop: int | None, seed: int = 0,
                   erasing: float = 0.0) -> keras.Model:
    """``net`` behind the training-time augmentation, random erasing and crop (all Keras layers, so
    they run inside the compiled step on any backend); ``net`` itself when there is none. With
    ``augment="cached"`` the faces are augmented views made beforehand (``distill``): the centre
    crop alone, the crop the views' soft targets were computed on."""
    augmenter = make_augmenter(augment, crop, seed, erasing)
    if augmenter is None and not crop:
        return net
    inputs, x = _face_batch_input()
    if augmenter is not None:
        x = augmenter(x)
    size = crop or IMAGE_SIZE
    x = _views(x, crop, "none")[0]
    outputs = net(layers.Reshape((size, size))(x))
    return keras.Model(inputs, outputs, name=f"{net.name}_training")


def inference_model(net: keras.Model, crop: int | None = None, tta: str = "none") -> keras.Model:
    """Raw ``(B, 48, 48)`` faces -> probabilities: ``net`` on the centre crop, averaged over the
    ``tta`` views. ``net`` itself when there is no crop and no TTA."""
    if not crop and tta == "none":
        return net
    inputs, x = _face_batch_input()
    size = crop or IMAGE_SIZE
    views = _views(x, crop, tta)
    if len(views) == 1:
        outputs = net(layers.Reshape((size, size))(views[0]))
    else:  # one pass of the network over all views, then their mean
        batch = layers.Reshape((size, size))(ViewsToBatch(name="views_to_batch")(views))
        outputs = AverageViews(len(views), name="tta_average")(net(batch))
    return keras.Model(inputs, outputs, name=f"{net.name}_{tta}" if tta != "none" else f"{net.name}_crop{crop}")


def cosine_learning_rate(initial: float, progress: float) -> float:
    """The cosine schedule's learning rate after ``progress`` (0..1, clipped) of the run."""
    progress = min(max(progress, 0.0), 1.0)
    return float(initial * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + np.cos(np.pi * progress))))


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=config.epochs * steps_per_epoch,
                                                    alpha=COSINE_FLOOR)
    ema = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr, **ema)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay or 1e-4, **ema)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None, **ema)
    raise ValueError(f"optimizer={config.optimizer!r}: choose 'adam', 'adamw' or 'sgd'")


def build_network(build: Callable[..., keras.Model], config: TrainConfig, precision: str) -> keras.Model:
    """``build()`` under ``precision`` (``build(image_size=crop)`` when the config crops)."""
    with dtype_policy(precision):
        return build(image_size=config.crop) if config.crop else build()


def compiled_training_model(build: Callable[..., keras.Model], config: TrainConfig, steps_per_epoch: int,
                            precision: str, faces: bool = True, loss=None) -> tuple[keras.Model, keras.Model]:
    """``(training model, network)``: the network built under ``precision``, wrapped in the
    augmentation and crop (faces only, not feature rows) and compiled with the config's optimizer,
    schedule and loss (default: cross-entropy with the config's label smoothing)."""
    net = build_network(build, config, precision)
    model = training_model(net, config.augment if faces else None, config.crop if faces else None, config.seed,
                           config.erasing if faces else 0.0)
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=loss if loss is not None else keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    return model, net


def sample_weights(y: np.ndarray, class_weight: dict | None) -> np.ndarray | None:
    """Per-image weights from a ``{class: weight}`` dict (keys int or str), or None."""
    if not class_weight:
        return None
    if np.ndim(y) != 1:
        raise ValueError("class_weight needs int labels (N,), not soft targets")
    weights = np.array([class_weight.get(c, class_weight.get(str(c), 1.0)) for c in range(NUM_CLASSES)])
    return weights[y].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Callbacks and the fit loop


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


def _budget_cosine(config: TrainConfig, timer: _EpochTimer) -> keras.callbacks.LearningRateScheduler:
    """``cosine_budget``: each epoch's learning rate from the larger of the epochs done and the
    time budget spent (the timer counts the epochs of an interrupted run too)."""
    def rate(epoch, _lr):
        spent = timer.spent / config.time_budget_s if config.time_budget_s else 0.0
        return cosine_learning_rate(config.learning_rate, max(epoch / config.epochs, spent))
    return keras.callbacks.LearningRateScheduler(rate)


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
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch").dropna(axis=1, how="all")
    return {c: frame[c].tolist() for c in frame.columns if c != "epoch"}  # no val_* columns without validation


def _builtin_callbacks(timer, best_path, history_csv, workdir, prior, config, validated: bool = True) -> list:
    """Timer/budget, backup for resuming, EMA swap, best-PublicTest checkpoint, history CSV, early
    stopping and the plateau schedule, in the order they must run (the backup keeps the raw
    weights; with EMA, validation and the checkpoint see the averaged ones). Without validation,
    the checkpoint keeps every epoch's weights (the last one wins)."""
    callbacks = [
        timer,  # first, so the loggers below see epoch_seconds
        keras.callbacks.BackupAndRestore(workdir / "backup"),
        *([_budget_cosine(config, timer)] if config.schedule == "cosine_budget" else []),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum else []),
        keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_accuracy", mode="max", save_best_only=validated, save_weights_only=True,
            initial_value_threshold=max(prior["val_accuracy"]) if validated and prior.get("val_accuracy") else None,
        ),
        keras.callbacks.CSVLogger(history_csv, append=True),
    ]
    if not validated:
        return callbacks
    if config.patience:
        callbacks.append(_ResumableEarlyStopping(prior.get("val_accuracy", []), monitor="val_accuracy",
                                                 mode="max", patience=config.patience))
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.75,
                                                           patience=5, min_lr=1e-6))
    return callbacks


def fit(build: Callable[..., keras.Model], x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray | None, y_val: np.ndarray | None, config: TrainConfig, workdir: str | os.PathLike,
        strategy=None, verbose: int | str = "auto", callbacks: list | None = None, loss=None) -> FitResult:
    """Train ``build()`` on uint8 faces ``(N, 48, 48)`` (or feature rows ``(N, F)``, never
    augmented) and labels ``(N,)`` or soft targets ``(N, classes)`` (``targets``; their width is
    the number of classes, which ``build`` must match); pick the best PublicTest epoch (``y_val``:
    int labels). ``build`` must accept
    ``image_size=`` when the config crops. ``workdir`` keeps the resumable state (backup, best
    weights, history CSV); calling again with the same ``workdir`` after an interruption continues
    the run. Without a validation set (``x_val=None``: a fixed schedule, e.g. on a host that must
    not see PublicTest) the last epoch is kept and early stopping and the plateau schedule are
    refused. ``loss`` defaults to cross-entropy with the config's label smoothing; ``callbacks``
    are appended to the built-in ones; ``strategy`` is a ``tf.distribute`` strategy (TensorFlow).
    The returned model is the best epoch's inference model (float32, centre crop and TTA inside),
    uncompiled (ready to predict, save or compile anew).
    """
    validated = x_val is not None
    if len(x_train) == 0 or (validated and len(x_val) == 0):
        raise ValueError("fit: the training and validation sets must not be empty")
    if not validated and (config.patience or config.schedule == "plateau"):
        raise ValueError("fit without a validation set needs a fixed schedule: patience=None, schedule not 'plateau'")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    history_csv, best_path = workdir / "history.csv", workdir / "best.weights.h5"
    prior = read_history(history_csv)
    resumed_from = len(prior.get("loss", []))
    if verbose == "auto":
        verbose = 2 if batch_run() else 1
    precision = resolve_precision(config.precision)
    faces = x_train.ndim == 3  # faces are augmented and cropped; feature rows are not
    keras.utils.set_random_seed(config.seed)  # the same seed on the same machine: the same weights

    def scope():  # a fresh context each time: strategy scopes cannot be re-entered
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if config.batch_size % replicas:
        raise ValueError(f"fit: batch_size {config.batch_size} must be a multiple of the strategy's "
                         f"{replicas} replicas")
    num_classes = y_train.shape[1] if np.ndim(y_train) == 2 else NUM_CLASSES
    train_data = FaceBatches(x_train, y_train, config.batch_size, config.epoch_size,
                             sample_weights(y_train, config.class_weight), seed=config.seed,
                             mix=config.mix if faces else None, full_batches=replicas > 1, num_classes=num_classes)
    with scope():
        model, _ = compiled_training_model(build, config, len(train_data), precision, faces, loss)
    val_data = (x_val.astype(np.float32), targets(y_val, num_classes)) if validated else None

    timer = _EpochTimer(config.time_budget_s, already_spent_s=float(np.sum(prior.get("epoch_seconds", []))))
    callbacks = [*_builtin_callbacks(timer, best_path, history_csv, workdir, prior, config, validated),
                 *(callbacks or [])]
    finished = workdir / "finished.txt"  # written when model.fit returns: nothing left to resume
    if not finished.exists():
        model.fit(train_data, validation_data=val_data, validation_batch_size=max(config.batch_size, 256),
                  epochs=config.epochs, callbacks=callbacks, verbose=verbose)
        epochs_run = len(read_history(history_csv).get("loss", []))
        if epochs_run >= config.epochs:
            reason = "completed"
        elif timer.budget_hit:
            reason = f"{CAPPED} ({config.time_budget_s:.0f} s)"
        else:
            reason = f"early stopping (patience {config.patience})"
        finished.write_text(reason)
    stopped = finished.read_text()
    history = read_history(history_csv)
    with scope():  # the best epoch's weights in a float32 copy (bfloat16 is for training speed only)
        best, net = compiled_training_model(build, config, len(train_data), "float32", faces, loss)
        if best_path.exists():
            with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                best.load_weights(best_path)
        else:  # no epoch was checkpointed: the last weights
            best.set_weights(model.get_weights())
    final = inference_model(net, config.crop if faces else None, config.tta if faces else "none")
    return FitResult(final, history, len(history.get("loss", [])), float(np.sum(history.get("epoch_seconds", [0.0]))),
                     stopped, resumed_from, precision)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 512, tta_flip: bool = False) -> np.ndarray:
    """Class probabilities ``(N, classes)`` for uint8 faces ``(N, 48, 48)``; ``tta_flip`` averages in
    the horizontally flipped faces (test-time augmentation)."""
    proba = model.predict(x, batch_size=batch_size, verbose=0)
    if tta_flip:
        proba = (proba + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    return proba


def rescore_ferplus(store: RunStore, dataset) -> pd.DataFrame:
    """Add FER+ scores to every metrics record of ``store`` that can still be scored on ``dataset``
    (which must carry FER+'s votes): with its Keras model where the file exists, else from the
    per-face predictions it keeps (:func:`evaluate.with_ferplus`). Only the ``ferplus`` entries
    change; the ledger keeps each record's date and archives nothing (``runs.RESCORED``). One row per
    record: how it was scored (``model``, ``per-face predictions``, or why not) and its FER+ PrivateTest accuracy."""
    if dataset.ferplus is None:
        raise ValueError(f"{dataset.source}: no FER+ votes to score against (fer2013new.csv beside the CSV)")
    rows = []
    for record in store.records():
        keras_file = model_path(record) if record.get("model_file") else None
        predict = None
        if keras_file is not None and keras_file.is_file() and "derived" not in record["dataset"]:
            model = keras.models.load_model(keras_file, compile=False)
            predict = lambda faces, model=model: predict_proba(model, faces)  # noqa: E731
        try:
            scored = with_ferplus(record, dataset, predict)
            how = "model" if predict is not None else "per-face predictions"
        except ValueError as err:
            scored, how = with_ferplus(record, dataset), f"per-face predictions ({err})"
        if scored is record:
            rows.append({"run": record.run_id, "scored from": "not scored: " + ferplus_cell(record)})
            continue
        store.save(scored)
        ferplus = scored["metrics"][TEST]["ferplus"]
        rows.append({"run": record.run_id, "scored from": how, "FER+ PrivateTest %": round(100 * ferplus["accuracy"], 2),
                     "FER+ balanced %": round(100 * ferplus["balanced_accuracy"], 2),
                     "vote probability %": round(100 * ferplus["vote_probability"], 2) if "vote_probability" in ferplus else None})
    return pd.DataFrame(rows)


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """``model.save`` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def train_and_evaluate(store: RunStore, dataset, model_name: str, build: Callable[[], keras.Model],
                       config: TrainConfig, sampling: str = "none", train_data=None,
                       extra_params: dict | None = None, strategy=None, tta_flip: bool = False,
                       derived_from=None, derived_how: str = "", report_flip_tta: bool = False,
                       needs_model: bool = True, seeded_id: bool = True) -> RunRecord:
    """Train (or load) one model on ``dataset`` and file it in ``store`` as
    ``store.run_id(model_name, sampling)``: its Keras model and its metrics file.

    ``train_data`` replaces the Training split (e.g. after balancing): ``(x, y)`` or a function
    returning it, called only if training is needed (so loading saved results skips an expensive
    resampling). PublicTest selects the epoch; PrivateTest is only reported. When the store holds
    the same run on the same data with the same settings it is loaded instead
    (:meth:`RunStore.existing`); ``needs_model=False`` reuses the metrics file even without its
    model (runs that are only tabulated, such as ablations, so that they add up across machines).

    ``report_flip_tta`` also evaluates with horizontal-flip test-time augmentation and stores those
    metrics under ``metrics_flip_tta`` (``metrics`` stays the single-pass model's, what an export runs).

    ``derived_from`` is the dataset ``dataset`` was derived from (e.g. MTCNN-aligned faces of it):
    the metrics file keeps its fingerprint and records the derived one, with ``derived_how``,
    under ``dataset.derived``.

    A seed other than 42 is part of the run's name (``RunStore.run_id``), so the seeds of one recipe
    are separate runs; ``seeded_id=False`` leaves it out (a run whose model name already says it).
    """
    ds = dataset
    described = (derived_from or dataset).describe()
    if derived_from is not None:
        described["derived"] = {"fingerprint": ds.fingerprint, "how": derived_how}
    if ds.label_source:  # labels other than the images' own (FER+): said in the record, never mixed up
        described["labels"] = dict(ds.label_source)
    run_id = store.run_id(model_name, sampling, seed=config.seed if seeded_id else None)
    params = json.loads(json.dumps({"model": model_name, "sampling": sampling, **config.params(),
                                    **(extra_params or {}), "tta_flip": tta_flip,
                                    **({"report_flip_tta": True} if report_flip_tta else {})}))

    def train_run(workdir: Path) -> dict:
        data = train_data() if callable(train_data) else train_data
        x_train, y_train = data if data is not None else ds.split(TRAIN)
        x_val, y_val = ds.split(VAL)
        model_path = store.model_path(run_id)
        print(f"{run_id}: training on {len(x_train):,} images, selecting on {len(x_val):,} PublicTest images")
        result = fit(build, x_train, y_train, x_val, y_val, config, workdir, strategy=strategy)
        save_model(result.model, model_path)
        with Stopwatch() as watch:
            metrics = evaluate_splits(lambda x: predict_proba(result.model, x, tta_flip=tta_flip), ds)
        ms_per_face = watch.ms_per(int((ds.usage != TRAIN).sum()))
        extra_metrics = {"metrics_flip_tta": evaluate_splits(lambda x: predict_proba(result.model, x, tta_flip=True), ds)
                         } if report_flip_tta else {}
        return metrics_record(
            run_id, store.notebook, model_name, sampling, store.profile, params, described,
            result.summary(len(x_train), config.epoch_size),
            metrics, classes=ds.class_names, weights="none", n_params=int(result.model.count_params()),
            keras_predict_ms_per_face=round(ms_per_face, 3),
            model_file=display_path(model_path),
            history=result.history, **extra_metrics,
        )

    return store.train_or_load(run_id, params, described, train_run, needs_model)


def display_path(path: Path) -> str:
    """``path`` relative to the project when inside it (metrics files stay machine-independent)."""
    from .config import PROJECT_ROOT

    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


#: The baseline recipes of notebooks 03 and 07, per profile: ``TrainConfig`` settings on top of
#: the shared ones (Adam; CNNs: cosine decay over ``epochs``, ``epoch_size`` images an epoch, so
#: runs on balanced, larger training sets cost the same per epoch). The ``cpu`` profile trains
#: every model until PublicTest stops improving (issue 15): the FC nets with early stopping
#: (patience 6), the CNNs with a cosine schedule long enough to flatten (40 epochs) plus early
#: stopping (patience 10) and a 60-minute cap that only a slower machine should reach. The CNNs
#: use the fast path's settings that treat every model alike: random 40-pixel crops of the 48 px
#: face (centre crop at test time), bfloat16 where the CPU computes it natively, batch 256 with
#: the learning rate scaled from 1e-3 at batch 128.
BASELINE_RECIPES: dict[str, dict[str, dict]] = {
    "fc": {
        "smoke": dict(epochs=1, patience=None),
        "cpu": dict(epochs=40, patience=6),
        "full": dict(epochs=100, patience=10),
    },
    "cnn": {
        "smoke": dict(epochs=1, patience=None),
        "cpu": dict(epochs=40, patience=10, time_budget_s=60 * 60, crop=40, precision="auto", batch_size=256),
        "full": dict(epochs=150, patience=15),
    },
}


def baseline_config(kind: str, profile, epoch_size: int | None = None, seed: int = 42) -> TrainConfig:
    """The shared baseline ``TrainConfig`` for ``kind`` ``"fc"`` or ``"cnn"`` under a profile
    (``BASELINE_RECIPES``): Adam at 1e-3 for the profile's batch size (scaled linearly where the
    recipe sets another), early stopping on PublicTest; CNNs also decay it along a cosine."""
    recipe = dict(BASELINE_RECIPES[kind][profile.name])
    batch_size = recipe.pop("batch_size", profile.batch_size)
    base = TrainConfig(batch_size=profile.batch_size, learning_rate=1e-3, seed=seed,
                       **(dict(schedule="cosine", epoch_size=epoch_size) if kind == "cnn" else {}), **recipe)
    return base.with_batch_size(batch_size) if batch_size != base.batch_size else base

"""Write-up 003: the VGGNet recipes, softmax-average ensembles, and the leakage audit.

* **Recipes.** :func:`vgg_paper_config` (Khaireddin & Chen 2021: SGD with Nesterov momentum 0.9,
  learning rate 0.01 reduced x0.75 on a PublicTest plateau, 300 epochs) and
  :func:`vgg_tuned_config` (write-up 003: Adam 1e-4, early stopping with patience 10). The network
  (``fer_utils.models.vgg``) keeps the paper's shape at every profile; the ``cpu`` profile narrows
  it (``VGG_SIZES``) and shortens training so one run takes about 8-10 minutes on 2 cores. Every
  metrics file records the width, dense size, recipe and what differs from the paper.
* **Ensembles.** :func:`average_probabilities` (softmax averaging, optional weights) over
  probability arrays or predict functions; :func:`write_ensemble_record` writes the ensemble's
  metrics file (model ``ensemble``, training time = sum of the members').
* **Leakage.** Write-up 003 resampled ALL of FER2013 and then split it 80/10/10
  (:func:`leaky_protocol`), which puts copies (ROS) and interpolations (SMOTE) of test images into
  training. :func:`resample_with_parents` records where every resampled row comes from (the SMOTE
  pair it was interpolated between included), :func:`overlap_audit` counts the test images with
  an exact copy or a shared source image in training, and :func:`train_leaky` trains a model on
  the leaky protocol. Leaky records carry ``"leaky": true`` and no ``model_file`` (their Keras
  file is ``leaky_model_file``), so nothing that picks "the best model" by PublicTest accuracy
  (``evaluate.trained_runs``) can ever pick a model that has seen PublicTest and PrivateTest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from sklearn.neighbors import NearestNeighbors

from . import balance, models
from .config import CLASS_NAMES, NUM_CLASSES, PROJECT_ROOT, TEST, TRAIN, VAL, Profile, get_profile, import_keras
from .data import FERDataset, image_digests, stratified_split
from .evaluate import (
    CLEAN_TEST,
    evaluate_predictions,
    metrics_record,
    model_path,
    split_metrics,
    trained_runs,
    write_metrics,
)
from .train import TrainConfig, fit, predict_proba, save_model, train_and_evaluate

keras = import_keras()

# ---------------------------------------------------------------------------------------------
# The network's size and the two recipes, per profile

#: Network size per profile: ``width`` scales the 64/128/256/512 filters, ``fc_units`` the two
#: dense layers. ``full`` is the paper's network (about 40M parameters, a GPU's work); ``cpu``
#: keeps its 4 x 2 conv blocks at a quarter of the filters and 512-unit dense layers (1.15M
#: parameters, a little faster per image than notebook 03's small CNN on a 2-core CPU).
VGG_SIZES: dict[str, dict] = {
    "smoke": dict(width=0.125, fc_units=32, dropout=0.2, block_order="conv_relu_bn"),
    "cpu": dict(width=0.25, fc_units=512, dropout=0.2, block_order="conv_relu_bn"),
    "full": dict(width=1.0, fc_units=4096, dropout=0.2, block_order="conv_relu_bn"),
}

#: Training length per recipe and profile: epochs (each of ``epoch_size`` images, the Training
#: split's size, whatever the size of a resampled training set) and a time cap in minutes. The
#: ``cpu`` profile's 5 epochs at width 0.25 take about 7-10 minutes on 2 cores; ``smoke`` draws at
#: most ``max_epoch_size`` images per epoch.
VGG_RECIPES: dict[str, dict[str, dict]] = {
    "paper": {
        "smoke": dict(epochs=1, budget_min=None, max_epoch_size=320),
        "cpu": dict(epochs=5, budget_min=12),
        "full": dict(epochs=300, budget_min=None),
    },
    "tuned": {
        "smoke": dict(epochs=1, budget_min=None, max_epoch_size=320),
        "cpu": dict(epochs=5, budget_min=12),
        "full": dict(epochs=180, budget_min=None),  # write-up 003's Keras runs: 180 epochs at most
    },
}

#: Where the project's paper recipe differs from Khaireddin & Chen's released code, in every
#: paper-recipe metrics file.
PAPER_DEVIATIONS: tuple[str, ...] = (
    "no weight decay (the paper's SGD uses 1e-4; fer_utils.train's SGD has none)",
    "48x48 input, no 40x40 random crops and no ten-crop test-time averaging",
    ("augmentation 'standard' (flip, shift 10%, rotation 10 deg, zoom 10%, noise) instead of the "
     "paper's (scale and shift 20%, rotation 10 deg, flip, random erasing)"),
)


def _profile(profile: Profile | str) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


def vgg_size(profile: Profile | str) -> dict:
    """The network size for a profile (``width``, ``fc_units``, ``dropout``, ``block_order``)."""
    return dict(VGG_SIZES[_profile(profile).name])


def vgg_model_name(recipe: str, profile: Profile | str) -> str:
    """Model name of a recipe at a profile's size, e.g. ``vgg_paper`` or ``vgg_w0.25_fc512_tuned``."""
    size = vgg_size(profile)
    return f"{models.vgg_name(size['width'], size['fc_units'])}_{recipe}"


def build_vgg(profile: Profile | str) -> Callable[[], keras.Model]:
    """A builder (no arguments) of the VGG at a profile's size."""
    size = vgg_size(profile)
    return lambda: models.vgg(**size)


def vgg_params(recipe: str, profile: Profile | str) -> dict:
    """What a VGG metrics file records beyond the TrainConfig: architecture, size and recipe."""
    size = vgg_size(profile)
    params = {"architecture": "VGGNet (Khaireddin & Chen 2021), fer_utils.models.vgg", **size,
              "paper_size": size["width"] == 1.0 and size["fc_units"] == 4096, "recipe": recipe}
    if recipe == "paper":
        params["differs_from_paper"] = list(PAPER_DEVIATIONS)
    return params


def _length(recipe: str, profile: Profile, epoch_size: int | None) -> tuple[int, float | None, int | None]:
    """Epochs, time budget (s) and images per epoch of a recipe at a profile (``smoke`` caps the
    images per epoch so its runs only check that everything works)."""
    length = VGG_RECIPES[recipe][profile.name]
    cap = length.get("max_epoch_size")
    if cap is not None:
        epoch_size = min(epoch_size or cap, cap)
    return length["epochs"], length["budget_min"] and 60.0 * length["budget_min"], epoch_size


def vgg_paper_config(profile: Profile | str, epoch_size: int | None = None, seed: int = 42) -> TrainConfig:
    """Khaireddin & Chen's recipe: SGD, Nesterov momentum 0.9, learning rate 0.01 reduced x0.75
    after 5 epochs without PublicTest improvement, augmentation, no early stopping (the best
    PublicTest epoch is kept); 300 epochs of batch 64 in ``full``, a few epochs in ``cpu``."""
    profile = _profile(profile)
    epochs, budget, epoch_size = _length("paper", profile, epoch_size)
    return TrainConfig(epochs=epochs, batch_size=64 if profile.name == "full" else profile.batch_size,
                       learning_rate=0.01, optimizer="sgd", schedule="plateau", patience=None,
                       augment="standard", epoch_size=epoch_size, time_budget_s=budget, seed=seed)


def vgg_tuned_config(profile: Profile | str, epoch_size: int | None = None, seed: int = 42) -> TrainConfig:
    """Write-up 003's tuned recipe: Adam with learning rate 1e-4, early stopping on PublicTest with
    patience 10, no augmentation (the write-up reports augmentation separately, as harmful)."""
    profile = _profile(profile)
    epochs, budget, epoch_size = _length("tuned", profile, epoch_size)
    return TrainConfig(epochs=epochs, batch_size=64 if profile.name == "full" else profile.batch_size,
                       learning_rate=1e-4, optimizer="adam", schedule="constant", patience=10,
                       augment=None, epoch_size=epoch_size, time_budget_s=budget, seed=seed)


def vgg_config(recipe: str, profile: Profile | str, epoch_size: int | None = None, seed: int = 42) -> TrainConfig:
    """:func:`vgg_paper_config` or :func:`vgg_tuned_config` by name (``paper`` / ``tuned``)."""
    if recipe not in VGG_RECIPES:
        raise ValueError(f"recipe={recipe!r}: choose one of {sorted(VGG_RECIPES)}")
    return (vgg_paper_config if recipe == "paper" else vgg_tuned_config)(profile, epoch_size, seed)


def resampled_training(ds: FERDataset, sampling: str, seed: int) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A function returning the Training split resampled with ``sampling`` (a
    ``fer_utils.balance`` method), for ``train_and_evaluate(train_data=...)`` (called only when a
    model must be trained)."""
    def make():
        x, y = ds.split(TRAIN)
        result = balance.balance(x, y, sampling, seed=seed)
        return result.x, result.y
    return make


def train_vgg(run, recipe: str = "tuned", sampling: str = "none", notebook: str | None = None) -> dict:
    """Train (or load) the profile's VGG with ``recipe`` on the Training split, resampled with
    ``sampling`` (``none``, ``ros``, ``smote``, ``smote_tomek``, ``smote_enn``, ...); each epoch
    draws as many images as Training holds. ``notebook`` files the run under another notebook
    (e.g. notebook 11 reuses notebook 06's runs: loaded if they exist, else trained under 06's
    name, never forced). Returns the metrics record."""
    if notebook is not None and notebook != run.notebook:
        run = replace(run, notebook=notebook, force=False)
    n_train = int((run.dataset.usage == TRAIN).sum())
    config = vgg_config(recipe, run.profile, epoch_size=n_train, seed=run.seed)
    train_data = None if sampling == "none" else resampled_training(run.dataset, sampling, run.seed)
    with quiet_retracing():
        return train_and_evaluate(run, vgg_model_name(recipe, run.profile), build_vgg(run.profile), config,
                                  sampling=sampling, train_data=train_data, extra_params=vgg_params(recipe, run.profile))


def layer_table(model: keras.Model) -> pd.DataFrame:
    """One row per layer: name (index), kind, output shape (without the batch axis), parameters."""
    rows = []
    for layer in model.layers:
        shape = tuple(layer.output.shape[1:]) if hasattr(layer, "output") else ()
        rows.append({"layer": layer.name, "kind": type(layer).__name__, "output": "x".join(map(str, shape)),
                     "parameters": int(layer.count_params())})
    return pd.DataFrame(rows).set_index("layer")


# ---------------------------------------------------------------------------------------------
# Results tables shared by notebooks 04, 06 and 11


def topk_table(records: dict[str, dict], splits: Sequence[str] = (VAL, TEST, CLEAN_TEST)) -> pd.DataFrame:
    """Top-1/2/3 accuracy, balanced accuracy and macro F1 (percent) per run (rows, labelled by the
    keys of ``records``) and split (column groups), plus epochs and training minutes."""
    rows = {}
    for label, record in records.items():
        row = {}
        for split in splits:
            m = record["metrics"].get(split)
            if m is None:
                continue
            for key, name in (("accuracy", "top-1"), ("top2", "top-2"), ("top3", "top-3"),
                              ("balanced_accuracy", "balanced"), ("macro_f1", "macro F1")):
                row[(split, name)] = round(100 * m[key], 2)
        row[("training", "epochs")] = record["train"].get("epochs")
        row[("training", "minutes")] = round(record["train"].get("seconds", 0) / 60, 1)
        rows[label] = row
    table = pd.DataFrame(rows).T
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    table[("training", "epochs")] = table[("training", "epochs")].astype("Int64")
    return table


def per_class_table(records: dict[str, dict], split: str = TEST, metric: str = "f1") -> pd.DataFrame:
    """``metric`` (precision, recall or f1; 0-1) per class (columns) and run (rows) on ``split``."""
    return pd.DataFrame({label: {c: r["metrics"][split]["per_class"][c][metric] for c in CLASS_NAMES}
                         for label, r in records.items()}).T[list(CLASS_NAMES)]


# ---------------------------------------------------------------------------------------------
# Ensembles


def average_probabilities(members: Sequence, x: np.ndarray | None = None,
                          weights: Sequence[float] | None = None) -> np.ndarray:
    """Softmax averaging: the (weighted) mean of the members' class probabilities.

    ``members``: probability arrays ``(N, 7)`` and/or functions mapping faces ``x`` (uint8
    ``(N, 48, 48)``) to such arrays (e.g. ``lambda x: predict_proba(model, x)``); functions need
    ``x``. ``weights``: one non-negative weight per member (normalised to sum 1), None = equal.
    Returns float64 ``(N, 7)``; rows sum to 1 when the members' rows do.
    """
    if len(members) == 0:
        raise ValueError("average_probabilities: no members")
    arrays = []
    for i, member in enumerate(members):
        if callable(member):
            if x is None:
                raise ValueError(f"member {i} is a function: pass the faces x")
            member = member(x)
        arrays.append(np.asarray(member, dtype=np.float64))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2 or arrays[0].shape[1] != NUM_CLASSES:
        raise ValueError(f"members must all give (N, {NUM_CLASSES}) probabilities; got shapes {sorted(shapes)}")
    w = np.ones(len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(arrays)} non-negative numbers with a positive sum; got {weights}")
    w = w / w.sum()
    return np.tensordot(w, np.stack(arrays), axes=1)


def ensemble_predictor(members: Sequence[Callable[[np.ndarray], np.ndarray]],
                       weights: Sequence[float] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function (faces ``(N, 48, 48)`` -> ``(N, 7)``) averaging ``members``' outputs,
    e.g. for ``evaluate.evaluate_splits``."""
    return lambda x: average_probabilities(members, x, weights)


def load_model(record: dict) -> keras.Model:
    """The Keras model a metrics record names (``model_file``)."""
    return keras.models.load_model(model_path(record))


def member_probabilities(records: Sequence[dict], ds: FERDataset, splits: Sequence[str] = (VAL, TEST),
                         batch_size: int = 512, skip_unloadable: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """``{run: {split: probabilities (N, 7)}}`` of each record's saved model on ``ds``'s splits
    (with the record's own test-time flip setting). With ``skip_unloadable`` a model file that
    Keras cannot load is reported and left out instead of raising."""
    out = {}
    with quiet_retracing():
        for record in records:
            try:
                model = load_model(record)
            except Exception as err:  # any loading failure: report it and go on
                if not skip_unloadable:
                    raise
                print(f"{record['run']}: left out, its model file cannot be loaded ({type(err).__name__}: {err})")
                continue
            flip = bool(record.get("params", {}).get("tta_flip", False))
            out[record["run"]] = {split: predict_proba(model, ds.split(split)[0], batch_size=batch_size, tta_flip=flip)
                                  for split in splits}
            del model
    return out


@contextlib.contextmanager
def quiet_retracing():
    """Silence TensorFlow's "triggered tf.function retracing" warnings, which every new model in a
    process that trains or loads several of them sets off (expected, harmless)."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def write_ensemble_record(run, name: str, members: Sequence[dict], proba_by_split: dict[str, np.ndarray],
                          weights: Sequence[float] | None = None, sampling: str | None = None) -> dict:
    """Evaluate an ensemble's probabilities ``{"PublicTest": (N,7), "PrivateTest": (M,7)}`` on the
    run's dataset and write its metrics file ``<NN>_ensemble_<name>_<profile>.json``: model
    ``ensemble``, ``params`` listing the members (runs, model files, weights), training time the
    sum of the members'. Returns the record (it names no ``model_file``: the members' are listed)."""
    metrics = evaluate_predictions(proba_by_split, run.dataset)
    run_id = f"{run.notebook[:2]}_ensemble_{name}_{run.profile.name}"
    params = {"model": "ensemble", "combination": "softmax average (mean of the members' class probabilities)",
              "members": [r["run"] for r in members],
              "weights": "equal" if weights is None else [float(w) for w in weights],
              "member_model_files": [r.get("model_file") for r in members]}
    seconds = float(sum(r["train"]["seconds"] for r in members))
    train = {"epochs": None, "seconds": round(seconds, 1), "stopped": "members trained separately",
             "members": {r["run"]: {"epochs": r["train"]["epochs"], "seconds": r["train"]["seconds"]} for r in members}}
    record = metrics_record(run_id, run.notebook, "ensemble", sampling or "+".join(r["sampling"] for r in members),
                            run.profile.name, params, run.dataset.describe(), train, metrics, weights="none",
                            n_params=int(sum(r.get("n_params") or 0 for r in members)))
    write_metrics(record, run.metrics_dir)
    return record


def ensemble_gain(per_class: pd.DataFrame, ensemble: str) -> pd.DataFrame:
    """Per class (rows): the best member (of the other rows of a ``per_class_table``), its value,
    the ensemble's, and the gain (ensemble minus best member, same units)."""
    members = per_class.drop(index=ensemble)
    out = pd.DataFrame({"best member": members.idxmax(), "best member value": members.max(),
                        "members' mean": members.mean(), "ensemble": per_class.loc[ensemble]})
    out["gain over best"] = out["ensemble"] - out["best member value"]
    out["beats every member"] = out["gain over best"] > 0
    return out


def mcnemar_p(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for two classifiers' predictions ``(N,)`` of the same faces."""
    from scipy.stats import binomtest

    right_a, right_b = np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0


def best_run_per_notebook(records: Sequence[dict], fingerprint: str | None = None,
                          exclude_notebooks: Sequence[str] = ()) -> list[dict]:
    """The best run (PublicTest accuracy) of each notebook among the honest trained runs on the
    dataset with ``fingerprint``: runs with a Keras file, not leaky, not on derived data; best first."""
    chosen = {}
    for record in trained_runs(records, fingerprint):
        notebook = record.get("notebook", "")
        if record.get("leaky") or notebook in exclude_notebooks or notebook in chosen:
            continue
        chosen[notebook] = record
    return list(chosen.values())


# ---------------------------------------------------------------------------------------------
# Resampling with provenance


@dataclass
class Resampled:
    """A resampled set and where each row comes from.

    ``x``: uint8 ``(M, 48, 48)``; ``y``: int64 ``(M,)``; ``is_synthetic``: bool ``(M,)`` (SMOTE
    interpolations); ``parents``: int64 ``(M, 2)``, the input rows a row copies (both columns the
    same) or was interpolated between (SMOTE: ``x ~ a + step (b - a)``); ``steps``: float ``(M,)``
    (0 for copies); ``seconds``: wall time.
    """

    method: str
    x: np.ndarray
    y: np.ndarray
    is_synthetic: np.ndarray
    parents: np.ndarray
    steps: np.ndarray
    seconds: float

    def __len__(self) -> int:
        return len(self.y)


class _TracedSMOTE(SMOTE):
    """imbalanced-learn's SMOTE, recording for every new sample its base row, neighbour row and
    step (class-local indices, in generation order). The images are imbalanced-learn's own."""

    def _fit_resample(self, X, y):
        self.trace_ = []
        return super()._fit_resample(X, y)

    def _generate_samples(self, X, nn_data, nn_num, rows, cols, steps, y_type=None, y=None):
        self.trace_.append((y_type, np.asarray(rows), np.asarray(nn_num[rows, cols]), np.asarray(steps).ravel()))
        return super()._generate_samples(X, nn_data, nn_num, rows, cols, steps, y_type, y)


def _traced_smote(x: np.ndarray, y: np.ndarray, seed: int, k_neighbors: int = 5, n_jobs=None):
    """The same SMOTE as ``balance.balance(x, y, "smote", seed)`` (every class up to the largest,
    float32 pixels, rounded), returning (images, labels, parents (M, 2), steps (M,))."""
    counts = balance.class_counts(y)
    target = balance.resolve_target(counts, None, "smote")
    strategy = {c: int(max(n, target)) for c, n in enumerate(counts) if n > 0}
    growing = [c for c, n in strategy.items() if n > counts[c]]
    n = len(y)
    if not growing:
        return x.copy(), y.copy(), np.repeat(np.arange(n)[:, None], 2, axis=1), np.zeros(n)
    smallest = min(counts[c] for c in growing)
    if smallest < 2:
        raise ValueError("SMOTE needs at least 2 images of every class it oversamples")
    k = min(k_neighbors, int(smallest) - 1)
    flat = x.reshape(n, -1).astype(np.float32)
    smote = _TracedSMOTE(sampling_strategy=strategy, k_neighbors=NearestNeighbors(n_neighbors=k + 1, n_jobs=n_jobs),
                         random_state=seed)
    xs, ys = smote.fit_resample(flat, y)
    np.rint(xs, out=xs)
    np.clip(xs, 0, 255, out=xs)
    pairs, steps = [], []
    for label, rows, neighbours, step in smote.trace_:
        members = np.flatnonzero(y == label)
        pairs.append(np.stack([members[rows], members[neighbours]], axis=1))
        steps.append(step)
    new_pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    new_steps = np.concatenate(steps) if steps else np.zeros(0)
    if len(new_pairs) != len(ys) - n:
        raise RuntimeError("SMOTE trace does not cover every new image (has imbalanced-learn changed?)")
    # The trace must reproduce the images: s = rint(a + step (b - a)) (checked in chunks: memory).
    error = 0.0
    for lo in range(0, len(new_pairs), 4096):
        a, b = flat[new_pairs[lo:lo + 4096, 0]], flat[new_pairs[lo:lo + 4096, 1]]
        rebuilt = a + new_steps[lo:lo + 4096, None].astype(np.float32) * (b - a)
        error = max(error, float(np.abs(xs[n + lo:n + lo + len(a)] - rebuilt).max()))
    if error > 0.51:
        raise RuntimeError(f"SMOTE trace does not reproduce the images (max error {error:.2f} grey levels)")
    parents = np.concatenate([np.repeat(np.arange(n)[:, None], 2, axis=1), new_pairs]).astype(np.int64)
    images = xs.astype(np.uint8).reshape((len(xs),) + x.shape[1:])
    return images, ys.astype(np.int64), parents, np.concatenate([np.zeros(n), new_steps])


def resample_with_parents(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0) -> Resampled:
    """``balance.balance(x, y, method, seed)`` for ``none``, ``ros`` or ``smote`` (the same
    images, same order), plus every row's parents: the input row(s) it copies or was
    interpolated between."""
    t0 = time.perf_counter()
    if method in ("none", "ros"):
        result = balance.balance(x, y, method, seed=seed, progress=False)
        parents = np.repeat(result.source_index[:, None], 2, axis=1)
        out = Resampled(method, result.x, result.y, result.is_synthetic, parents, np.zeros(len(result.y)), 0.0)
    elif method == "smote":
        images, labels, parents, steps = _traced_smote(np.asarray(x), np.asarray(y, dtype=np.int64), seed)
        out = Resampled(method, images, labels, np.arange(len(labels)) >= len(y), parents, steps, 0.0)
    else:
        raise ValueError(f"method={method!r}: resample_with_parents supports 'none', 'ros' and 'smote'")
    out.seconds = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------
# The leakage audit


def overlap_audit(train_pixels: np.ndarray, train_sources: np.ndarray, test_pixels: np.ndarray,
                  test_sources: np.ndarray) -> dict:
    """Which test images are not independent of a training set.

    ``*_pixels``: uint8 ``(M, 48, 48)`` / ``(K, 48, 48)``; ``*_sources``: ``(M, 2)`` / ``(K, 2)``
    pixel digests (``data.image_digests``) of the original image(s) each row was made from (a copy:
    its own source twice; a SMOTE image: its two parents). Returns ``n_test``, boolean masks
    ``(K,)`` ``exact_copy`` (the same pixels are in training), ``shared_source`` (an original the
    test image was made from also went into a training image: its own copy, or a SMOTE image
    interpolated from it or from its parents), ``leaked`` (either) and ``independent`` (neither),
    and their counts ``n_exact_copy``, ``n_shared_source``, ``n_leaked``, ``n_independent``.
    """
    train_pixel_set = set(image_digests(train_pixels))
    train_source_set = set(np.asarray(train_sources).ravel().tolist())
    exact = np.array([d in train_pixel_set for d in image_digests(test_pixels)], dtype=bool)
    shared = np.array([a in train_source_set or b in train_source_set for a, b in np.asarray(test_sources)],
                      dtype=bool)
    leaked = exact | shared
    out = {"n_test": len(exact), "exact_copy": exact, "shared_source": shared, "leaked": leaked,
           "independent": ~leaked}
    out.update({f"n_{k}": int(out[k].sum()) for k in ("exact_copy", "shared_source", "leaked", "independent")})
    return out


def audit_counts(audit: dict) -> dict:
    """The counts of an :func:`overlap_audit` (no masks), with shares in percent."""
    n = max(audit["n_test"], 1)
    out = {"test images": audit["n_test"]}
    for key, name in (("exact_copy", "exact copy in training"), ("shared_source", "source image in training"),
                      ("leaked", "either"), ("independent", "neither (independent)")):
        out[name] = audit[f"n_{key}"]
        out[f"{name} (%)"] = round(100 * audit[f"n_{key}"] / n, 2)
    return out


def honest_audit(ds: FERDataset, method: str, seed: int = 0) -> dict:
    """:func:`overlap_audit` of the honest protocol: Training resampled with ``method`` (as the
    honest models are trained) against the untouched PrivateTest split. What it finds are
    FER2013's own exact duplicates of PrivateTest images in Training."""
    x_train, y_train = ds.split(TRAIN)
    resampled = resample_with_parents(x_train, y_train, method, seed)
    digests = np.array(image_digests(x_train))
    x_test = ds.split(TEST)[0]
    test_digests = np.array(image_digests(x_test))
    audit = overlap_audit(resampled.x, digests[resampled.parents], x_test, np.stack([test_digests] * 2, axis=1))
    audit["n_synthetic_test"] = 0
    return audit


@dataclass
class LeakyProtocol:
    """Write-up 003's protocol: resample ALL images of a dataset (every official split), then a
    seeded random stratified 80/10/10 split into leaky training, validation and test sets.

    ``source``: the dataset resampled; ``resampled``: its :class:`Resampled` rows; ``usage``:
    ``(M,)`` Training/PublicTest/PrivateTest of the *leaky* split (not the official one);
    ``source_digests``: pixel digests of ``source``'s images ``(N,)``.
    """

    method: str
    source: FERDataset
    resampled: Resampled
    usage: np.ndarray
    source_digests: np.ndarray
    seed: int

    @property
    def sampling(self) -> str:
        """The ``sampling`` of its metrics files, e.g. ``leaky_ros_before_split``."""
        return f"leaky_{self.method}_before_split"

    def split(self, usage: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the leaky ``Training``, ``PublicTest`` (validation) or
        ``PrivateTest`` (test) part."""
        mask = self.usage == usage
        return self.resampled.x[mask], self.resampled.y[mask]

    def sources(self, usage: str) -> np.ndarray:
        """``(n, 2)`` digests of the original images each row of a leaky part was made from."""
        return self.source_digests[self.resampled.parents[self.usage == usage]]

    def audit(self) -> dict:
        """:func:`overlap_audit` of the leaky test part against the leaky training part, with
        ``n_synthetic_test`` (SMOTE images in the test part)."""
        audit = overlap_audit(self.split(TRAIN)[0], self.sources(TRAIN), self.split(TEST)[0], self.sources(TEST))
        audit["n_synthetic_test"] = int(self.resampled.is_synthetic[self.usage == TEST].sum())
        return audit

    def official_overlap(self) -> dict:
        """Per official evaluation split: how many of its images have an exact copy in the leaky
        training part, and how many went into it in any form (copy or SMOTE parent)."""
        train_pixels = set(image_digests(self.split(TRAIN)[0]))
        train_sources = set(self.sources(TRAIN).ravel().tolist())
        out = {}
        for split in (VAL, TEST):
            digests = self.source_digests[self.source.usage == split]
            out[split] = {"images": len(digests),
                          "exact copy in leaky training": int(sum(d in train_pixels for d in digests)),
                          "in leaky training in any form": int(sum(d in train_sources for d in digests))}
        return out

    def fingerprint(self) -> str:
        """The DESIGN.md fingerprint of the resampled set with its leaky split (labels, pixels and
        which part each row is in)."""
        digests = sorted(f"{u}:{d}" for u, d in zip(self.usage, image_digests(self.resampled.x, self.resampled.y)))
        return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """The protocol's settings and sizes, for a metrics file."""
        return {"protocol": "write-up 003: resample all images (every official split), then a random stratified "
                            "80/10/10 split (fer_utils.data.stratified_split)",
                "method": self.method, "seed": self.seed, "n_source": len(self.source),
                "n_resampled": len(self.resampled),
                "n_train": int((self.usage == TRAIN).sum()), "n_val": int((self.usage == VAL).sum()),
                "n_test": int((self.usage == TEST).sum()),
                "n_synthetic": int(self.resampled.is_synthetic.sum())}

    def leak_examples(self, n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """SMOTE training images made from a leaky-test image: ``(x_original, x_synthetic,
        parents)`` for ``plots.smote_examples``, parent ``a`` being the test image (source row
        indices into ``source``). Empty for ROS."""
        train = np.flatnonzero((self.usage == TRAIN) & self.resampled.is_synthetic)
        test_originals = set(self.resampled.parents[(self.usage == TEST) & ~self.resampled.is_synthetic, 0].tolist())
        rows, used = [], set()
        for i in np.random.default_rng(seed).permutation(train):
            a, b = self.resampled.parents[i]
            t = float(self.resampled.steps[i])
            if b in test_originals and b not in used and (a not in test_originals or a in used):
                a, b, t = b, a, 1.0 - t
            if a in test_originals and a not in used:
                rows.append((i, a, b, t))
                used.add(a)
            if len(rows) == n:
                break
        x_src = self.source.pixels
        frame = pd.DataFrame([{"label": CLASS_NAMES[self.resampled.y[i]], "parent_a": int(a), "parent_b": int(b),
                               "t": t, "max_abs_error": float(np.abs(self.resampled.x[i].astype(float)
                                                                     - (x_src[a] + t * (x_src[b].astype(float) - x_src[a]))).max())}
                              for i, a, b, t in rows])
        synthetic = self.resampled.x[[r[0] for r in rows]] if rows else np.zeros((0, 48, 48), np.uint8)
        return x_src, synthetic, frame


def leaky_protocol(ds: FERDataset, method: str, seed: int = 0) -> LeakyProtocol:
    """Write-up 003's protocol on ``ds``: resample all its images with ``method`` (``ros`` or
    ``smote``, every class up to the largest), then a seeded stratified 80/10/10 split."""
    resampled = resample_with_parents(ds.pixels, ds.labels, method, seed)
    usage = stratified_split(resampled.y, seed=seed, fractions=(0.8, 0.1, 0.1))
    return LeakyProtocol(method, ds, resampled, usage, np.array(image_digests(ds.pixels)), seed)


LEAKY_TEST = "leaky_test"  #: metrics key: the leaky protocol's own 10% test part
LEAKY_TEST_INDEPENDENT = "leaky_test_independent"  #: ... only its images with nothing in training
LEAKY_WARNING = ("LEAKY PROTOCOL (write-up 003): every image was resampled before an 80/10/10 split, so copies "
                 "(ROS) or interpolations (SMOTE) of test images, and of official PublicTest and PrivateTest "
                 "images, are in this model's training set. metrics.leaky_test is the protocol's own test part; "
                 "the PublicTest/PrivateTest metrics are NOT held-out results. Never select or release this model.")


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def train_leaky(run, protocol: LeakyProtocol, recipe: str = "tuned") -> dict:
    """Train (or load) the profile's VGG with ``recipe`` under the leaky protocol: trained on its
    training part, epoch chosen on its validation part (each epoch draws as many images as the
    official Training split holds: the honest runs' budget), tested on its test part.

    The metrics file (``<NN>_<model>_leaky_<method>_before_split_<profile>.json``) holds
    ``metrics.leaky_test`` and ``metrics.leaky_test_independent`` (test images with no copy and no
    source image in training) beside the official ``PublicTest``/``PrivateTest``/
    ``PrivateTest_clean`` of the same model, whose training set holds copies of those very images;
    ``leaky: true``, a ``warning``, the ``leakage`` audit counts, and ``leaky_model_file`` instead
    of ``model_file``. Returns the record.
    """
    ds = run.dataset
    model_name = vgg_model_name(recipe, run.profile)
    n_train_official = int((ds.usage == TRAIN).sum())
    config = vgg_config(recipe, run.profile, epoch_size=n_train_official, seed=run.seed)
    run_id = f"{run.notebook[:2]}_{model_name}_{protocol.sampling}_{run.profile.name}"
    params = json.loads(json.dumps({"model": model_name, "sampling": protocol.sampling, **config.params(),
                                    **vgg_params(recipe, run.profile), "tta_flip": False,
                                    "leaky_protocol": {k: v for k, v in protocol.describe().items()
                                                       if k in ("protocol", "method", "seed")}}))
    described = ds.describe()
    metrics_file = run.metrics_dir / f"{run_id}.json"
    model_file = run.models_dir / f"{run_id}.keras"
    if metrics_file.exists() and model_file.exists() and not run.force:
        record = json.loads(metrics_file.read_text())
        if record["dataset"].get("fingerprint") == described["fingerprint"] and record["params"] == params:
            print(f"{run_id}: results exist ({metrics_file.name}, trained {record['train']['seconds'] / 60:.1f} min); "
                  "loaded, not retrained (force=True retrains)")
            return record
    described["derived"] = {"fingerprint": protocol.fingerprint(), "how": protocol.describe()["protocol"],
                            **{k: v for k, v in protocol.describe().items() if k.startswith("n_")}}
    x_train, y_train = protocol.split(TRAIN)
    x_val, y_val = protocol.split(VAL)
    x_test, y_test = protocol.split(TEST)
    workdir = run.models_dir / f"{run_id}.work"
    if run.force and workdir.exists():
        shutil.rmtree(workdir)
    print(f"{run_id}: LEAKY protocol, training on {len(x_train):,} resampled images, selecting on "
          f"{len(x_val):,}, testing on {len(x_test):,} (all drawn from the same resampled pool)")
    with quiet_retracing():
        result = fit(build_vgg(run.profile), x_train, y_train, x_val, y_val, config, workdir)
        save_model(result.model, model_file)
        metrics = evaluate_predictions({split: predict_proba(result.model, ds.split(split)[0]) for split in (VAL, TEST)},
                                       ds)
        proba = predict_proba(result.model, x_test)
    audit = protocol.audit()
    metrics[LEAKY_TEST] = split_metrics(y_test, proba)
    if audit["n_independent"]:
        keep = audit["independent"]
        metrics[LEAKY_TEST_INDEPENDENT] = split_metrics(y_test[keep], proba[keep])
    leakage = {"test_audit": {**audit_counts(audit), "synthetic test images": audit["n_synthetic_test"]},
               "official_splits_in_leaky_training": protocol.official_overlap()}
    record = metrics_record(
        run_id, run.notebook, model_name, protocol.sampling, run.profile.name, params, described,
        result.summary(len(x_train), config.epoch_size),
        metrics, weights="none", n_params=int(result.model.count_params()), leaky=True, warning=LEAKY_WARNING,
        leakage=leakage, leaky_model_file=_relative(model_file), history=result.history,
    )
    write_metrics(record, run.metrics_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{run_id}: {result.epochs} epochs in {result.seconds / 60:.1f} min ({result.stopped}); leaky test "
          f"{100 * metrics[LEAKY_TEST]['accuracy']:.2f}% (official PrivateTest, seen in training: "
          f"{100 * metrics[TEST]['accuracy']:.2f}%)")
    return record


def protocol_table(honest: dict[str, dict], leaky: dict[str, dict]) -> pd.DataFrame:
    """Top-1/2/3 and balanced accuracy (percent) of the honest runs (``{method: record}``, on
    PrivateTest and PrivateTest_clean) and the leaky runs (on their own test part, its independent
    images, and the official PrivateTest they were trained on), one row per (protocol, method,
    test set)."""
    rows = []

    def add(protocol, method, test_set, m, note, short):
        rows.append({"protocol": protocol, "method": method, "test set": test_set, "images": m["n"],
                     "top-1": 100 * m["accuracy"], "top-2": 100 * m["top2"], "top-3": 100 * m["top3"],
                     "balanced": 100 * m["balanced_accuracy"], "held out?": note,
                     "label": f"{protocol.split(':')[0]} {method}\n{short}"})

    for method, r in honest.items():
        add("honest: resample Training only", method, "PrivateTest", r["metrics"][TEST], "yes", "PrivateTest")
        add("honest: resample Training only", method, "PrivateTest_clean", r["metrics"][CLEAN_TEST],
            "yes, and no exact copy in Training", "PrivateTest\nclean")
    for method, r in leaky.items():
        add("leaky: resample all, then split", method, "its own 10% test part", r["metrics"][LEAKY_TEST],
            "no: copies / SMOTE relatives in training", "own test part")
        if LEAKY_TEST_INDEPENDENT in r["metrics"]:
            add("leaky: resample all, then split", method, "its test images with nothing in training",
                r["metrics"][LEAKY_TEST_INDEPENDENT], "yes (a subset)", "own test part,\nindependent")
        add("leaky: resample all, then split", method, "official PrivateTest", r["metrics"][TEST],
            "no: PrivateTest went into training", "official\nPrivateTest")
    return pd.DataFrame(rows).round(2)


def audit_table(audits: dict[str, dict]) -> pd.DataFrame:
    """One row per :func:`overlap_audit` (``{name: audit}``): counts (int) and shares (%) of test
    images with an exact copy, a source image, either or neither in training, and how many of the
    test images are SMOTE images."""
    table = pd.DataFrame({name: {**audit_counts(a), "SMOTE images among the test images": a.get("n_synthetic_test", 0)}
                          for name, a in audits.items()}).T
    return table.astype({c: float if c.endswith("(%)") else int for c in table.columns})


def duplicate_effect(records: Sequence[dict]) -> pd.DataFrame:
    """Per honest run: PrivateTest accuracy on all images, on those without an exact copy in
    Training (``PrivateTest_clean``) and on the duplicated ones alone (derived from the two), in
    percent."""
    rows = {}
    for r in records:
        if r.get("leaky") or CLEAN_TEST not in r["metrics"]:
            continue
        full, clean = r["metrics"][TEST], r["metrics"][CLEAN_TEST]
        n_dup = full["n"] - clean["n"]
        right_dup = full["accuracy"] * full["n"] - clean["accuracy"] * clean["n"]
        rows[r["run"]] = {"PrivateTest": 100 * full["accuracy"], "without Training duplicates": 100 * clean["accuracy"],
                          "duplicated images only": 100 * right_dup / n_dup if n_dup else np.nan,
                          "duplicated images": n_dup,
                          "difference (points)": 100 * (full["accuracy"] - clean["accuracy"])}
    return pd.DataFrame(rows).T.round(2)

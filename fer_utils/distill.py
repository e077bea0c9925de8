"""Notebook 12's distilled champion (issue 36): a teacher averaged from the champion recipe's
finished seeds, its soft targets computed once on a fixed set of augmented views of the Training
faces, and a student with the champion's network trained on them mixed with the labels.

The teacher is the seeds' exported networks (``models/seeds/*.onnx``: the recipe's centre crop and
flip views inside, no prior correction) averaged in ONNX Runtime: it needs neither their Keras
models nor a training framework. A live teacher would run its networks beside every training step
(about twice the training time); cached views cost one pass of the teacher over ``views``
augmented copies of the Training split (the champion's own augmentation), and each epoch draws
one view of every face at random (``epoch_size`` = the number of faces). The student is trained
on the very crop its targets were computed on (``augment="cached"``: the centre crop, no further
augmentation) and is evaluated, exported and released like the champion.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .champion import CROP, MODEL_NAME, champion_config, keep_seed_file, rebuild_from_onnx, seed_file
from .config import TEST, TRAIN, VAL, Profile
from .ensemble import ensemble_predictor, write_ensemble_record
from .evaluate import was_capped
from .files import atomic_path
from .model_file import OnnxClassifier
from .models import build, make_augmenter
from .progress import tqdm
from .runs import RunRecord, RunStore
from .train import TrainConfig, display_path, train_and_evaluate

#: Augmented views of each Training face whose teacher targets are cached, per profile.
VIEWS = {"smoke": 2, "cpu": 10, "full": 20}
#: The defaults: the teacher's probabilities as they are (temperature 1), weighted 0.7 against the
#: one-hot label (0.3).
TEMPERATURE, ALPHA = 1.0, 0.7


def teacher_seeds(store: RunStore, dataset) -> list[RunRecord]:
    """The champion recipe's finished seeds on ``dataset`` (uncapped, their network kept as a
    ``seed_file``), in seed order: the teacher's members."""
    seeds = [r for r in store.records() if r["dataset"]["fingerprint"] == dataset.fingerprint
             and r.run_id == store.run_id(MODEL_NAME, "none", seed=r["params"].get("seed"))
             and not was_capped(r["train"]) and seed_file(store, r.run_id).exists()]
    return sorted(seeds, key=lambda r: r["params"]["seed"])


def teacher_predictor(seeds: Sequence[RunRecord], store: RunStore) -> Callable[[np.ndarray], np.ndarray]:
    """Faces ``(N, 48, 48)`` -> the mean of the seeds' probabilities (their ONNX files, views inside)."""
    if not seeds:
        raise ValueError("no finished seed of the champion recipe with its ONNX file: train them first "
                         "(notebook 12, seeds=[42, 43, 44])")
    return ensemble_predictor([OnnxClassifier(seed_file(store, r.run_id)).predict for r in seeds])


def teacher_record(store: RunStore, dataset, seeds: Sequence[RunRecord]) -> RunRecord:
    """The teacher scored on PublicTest and PrivateTest (with intervals, like any record) and filed
    as the ensemble ``<NN>_ensemble_teacher_<profile>``."""
    predict = teacher_predictor(seeds, store)
    proba = {split: predict(dataset.split(split)[0]) for split in (VAL, TEST)}
    return write_ensemble_record(store, dataset, "teacher", seeds, proba, sampling="seeds",
                                 member_files=[display_path(seed_file(store, r.run_id)) for r in seeds])


def augmented_views(faces: np.ndarray, views: int, seed: int, batch_size: int = 1024) -> np.ndarray:
    """``views`` copies of uint8 faces ``(N, 48, 48)`` through the champion's training
    augmentation (flip, the shift of a random crop, rotation, zoom, noise), seeded: ``(views * N,
    48, 48)`` uint8, view by view (the same call gives the same views)."""
    augmenter = make_augmenter("standard", CROP, seed)
    out = np.empty((views, *faces.shape), np.uint8)
    for view in tqdm(range(views), desc="augmented views", unit="view"):
        for start in range(0, len(faces), batch_size):
            batch = faces[start:start + batch_size, :, :, None].astype(np.float32)
            out[view, start:start + batch_size] = np.clip(np.rint(np.asarray(augmenter(batch, training=True))[..., 0]), 0, 255)
    return out.reshape(-1, *faces.shape[1:])


def soft_targets(teacher_proba: np.ndarray, labels: np.ndarray, temperature: float = TEMPERATURE,
                 alpha: float = ALPHA) -> np.ndarray:
    """``alpha`` times the teacher's probabilities at ``temperature`` (``p ** (1 / T)``, renormalised)
    plus ``1 - alpha`` times the one-hot label: float32 rows that sum to 1."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"temperature={temperature} must be > 0 and alpha={alpha} between 0 and 1")
    tempered = np.asarray(teacher_proba, np.float64) ** (1 / temperature)
    tempered /= tempered.sum(axis=1, keepdims=True)
    return (alpha * tempered + (1 - alpha) * np.eye(tempered.shape[1])[labels]).astype(np.float32)


def distillation_set(dataset, predict: Callable[[np.ndarray], np.ndarray] | None, views: int, seed: int,
                     temperature: float = TEMPERATURE, alpha: float = ALPHA,
                     cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The student's training set: ``views`` augmented copies of every Training face and their soft
    targets from the teacher ``predict`` (:func:`soft_targets`); with ``alpha=0`` the labels alone
    (no teacher is run). The teacher's probabilities are read from ``cache`` (a ``.npy`` file) when
    it holds one row per view, else computed and written there, so that a resumed run skips the
    teacher's pass; the caller names the file after everything the probabilities depend on."""
    x_train, y_train = dataset.split(TRAIN)
    faces, labels = augmented_views(x_train, views, seed), np.tile(y_train, views)
    if alpha == 0:
        return faces, labels
    proba = np.load(cache) if cache is not None and cache.exists() else None
    if proba is None or len(proba) != len(faces):
        chunks = range(0, len(faces), len(x_train))
        proba = np.concatenate([predict(faces[i:i + len(x_train)]) for i in tqdm(chunks, desc="teacher", unit="view")])
        if cache is not None:
            with atomic_path(cache, ".npy") as partial:
                np.save(partial, proba.astype(np.float32))
    return faces, soft_targets(proba, labels, temperature, alpha)


def targets_cache(store: RunStore, run_id: str, dataset, seeds: Sequence[RunRecord], views: int, seed: int) -> Path:
    """Where ``run_id`` keeps its teacher's probabilities while it trains: in its resumable folder
    (removed when the run finishes; never committed), named after the data, the teacher's members,
    the views and their seed."""
    key = json.dumps([dataset.fingerprint, [r.run_id for r in seeds], views, seed])
    return store.workdir(run_id) / f"teacher_proba_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy"


def student_config(profile: Profile, seed: int, n_train: int, epochs: int | None = None) -> TrainConfig:
    """The champion's recipe for the student (its epochs unless given), on cached views: no
    augmentation of its own, no label smoothing (the targets are soft already), and epochs of
    ``n_train`` faces, one view of each on average."""
    return replace(champion_config(profile, seed, epochs), augment="cached", label_smoothing=0.0, epoch_size=n_train)


def train_student(store: RunStore, dataset, seeds: Sequence[RunRecord], config: TrainConfig, views: int,
                  temperature: float = TEMPERATURE, alpha: float = ALPHA) -> RunRecord:
    """Train (or load) the student with ``config`` (:func:`student_config`) on the teacher's soft
    targets (the ``seeds``' average), filed as ``<NN>_champion_cnn_distilled[_seedS]_<profile>``
    through the usual lifecycle (resumable: the views are recomputed, seeded, when a run resumes,
    and the teacher's probabilities are read from :func:`targets_cache` if the machine kept it;
    both are derived from the faces and never committed). ``alpha=0`` is
    the control without distillation, the same views with their labels alone
    (``<NN>_champion_cnn_cached_views[_seedS]_<profile>``). A finished, uncapped run keeps its
    network as a seed file, and a fresh clone rebuilds it from there."""
    sampling = "distilled" if alpha else "cached_views"
    run_id = store.run_id(MODEL_NAME, sampling, seed=config.seed)
    rebuild_from_onnx(store, dataset, run_id, config, seed_file(store, run_id))
    teacher = teacher_predictor(seeds, store) if alpha else None
    cache = targets_cache(store, run_id, dataset, seeds, views, config.seed)
    taught = {"teacher": [r.run_id for r in seeds], "temperature": temperature, "alpha": alpha} if alpha else {}
    record = train_and_evaluate(
        store, dataset, MODEL_NAME, lambda **kw: build(MODEL_NAME, **kw), config, sampling=sampling,
        train_data=lambda: distillation_set(dataset, teacher, views, config.seed, temperature, alpha, cache),
        extra_params={"views": views, **taught})
    keep_seed_file(store, record)
    return record

"""The distilled champion's parts (issue 36) on the synthetic stand-in: the teacher averaged from
the seeds' ONNX files, cached augmented views, soft targets, and a student trained on them."""

from pathlib import Path

import numpy as np
import pytest

from fer_utils import champion, distill, evaluate, train
from fer_utils.config import TRAIN, VAL, import_keras
from fer_utils.model_file import OnnxClassifier
from fer_utils.notebook import start

keras = import_keras()


def test_soft_targets_mix_the_tempered_teacher_with_the_label():
    p = np.array([[0.6, 0.3, 0.1, 0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4]])
    mixed = distill.soft_targets(p, np.array([1, 6]), temperature=1.0, alpha=0.7)
    np.testing.assert_allclose(mixed, 0.7 * p + 0.3 * np.eye(7)[[1, 6]], atol=1e-6)
    np.testing.assert_allclose(mixed.sum(axis=1), 1, atol=1e-6)
    warm = distill.soft_targets(p, np.array([1, 6]), temperature=2.0, alpha=1.0)
    assert (warm.max(axis=1) < p.max(axis=1)).all() and (warm.argmax(axis=1) == p.argmax(axis=1)).all()
    np.testing.assert_array_equal(distill.soft_targets(p, np.array([1, 6]), alpha=0.0), np.eye(7)[[1, 6]])
    for bad in ({"temperature": 0.0}, {"alpha": 1.5}):
        with pytest.raises(ValueError, match="temperature|alpha"):
            distill.soft_targets(p, np.array([1, 6]), **bad)


def test_augmented_views_are_seeded_copies_through_the_champions_augmentation(small_ds):
    faces = small_ds.split(TRAIN)[0][:32]
    views = distill.augmented_views(faces, 2, seed=3)
    assert views.shape == (64, 48, 48) and views.dtype == np.uint8
    np.testing.assert_array_equal(views, distill.augmented_views(faces, 2, seed=3))
    assert not np.array_equal(views, distill.augmented_views(faces, 2, seed=4))
    assert not np.array_equal(views[:32], faces) and not np.array_equal(views[:32], views[32:])


def test_the_teachers_probabilities_are_cached_for_a_resumed_run(small_ds, tmp_path):
    calls = []

    def teacher(faces):
        calls.append(len(faces))
        return np.full((len(faces), 7), 1 / 7, np.float32)

    cache = tmp_path / "run.work" / "teacher_proba_x.npy"
    faces, targets = distill.distillation_set(small_ds, teacher, 2, seed=3, cache=cache)
    n_train = len(small_ds.split(TRAIN)[1])
    assert calls == [n_train, n_train] and np.load(cache).shape == (2 * n_train, 7)
    again = distill.distillation_set(small_ds, teacher, 2, seed=3, cache=cache)
    assert len(calls) == 2, "the cached probabilities are read, the teacher is not run again"
    np.testing.assert_array_equal(again[0], faces) and np.testing.assert_allclose(again[1], targets)
    distill.distillation_set(small_ds, teacher, 3, seed=3, cache=cache)  # a cache of other views is recomputed
    assert len(calls) == 5 and np.load(cache).shape == (3 * n_train, 7)
    assert not list(cache.parent.glob("*.tmp*"))


def test_cached_views_train_on_the_centre_crop_alone():
    # linear outputs of scaled pixels: a softmax of raw pixels saturates, and then any input looks alike
    net = keras.Sequential([keras.Input((40, 40)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                            keras.layers.Dense(7)])
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48)).astype(np.float32)
    cached = train.training_model(net, "cached", 40)
    np.testing.assert_allclose(cached(faces, training=True), net(faces[:, 4:44, 4:44]), atol=1e-5)
    augmented = train.training_model(net, "standard", 40)
    assert not np.allclose(augmented(faces, training=True), net(faces[:, 4:44, 4:44]), atol=1e-4)


def test_a_student_learns_from_the_seeds_teacher_and_keeps_its_network(tmp_path, capsys):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    champion.train_seeds(run.store, run.dataset, run.profile, [42, 7], release=tmp_path / "none.onnx")
    seeds = distill.teacher_seeds(run.store, run.dataset)
    assert [r.run_id for r in seeds] == ["12_champion_cnn_none_seed7_smoke", "12_champion_cnn_none_smoke"]

    teacher = distill.teacher_record(run.store, run.dataset, seeds)
    assert teacher.run_id == "12_ensemble_teacher_smoke" and teacher["params"]["members"] == [r.run_id for r in seeds]
    assert [Path(f).name for f in teacher["params"]["member_model_files"]] == [f"{r.run_id}.onnx" for r in seeds]
    x_public = run.dataset.split(VAL)[0]
    mean = np.mean([OnnxClassifier(champion.seed_file(run.store, r.run_id)).predict(x_public) for r in seeds], axis=0)
    assert teacher["metrics"][VAL]["predicted"] == "".join(map(str, mean.argmax(axis=1)))
    low, high = map(float, evaluate.interval_text(teacher["metrics"]["PrivateTest"]).split("-"))
    assert low <= 100 * teacher["metrics"]["PrivateTest"]["accuracy"] <= high

    n_train = len(run.dataset.split(TRAIN)[1])
    config = distill.student_config(run.profile, 42, n_train)
    student = distill.train_student(run.store, run.dataset, seeds, config, views=distill.VIEWS["smoke"])
    assert student.run_id == "12_champion_cnn_distilled_smoke"
    params = student["params"]
    assert params["teacher"] == [r.run_id for r in seeds] and params["views"] == 2 and params["alpha"] == distill.ALPHA
    assert params["augment"] == "cached" and params["label_smoothing"] == 0.0 and params["epoch_size"] == n_train
    assert student.n_train == 2 * n_train and student["train"]["epochs"] == 1
    assert champion.seed_file(run.store, student.run_id).exists()
    assert [r.run_id for r in distill.teacher_seeds(run.store, run.dataset)] == [r.run_id for r in seeds]
    assert "distilled from the seeds' ensemble" in student.label

    control = distill.train_student(run.store, run.dataset, seeds, config, views=2, alpha=0.0)
    assert control.run_id == "12_champion_cnn_cached_views_smoke" and "teacher" not in control["params"]
    assert control["params"]["views"] == 2 and control.n_train == student.n_train

"""FER+ labels (``fer_utils.ferplus``, notebook 13): the targets from the votes, soft-target training,
runs that say their labels, the default-model rule, and an 8-class model through the API and the CLI."""

from __future__ import annotations

import csv
import io
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_utils import ExpressionRecognizer, app, cli, ferplus, model_file, plot_timeline, samples
from fer_utils.config import CLASS_NAMES, FERPLUS_CLASS_NAMES, TEST, TRAIN, VAL, get_profile, import_keras
from fer_utils.api import results_table
from fer_utils.data import DataFormatError, FERDataset
from fer_utils.evaluate import labels_of
from fer_utils.runs import RunStore
from fer_utils.synthetic import make_synthetic_fer
from fer_utils.train import TrainConfig, fit
from onnx_helpers import tiny_ferplus_onnx, tiny_onnx


RELEASED = model_file.RELEASED_MODEL  #: the checkout's released FER2013 model (before a test moves the folder)


@pytest.fixture(scope="module")
def ds():
    """The stand-in with its generated FER+ votes."""
    return make_synthetic_fer(700, seed=3)


# ---------------------------------------------------------------------------------------------
# The labels and the targets


def test_the_ferplus_dataset_holds_the_faces_with_a_majority_under_its_eight_classes(ds):
    labels, reasons = ds.ferplus.majority(FERPLUS_CLASS_NAMES)
    fer = ferplus.ferplus_dataset(ds)
    assert fer.class_names == FERPLUS_CLASS_NAMES and len(fer) == int((labels >= 0).sum()) < len(ds)
    assert np.array_equal(fer.labels, labels[labels >= 0]) and set(fer.usage) == set(ds.usage)
    described = fer.describe()
    assert described["labels"]["name"] == "ferplus" and described["labels"]["votes_sha256"] == ds.ferplus.sha256
    table = ferplus.majority_table(ds)
    assert table.loc["all", "all"] == len(ds) and table.loc[list(FERPLUS_CLASS_NAMES), "all"].sum() == len(fer)
    assert table.loc["left out: no majority", "all"] == int((reasons == "no majority").sum()) > 0
    with pytest.raises(DataFormatError, match="no FER\\+ votes: put FER\\+'s fer2013new.csv beside the CSV"):
        ferplus.ferplus_dataset(FERDataset(ds.pixels, ds.labels, ds.usage, source="x.csv"))


def test_the_targets_come_from_the_training_votes_only(ds):
    labels, reasons = ds.ferplus.majority(FERPLUS_CLASS_NAMES)
    training = ds.usage == TRAIN
    x, soft = ferplus.training_targets(ds, "distribution")
    xm, hard = ferplus.training_targets(ds, "majority")
    assert soft.shape == (len(x), 8) and np.allclose(soft.sum(axis=1), 1) and (soft >= 0).all()
    assert len(xm) == int((training & (labels >= 0)).sum()) < len(x), "ambiguous faces train the distribution only"
    assert len(x) == int((training & np.isin(reasons, ["", "no majority"])).sum())
    assert np.array_equal(hard.argmax(axis=1), labels[training & (labels >= 0)]) and set(np.unique(hard)) == {0, 1}
    assert (soft.max(axis=1) < 1).any(), "the distribution keeps the annotators' disagreement"
    train_pixels = {p.tobytes() for p in ds.pixels[training]}
    assert all(p.tobytes() in train_pixels for p in x), "Training faces only: PublicTest and PrivateTest never train"
    with pytest.raises(ValueError, match="targets='votes': choose one of"):
        ferplus.training_targets(ds, "votes")


def test_fit_learns_soft_targets_as_distributions_not_as_their_top_class(tmp_path):
    """Every face's target is 60% class 0, 40% class 7: a model fit to the distribution answers
    about 0.6 / 0.4; one fit to its top class would answer class 0 alone."""
    keras = import_keras()
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (96, 48, 48), dtype=np.uint8)
    targets = np.zeros((96, 8), np.float32)
    targets[:, 0], targets[:, 7] = 0.6, 0.4

    def build(**_):
        inputs = keras.Input((48, 48))
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(x))

    config = TrainConfig(epochs=30, batch_size=32, learning_rate=0.05, patience=None)
    result = fit(build, faces, targets, None, None, config, tmp_path, verbose=0)  # the last epoch is kept
    mean = result.model.predict(faces.astype(np.float32), verbose=0).mean(axis=0)
    assert mean.shape == (8,) and mean[0] == pytest.approx(0.6, abs=0.08) and mean[7] == pytest.approx(0.4, abs=0.08)
    with pytest.raises(ValueError, match="whose rows sum to 1"):
        fit(build, faces, targets * 2, None, None, config, tmp_path / "other", verbose=0)


# ---------------------------------------------------------------------------------------------
# A run on FER+ labels


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ferplus_runs")
    return RunStore(root / "metrics", root / "models", "13_ferplus", "smoke")


@pytest.fixture(scope="module")
def ferplus_run(store, ds):
    """The champion's network trained one epoch (the smoke profile) on the stand-in's vote distributions."""
    return ferplus.train_ferplus(store, ds, "distribution", ferplus.ferplus_config(get_profile("smoke"), seed=42))


def test_a_ferplus_run_says_its_labels_and_classes_and_no_selector_takes_it_for_a_fer2013_run(ferplus_run, store, ds,
                                                                                               capsys):
    record = ferplus_run
    assert record.run_id == "13_champion_cnn_ferplus_distribution_none_smoke" and record["params"]["targets"] == "distribution"
    assert record.classes == FERPLUS_CLASS_NAMES and labels_of(record) == record.labels == "ferplus"
    assert record["dataset"]["fingerprint"] == ds.fingerprint, "the same images"
    assert not record.trained_on(ds.fingerprint) and store.best(ds.fingerprint) is None and store.trained() == []
    assert np.asarray(record["metrics"][TEST]["confusion"]).shape == (8, 8)
    assert list(record.per_class("f1").index) == list(FERPLUS_CLASS_NAMES)
    assert record["metrics"][TEST]["n"] == int((ferplus.ferplus_dataset(ds).usage == TEST).sum())
    assert "ferplus" in record["metrics"][TEST], "scored over the seven shared classes like every run"
    on_fer2013 = record["metrics_fer2013_labels"]
    assert list(on_fer2013[TEST]["per_class"]) == list(CLASS_NAMES)
    assert on_fer2013[TEST]["n"] == int((ds.usage == TEST).sum())
    capsys.readouterr()
    again = ferplus.train_ferplus(store, ds, "distribution", ferplus.ferplus_config(get_profile("smoke"), seed=42))
    assert "results exist" in capsys.readouterr().out and again == record, "loaded, not retrained"


def test_the_release_candidate_and_its_onnx_file_carry_the_eight_classes(ferplus_run, store, ds, tmp_path):
    fer = ferplus.ferplus_dataset(ds)
    released = ferplus.release_candidate(store, ds, ferplus_run, "none")
    assert released["release"] and released["derived_from"] == ferplus_run.run_id and released.classes == FERPLUS_CLASS_NAMES
    assert ferplus.earlier_release(store, ferplus_run) == released == ferplus.release_run(store, ds, ferplus_run, "flip")
    released.model_path.unlink()  # a fresh clone: the release is rebuilt with the views it was released with
    rebuilt = ferplus.release_run(store, ds, ferplus_run, "flip")
    assert rebuilt["params"]["tta"] == "none" and rebuilt.model_path.exists() and rebuilt["created"] == released["created"]
    checks = ferplus.release_checks(released, latency_ms=0.5)
    assert list(checks["met"]) == [False, True, True, True] and ferplus.releasable(checks)
    onnx_path, card, _ = ferplus.release(released, fer, fer.split(TRAIN)[0][:64], tmp_path / "onnx", tmp_path / "release", 0.5)
    assert onnx_path.name == "ferplus_champion.onnx" and model_file.OnnxClassifier(onnx_path).class_names == FERPLUS_CLASS_NAMES
    text = card.read_text()
    assert "8 softmax probabilities" in text and "7 contempt" in text and "Labels: FER+ majority" in text
    assert model_file.read_model_card(onnx_path).labels == "FER+ majority"


# ---------------------------------------------------------------------------------------------
# The default-model rule


def verdict(gain: float, balanced_gain: float, p: float) -> ferplus.DefaultModelVerdict:
    return ferplus.DefaultModelVerdict(pd.DataFrame(), gain, balanced_gain, p, {}, 2.0, 0.01)


@pytest.mark.parametrize("gain, balanced_gain, p, default", [
    (2.0, 0.0, 0.009, "ferplus"), (1.99, 5.0, 1e-6, "fer2013"), (5.0, -0.1, 1e-6, "fer2013"), (5.0, 1.0, 0.01, "fer2013")])
def test_the_default_model_rule_needs_the_margin_the_paired_test_and_the_balance(gain, balanced_gain, p, default):
    assert verdict(gain, balanced_gain, p).default == default


def test_the_default_model_rule_scores_both_files_on_the_same_publictest_faces(ds, tmp_path):
    seven, eight = tiny_onnx(tmp_path), tiny_ferplus_onnx(tmp_path)
    found = ferplus.default_model_rule(seven, eight, ds)
    labels, reasons = ds.ferplus.majority(CLASS_NAMES)
    public = ds.usage == VAL
    assert list(found.table["faces"]) == [int((public & (labels >= 0)).sum())] * 2
    assert list(found.table["classes"]) == [7, 8] and sum(found.left_out.values()) == int((public & (labels < 0)).sum())
    assert found.table.loc[found.default, "default"] and found.table["default"].sum() == 1
    assert found.accuracy_gain == pytest.approx(found.table.loc["ferplus", "accuracy %"] -
                                                found.table.loc["fer2013", "accuracy %"], abs=0.011)
    assert found.summary().startswith(f"default: {found.default}. On ")


# ---------------------------------------------------------------------------------------------
# An 8-class model through the API and the CLI


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    return tiny_ferplus_onnx(tmp_path_factory.mktemp("eight"))


@pytest.fixture
def released_ferplus(eight, tmp_path, monkeypatch):
    """A checkout whose released FER+ model is the tiny 8-class one."""
    monkeypatch.setattr(model_file, "RELEASED_MODEL", tmp_path / "models" / "fer_champion.onnx")
    (tmp_path / "models").mkdir()
    shutil.copyfile(eight, tmp_path / "models" / "ferplus_champion.onnx")
    return tmp_path / "models" / "ferplus_champion.onnx"


def test_the_api_takes_the_classes_from_the_model_file(eight, ds, tmp_path):
    recognizer = ExpressionRecognizer(eight, threads=1)
    assert recognizer.class_names == FERPLUS_CLASS_NAMES
    face_file = tmp_path / "face.png"
    cv2.imwrite(str(face_file), ds.pixels[0])
    (face,) = recognizer.predict(face_file)
    assert list(face.probabilities) == list(FERPLUS_CLASS_NAMES) and face.label in FERPLUS_CLASS_NAMES
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    table = results_table(recognizer.predict_many([face_file], progress=False), recognizer.class_names)
    assert list(table.columns[-8:]) == list(FERPLUS_CLASS_NAMES) and table["contempt"].notna().all()
    with pytest.raises(ValueError, match="not one per class \\(7: angry"):
        ExpressionRecognizer(model_file.OnnxClassifier(eight).predict, class_names=None).predict(face_file)


def test_a_released_model_by_name(released_ferplus, tmp_path):
    recognizer = ExpressionRecognizer("ferplus")
    assert recognizer.model_path == released_ferplus and recognizer.class_names == FERPLUS_CLASS_NAMES
    (tmp_path / "models" / "ferplus_champion.onnx").unlink()
    with pytest.raises(model_file.ModelFileError, match="the released ferplus model is not in this checkout yet"):
        ExpressionRecognizer("ferplus")


def test_the_cli_runs_an_eight_class_model_by_name_and_writes_its_columns(released_ferplus, ds, tmp_path, capsys):
    face_file = tmp_path / "face.png"
    cv2.imwrite(str(face_file), ds.pixels[1])
    assert cli.main(["predict", str(face_file), "--model", "ferplus", "--format", "csv"]) == cli.EXIT_OK
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0])[-8:] == list(FERPLUS_CLASS_NAMES) and rows[0]["label"] in FERPLUS_CLASS_NAMES
    assert sum(float(rows[0][c]) for c in FERPLUS_CLASS_NAMES) == pytest.approx(1, abs=1e-4)
    clip, frames, video = tmp_path / "clip.mp4", tmp_path / "frames.csv", tmp_path / "annotated.mp4"
    samples.make_test_clip(8, no_face_frames=2, path=clip)
    assert cli.main(["run", "--source", str(clip), "--model", "ferplus", "--csv", str(frames), "--out", str(video),
                     "--no-show"]) == cli.EXIT_OK
    table = pd.read_csv(frames)
    assert list(table.columns[-8:]) == list(FERPLUS_CLASS_NAMES) and table["label"].iloc[-1] in FERPLUS_CLASS_NAMES
    ax = plot_timeline(table)
    assert [line.get_label() for line in ax.get_lines()] == list(FERPLUS_CLASS_NAMES)


def test_the_app_offers_the_released_models_and_shows_the_eight_classes(released_ferplus, eight, ds, monkeypatch):
    assert app.model_choices() == ["ferplus"], "only the released models present"
    shutil.copyfile(RELEASED, released_ferplus.with_name("fer_champion.onnx"))
    monkeypatch.setattr(model_file, "DEFAULT_MODEL", "fer2013")
    assert app.model_choices() == ["fer2013", "ferplus"], "the default first"
    monkeypatch.setattr(model_file, "DEFAULT_MODEL", "ferplus")
    assert app.model_choices() == ["ferplus", "fer2013"] and app.model_path("ferplus") == released_ferplus
    analysis = app.analyse(app.Photo("face", cv2.cvtColor(ds.pixels[2], cv2.COLOR_GRAY2RGB), (48, 48)),
                           app.make_recognizer(model_file.OnnxClassifier(app.find_app_model("ferplus"))))
    (face,) = analysis.faces
    assert list(app.probability_table(face).expression) == list(FERPLUS_CLASS_NAMES)
    assert list(face.as_dict()["probabilities"]) == list(FERPLUS_CLASS_NAMES) and face.label in FERPLUS_CLASS_NAMES
    assert app.annotate(analysis).ndim == 3
    explained = app.explain_face(face.crop, "Occlusion", model_file.OnnxClassifier(eight), FERPLUS_CLASS_NAMES.index("contempt"))
    assert "probability of 'contempt'" in explained["caption"]

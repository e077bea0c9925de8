"""Notebook 06: softmax-average ensembles, their records and the choice of their members."""

import numpy as np
import pytest

from fer_utils import ensemble
from fer_utils.config import TEST, VAL
from fer_utils.notebook import start


def test_average_probabilities_by_hand():
    a = np.array([[0.7, 0.1, 0.1, 0.1, 0, 0, 0], [0, 0, 0, 0, 0, 0.5, 0.5]])
    b = np.array([[0.1, 0.7, 0.1, 0.1, 0, 0, 0], [0, 0, 0, 0, 0, 1.0, 0.0]])
    np.testing.assert_allclose(ensemble.average_probabilities([a, b]), (a + b) / 2)
    weighted = ensemble.average_probabilities([a, b], weights=[3, 1])
    np.testing.assert_allclose(weighted, 0.75 * a + 0.25 * b)
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0)
    assert weighted[1].argmax() == 5 and weighted[0].argmax() == 0
    # Functions of the faces and arrays mix; a zero weight drops a member.
    faces = np.zeros((2, 48, 48), np.uint8)
    np.testing.assert_allclose(ensemble.average_probabilities([lambda x: a, b], faces, weights=[0, 1]), b)
    np.testing.assert_allclose(ensemble.ensemble_predictor([lambda x: a, lambda x: b])(faces), (a + b) / 2)
    with pytest.raises(ValueError, match="pass the faces"):
        ensemble.average_probabilities([lambda x: a])
    with pytest.raises(ValueError, match="weights"):
        ensemble.average_probabilities([a, b], weights=[1, -1])
    with pytest.raises(ValueError, match="shapes"):
        ensemble.average_probabilities([a, b[:1]])


def test_ensemble_gain_names_the_best_member_per_class():
    import pandas as pd

    table = pd.DataFrame({"angry": [0.2, 0.4, 0.5], "happy": [0.8, 0.7, 0.75]}, index=["ros", "smote", "ensemble"])
    gain = ensemble.ensemble_gain(table, "ensemble")
    assert gain.loc["angry", "best member"] == "smote" and gain.loc["angry", "gain over best"] == pytest.approx(0.1)
    assert bool(gain.loc["angry", "beats every member"]) and not bool(gain.loc["happy", "beats every member"])


def test_ensemble_record(tmp_path):
    run = start("06_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    record = {"run": "06_vgg_member_smoke", "sampling": "ros", "n_params": 10, "model_file": "models/member.keras",
              "train": {"epochs": 3, "seconds": 12.3, "backend": "tensorflow", "cpu": "A", "precision": "float32"}}
    members = [record, dict(record, run="other", sampling="x", n_params=5,
                            train=dict(record["train"], cpu="B"))]
    proba = {split: np.full(((run.dataset.usage == split).sum(), 7), 1 / 7) for split in (VAL, TEST)}
    pair = ensemble.write_ensemble_record(run.store, run.dataset, "pair", members, proba, weights=[1, 1])
    assert pair["model"] == "ensemble" and pair["run"] == "06_ensemble_pair_smoke"
    assert pair["params"]["members"] == [record["run"], "other"]
    assert pair["train"]["seconds"] == pytest.approx(2 * record["train"]["seconds"], abs=0.2)
    assert pair["train"]["epochs"] == 6  # the members' epochs added up
    assert (pair["train"]["backend"], pair["train"]["cpu"], pair["train"]["device"]) == ("tensorflow", "A | B", "unknown")
    assert (run.metrics_dir / "06_ensemble_pair_smoke.json").exists()


def test_best_run_per_notebook_skips_leaky_derived_and_missing_models(tmp_path):
    def record(run, notebook, accuracy, **extra):
        path = tmp_path / f"{run}.keras"
        path.write_text("x")
        return {"run": run, "notebook": notebook, "model_file": str(path), "dataset": {"fingerprint": "f"},
                "metrics": {VAL: {"accuracy": accuracy}}, **extra}

    records = [record("a1", "03_x", 0.5), record("a2", "03_x", 0.6), record("b1", "04_y", 0.4),
               record("leak", "11_z", 0.99, leaky=True), record("c1", "06_e", 0.7),
               dict(record("al", "07_a", 0.9), dataset={"fingerprint": "f", "derived": {"fingerprint": "g"}}),
               dict(record("gone", "08_b", 0.95), model_file=str(tmp_path / "missing.keras"))]
    chosen = ensemble.best_run_per_notebook(records, "f", exclude_notebooks=["06_e"])
    assert [r["run"] for r in chosen] == ["a2", "b1"]

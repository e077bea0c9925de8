"""The run store: which saved runs are reused, which are picked, and what finishing a run leaves."""

import json

import numpy as np
import pytest

from fer_utils import export, models
from fer_utils.config import CLASS_NAMES
from fer_utils.runs import RunRecord, RunStore, select_for_export


@pytest.fixture(scope="module")
def small_model():
    return models.fully_connected((4,))


def record(run, acc, fp, path, **extra):
    return {"run": run, "model_file": str(path), "dataset": {"fingerprint": fp}, "params": {"lr": 1},
            "train": {"seconds": 60.0, "epochs": 1, "stopped": "completed"},
            "metrics": {"PublicTest": {"accuracy": acc}, "PrivateTest": {"accuracy": 1 - acc}}, **extra}


def test_best_uses_publictest_and_existing_models(tmp_path, small_model):
    model_file = tmp_path / "a.keras"
    small_model.save(model_file)
    for rec in (record("good", 0.6, "f1", model_file), record("better_but_missing", 0.7, "f1", tmp_path / "x.keras"),
                record("other_data", 0.9, "f2", model_file), record("worse", 0.5, "f1", model_file),
                record("leaky", 0.95, "f1", model_file, leaky=True)):
        (tmp_path / f"{rec['run']}.json").write_text(json.dumps(rec))
    store = RunStore(tmp_path, tmp_path)
    assert store.best("f1")["run"] == "good"
    assert store.best()["run"] == "other_data"
    assert [r["run"] for r in store.trained("f1")] == ["good", "worse"]
    assert RunStore(tmp_path / "none", tmp_path).best() is None and RunStore(tmp_path / "none", tmp_path).records() == []
    assert export.load_keras_model(store.best("f1")).count_params() == small_model.count_params()


def test_existing_reuses_only_the_same_data_and_settings(tmp_path, small_model, capsys):
    store = RunStore(tmp_path / "metrics", tmp_path / "models")
    saved = record("03_x", 0.5, "f1", store.model_path("03_x"), dataset={"fingerprint": "f1", "derived": {"fingerprint": "d1"}})
    store.metrics_path("03_x").parent.mkdir(parents=True)
    store.models_dir.mkdir()
    store.metrics_path("03_x").write_text(json.dumps(saved))
    same = {"fingerprint": "f1", "derived": {"fingerprint": "d1"}}
    assert store.existing("03_x", {"lr": 1}, same) is None  # no model file yet
    small_model.save(store.model_path("03_x"))
    assert store.existing("03_x", {"lr": 1}, same)["run"] == "03_x"
    assert "loaded, not retrained" in capsys.readouterr().out
    assert store.existing("03_x", {"lr": 2}, same) is None  # other settings
    assert store.existing("03_x", {"lr": 1}, {"fingerprint": "f2", "derived": {"fingerprint": "d1"}}) is None
    assert store.existing("03_x", {"lr": 1}, {"fingerprint": "f1"}) is None  # not the derived data
    assert RunStore(store.metrics_dir, store.models_dir, force=True).existing("03_x", {"lr": 1}, same) is None
    # a time cap guards a run without defining it: another cap is the same run
    assert store.existing("03_x", {"lr": 1, "time_budget_s": 60}, same)["run"] == "03_x"


def test_a_seed_other_than_42_is_part_of_the_run_name():
    store = RunStore("m", "m", notebook="12_champion", profile="cpu")
    assert store.run_id("champion_cnn", "none") == store.run_id("champion_cnn", "none", seed=42) == \
        "12_champion_cnn_none_cpu"  # the release's run keeps its name
    assert store.run_id("champion_cnn", "none", seed=43) == "12_champion_cnn_none_seed43_cpu"


def test_finish_writes_the_record_and_drops_the_resumable_state(tmp_path, capsys):
    store = RunStore(tmp_path / "metrics", tmp_path / "models", force=True)
    work = store.workdir("03_y")
    work.mkdir(parents=True)
    (work / "history.csv").write_text("epoch\n0\n")
    assert not store.workdir("03_y").exists()  # forced: a fresh start, not a resume
    work.mkdir()
    store.finish(record("03_y", 0.25, "f1", "m.keras"), work)
    assert json.loads(store.metrics_path("03_y").read_text())["run"] == "03_y" and not work.exists()
    assert "PublicTest 25.00%, PrivateTest 75.00%" in capsys.readouterr().out
    store.finish(record("03_z", 0.25, "f1", "m.keras"), work, summary="custom line")
    assert capsys.readouterr().out == "custom line\n"


def test_select_for_export_prefers_the_champion_then_public_test(tmp_path):
    def run(name, model, acc, fingerprint="abc", with_file=True):
        path = tmp_path / f"{name}.keras"
        if with_file:
            path.write_text("x")
        return record(name, acc, fingerprint, path, model=model)

    records = [run("a", "cnn_small", 0.60), run("b", "cnn_medium", 0.65), run("c", "champion_vgg", 0.62),
               run("d", "fc", 0.40), run("e", "cnn_big", 0.99, with_file=False),
               run("f", "cnn_other_data", 0.98, fingerprint="zzz")]
    chosen = select_for_export(records, n_others=2, fingerprint="abc")
    assert [r["run"] for r in chosen] == ["c", "b", "a"]
    no_champion = [r for r in records if r["run"] != "c"]
    assert [r["run"] for r in select_for_export(no_champion, 1, fingerprint="abc")] == ["b", "a"]
    assert select_for_export([], 2) == []


def test_run_record_reads_the_metrics_file_by_name():
    per_class = {c: {"precision": 0.5, "recall": i / 10, "f1": 0.4, "support": 10} for i, c in enumerate(CLASS_NAMES)}
    raw = record("03_cnn_small_smote_cpu", 0.61, "f1", "models/x.keras", model="cnn_small", sampling="smote",
                 history={"val_accuracy": [0.5, 0.61]})
    raw["metrics"]["PrivateTest"].update(per_class=per_class, balanced_accuracy=0.5, confusion=np.eye(7).tolist())
    run = RunRecord(raw)
    assert run == raw and json.loads(json.dumps(run)) == raw  # still the file's JSON
    assert run.score("accuracy", "PrivateTest") == pytest.approx(39.0) and run.score("accuracy", "PublicTest") == pytest.approx(61.0)
    assert run.score("balanced_accuracy", "PrivateTest") == 50.0
    with pytest.raises(TypeError):
        run.score("accuracy")  # the split is always named
    assert run.per_class("recall")["fear"] == pytest.approx(0.2) and list(run.per_class().index) == list(CLASS_NAMES)
    assert run.per_class_table().loc["disgust", "support"] == 10 and run.confusion().shape == (7, 7)
    assert run.label == "small CNN, SMOTE" and run.epochs == 1 and run.minutes == 1.0
    assert run.history["val_accuracy"][-1] == 0.61 and str(run.model_path).endswith("models/x.keras")


def test_run_record_names_how_and_where_it_trained():
    raw = record("12_x", 0.6, "f1", "m.keras", dataset={"fingerprint": "f1"})
    raw["train"].update(n_train=28709, images_per_second=331.5, precision="mixed_bfloat16", device="cpu (2 cores)",
                        cpu="Test CPU")
    run = RunRecord(raw)
    assert (run.n_train, run.faces_per_second, run.training_precision) == (28709, 331.5, "mixed_bfloat16")
    assert (run.device, run.cpu, run.stopped) == ("cpu (2 cores)", "Test CPU", "completed")
    assert run.trained_on("f1") and not run.trained_on("f2")
    derived = RunRecord(record("07_x", 0.6, "f1", "m.keras", dataset={"fingerprint": "f1", "derived": {"fingerprint": "d"}}))
    assert not derived.trained_on("f1")  # aligned faces are not the dataset itself


def test_tabulated_runs_are_reused_from_their_metrics_alone(tmp_path):
    store = RunStore(tmp_path / "metrics", tmp_path / "models")
    store.save(record("12_ablation", 0.5, "f1", store.model_path("12_ablation")))
    assert store.existing("12_ablation", {"lr": 1}, {"fingerprint": "f1"}) is None  # its model is gone
    assert store.existing("12_ablation", {"lr": 1}, {"fingerprint": "f1"}, needs_model=False)["run"] == "12_ablation"
    lenient = RunStore(store.metrics_dir, store.models_dir, metrics_suffice=True)  # what reuse_metrics=True gives
    assert lenient.existing("12_ablation", {"lr": 1}, {"fingerprint": "f1"})["run"] == "12_ablation"
    assert lenient.existing("12_ablation", {"lr": 2}, {"fingerprint": "f1"}) is None  # settings still count


def test_a_notebook_run_hands_its_reuse_rule_to_its_store(tmp_path):
    from fer_utils.notebook import start

    run = start("03_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False, reuse_metrics=True)
    assert run.store.metrics_suffice and not start("03_test", "smoke", "synthetic", str(tmp_path / "r2"), seed=0,
                                                   verbose=False).store.metrics_suffice


def test_every_committed_record_says_where_it_ran():
    """The ledger: each metrics file in reports/ names its backend, device, CPU, precision and epochs."""
    from fer_utils.config import REPORTS_DIR

    store = RunStore(REPORTS_DIR / "metrics", REPORTS_DIR.parent / "models")
    records = store.records()
    assert records, "no committed metrics files"
    for r in records:
        missing = [k for k in ("backend", "device", "cpu", "precision", "epochs") if r["train"].get(k) in (None, "")]
        assert not missing, f"{r.run_id}: train lacks {missing}"


def test_a_retrain_keeps_the_record_it_replaces(tmp_path):
    store = RunStore(tmp_path / "metrics", tmp_path / "models")
    first = record("12_c", 0.60, "f1", "m.keras", created="2026-12-01T12:00:00+00:00")
    store.save(first)
    store.save(dict(first, created="2026-12-01T13:00:00+00:00"))  # re-saved, same training and scores
    kept = {**first["metrics"], "PublicTest": {**first["metrics"]["PublicTest"], "predicted": "0123"}}
    store.save(dict(first, metrics=kept, created="2026-12-01T13:00:00+00:00"))  # now with per-face predictions
    assert store.superseded() == [] and store.record("12_c")["created"] == first["created"]
    second = dict(record("12_c", 0.62, "f1", "m.keras"), created="2026-12-02T04:00:00+00:00")
    store.save(second)
    assert store.record("12_c")["created"] == second["created"]
    (old,) = store.superseded("12_c")
    assert old.run_id == "12_c@2026-12-01T12-00-00+00-00" and old["superseded_by"] == second["created"]
    assert old.score("accuracy", "PublicTest") == pytest.approx(60.0)
    assert [r.run_id for r in store.records()] == ["12_c"]  # tables read only the current records


def test_the_first_training_of_the_release_is_in_the_ledger():
    from fer_utils.config import REPORTS_DIR

    store = RunStore(REPORTS_DIR / "metrics", REPORTS_DIR.parent / "models")
    (first,) = store.superseded("12_champion_cnn_none_cpu")
    current = store.record("12_champion_cnn_none_cpu")
    assert first["params"] == current["params"] and first["train"]["cpu"] != current["train"]["cpu"]

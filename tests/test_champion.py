"""The champion: its size limits, the recipe's profiles, the cost counter, TTA reporting."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fer_utils import champion, config, evaluate, export, models, runs, train
from fer_utils.synthetic import make_synthetic_fer
from fer_utils.notebook import start
from fer_utils.train import TrainConfig, train_and_evaluate

keras = config.import_keras()


def test_champion_fits_the_parameter_and_cost_limits():
    model = models.build(champion.MODEL_NAME)
    assert model.count_params() <= 2_000_000
    # the 48x48 stem conv (1->32) plus three stages of two 3x3 convs (48, 96, 192 filters) and the head
    expected = (48 * 48 * 32 * 9 * 1
                + 24 * 24 * 9 * (32 * 48 + 48 * 48) + 12 * 12 * 9 * (48 * 96 + 96 * 96)
                + 6 * 6 * 9 * (96 * 192 + 192 * 192) + 192 * 256 + 256 * 7)
    assert models.multiply_adds(model) == expected


def test_recipe_per_profile():
    cpu, smoke = champion.champion_config(config.get_profile("cpu")), champion.champion_config(config.get_profile("smoke"))
    assert cpu.schedule == "cosine" and cpu.augment == "standard" and cpu.label_smoothing == pytest.approx(0.1)
    assert champion.champion_config(config.get_profile("cpu"), schedule="cosine_budget").schedule == "cosine_budget"
    assert cpu.patience is None  # the cosine schedule needs its last epochs
    # the budget is the epochs; the cap only guards against a machine far slower than any measured
    # (336-780 faces/s for 28,709 Training faces): it must not stop the recipe on those
    assert cpu.time_budget_s is not None and cpu.time_budget_s >= cpu.epochs * 28_709 / 336
    assert cpu.crop == champion.CROP and cpu.precision == "auto" and cpu.tta == "flip"
    assert cpu.batch_size == 256 and cpu.learning_rate == pytest.approx(2e-3)  # 1e-3 at batch 128, scaled
    assert smoke.epochs == 1 and champion.champion_config(config.get_profile("cpu"), epochs=3).epochs == 3


def test_throughput_is_measured_per_model_and_setting():
    settings = {"48 px": TrainConfig(batch_size=8, augment="standard"),
                "40 px crops": TrainConfig(batch_size=16, augment="standard", crop=40)}
    table = champion.measure_throughput({"tiny": lambda **kw: models.build("cnn_small", **kw)}, settings, steps=2, warmup=1)
    assert list(table["batch size"]) == [8, 16] and list(table["input"]) == ["48 px", "40 px"]
    assert (table["faces/s"] > 0).all() and set(table["precision"]) == {"float32"}
    assert table["parameters"].iloc[0] == models.build("cnn_small").count_params()


def test_prior_correction_layer_and_the_choice_of_tau():
    y_train = np.repeat(np.arange(7), [40, 5, 40, 100, 50, 30, 60])
    proba = np.random.default_rng(0).dirichlet(np.ones(7), 50).astype("float32")
    weights = champion.prior_weights(y_train, 0.7)
    expected = proba * weights / (proba * weights).sum(axis=1, keepdims=True)
    layer = models.PriorCorrection(weights)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(proba)), expected, rtol=1e-5)
    np.testing.assert_allclose(champion.prior_weights(y_train, 0.0), 1.0)
    frontier = pd.DataFrame({"accuracy": [60.0, 59.8, 59.0, 55.0], "balanced accuracy": [50.0, 52.0, 55.0, 58.0]},
                            index=pd.Index([0.0, 0.5, 1.0, 1.5], name="tau"))
    assert champion.choose_tau(frontier, balanced_floor=52.0) == 0.5  # the most accurate above the floor
    assert champion.choose_tau(frontier, balanced_floor=50.0) == 0.0
    assert champion.choose_tau(frontier, balanced_floor=60.0) == 1.5  # none reaches it: the most balanced
    table = champion.prior_frontier(proba, np.arange(50) % 7, y_train, taus=[0.0, 1.0])
    assert list(table.index) == [0.0, 1.0] and table.index.name == "tau"


def test_the_released_candidate_is_what_notebook_09_exports(tmp_path):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    cfg = TrainConfig(epochs=1, batch_size=64, crop=40, tta="flip")
    record = train_and_evaluate(run.store, run.dataset, "champion_cnn", lambda **kw: models.build("cnn_small", **kw), cfg)
    released = champion.release_candidate(run.store, run.dataset, record, tau=1.0)
    assert released["release"] is True and released["params"]["prior_correction_tau"] == 1.0
    assert released["train"] == record["train"] and released["derived_from"] == record["run"]
    # its metrics are the saved model's, correction included
    model = export.load_keras_model(run.models_dir / f"{released['run']}.keras")
    x, y = run.dataset.split("PrivateTest")
    assert released["metrics"]["PrivateTest"]["accuracy"] == pytest.approx(
        float((model.predict(x, verbose=0).argmax(1) == y).mean()))
    capped = {**record, "train": {**record["train"], "stopped": "time budget (60 s)", "capped": True}}
    with pytest.raises(ValueError, match="never released"):
        champion.release_candidate(run.store, run.dataset, capped, tau=1.0)
    # notebook 09 exports it first, whatever the PublicTest order
    chosen = runs.select_for_export([record, released], n_others=1)
    assert chosen[0]["run"] == released["run"]
    # a candidate the rule turned down is filed, kept as its training's choice, and never exported first
    declined = champion.release_candidate(run.store, run.dataset, record, tau=1.0, release=False)
    assert declined["release"] is False and champion.earlier_release(run.store, record)["run"] == declined["run"]
    better = {**declined, "metrics": {**declined["metrics"], "PublicTest": {**declined["metrics"]["PublicTest"], "accuracy": 1.0}}}
    assert runs.select_for_export([better, released], n_others=1)[0]["run"] == released["run"]
    # the views can change at release (chosen after training): ten crops inside the saved graph
    ten = champion.release_candidate(run.store, run.dataset, record, tau=0.0, tta="ten_crop")
    assert ten["params"]["tta"] == "ten_crop" and record["params"]["tta"] == "flip"
    inside = export.load_keras_model(run.models_dir / f"{ten['run']}.keras")
    net = champion.network_of(inside)
    expected = train.predict_proba(train.inference_model(net, 40, "ten_crop"), x)
    np.testing.assert_allclose(inside.predict(x, verbose=0), expected, atol=1e-5)


def test_a_fresh_clone_rebuilds_the_champion_from_the_released_onnx(tmp_path):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    cfg = TrainConfig(epochs=1, batch_size=64, crop=40, tta="flip")
    record = champion.train_champion(run.store, run.dataset, cfg, release=tmp_path / "none.onnx")
    released = champion.release_candidate(run.store, run.dataset, record, tau=0.5)
    info = {"parity": {"max_abs_diff": 0.0, "argmax_agreement": 1.0}, "nodes_simplified": 0, "onnx_mb": 3.0}
    onnx_file, _ = export.release_model(export.export_onnx(evaluate.model_path(released), tmp_path / "r.onnx"),
                                        released, info, tmp_path / "release")
    assert export.source_run(onnx_file) == released["run"]
    trained_file = evaluate.model_path(record)
    x = run.dataset.split("PrivateTest")[0]
    expected = train.predict_proba(export.load_keras_model(trained_file), x)
    trained_file.unlink()  # a fresh clone: metrics files and the ONNX release, no Keras models
    # a release that is not this network behind these views is refused: nothing is written
    assert champion.rebuild_from_release(run.store, run.dataset, record["run"], replace(cfg, crop=None), onnx_file) is None
    assert not trained_file.exists()
    again = champion.train_champion(run.store, run.dataset, cfg, release=onnx_file)
    assert again["train"] == record["train"]  # loaded, not retrained
    np.testing.assert_allclose(train.predict_proba(export.load_keras_model(trained_file), x), expected, atol=1e-5)
    # loaded, it keeps the views and tau of its release; a new training of the same run does not
    assert champion.earlier_release(run.store, again)["params"]["prior_correction_tau"] == 0.5
    assert champion.earlier_release(run.store, {**again, "train": {**again["train"], "seconds": 1.0}}) is None


def test_the_views_are_chosen_on_publictest_within_the_latency_limit(tmp_path):
    ds = make_synthetic_fer(200, seed=0)
    net = train.inference_model(models.build("cnn_small", image_size=40), 40, "flip")
    latency = champion.tta_latency(net, 40, ds.split("PublicTest")[0], tmp_path, repeats=5,
                                   calibration_faces=ds.split("Training")[0][:64])
    assert list(latency.index) == ["none", "flip", "ten_crop"] and (latency > 0).all().all()
    assert list(latency.columns) == ["ONNX fp32 ms/face, batch 1", "ONNX int8 ms/face, batch 1"]
    assert (tmp_path / "tta_flip_int8.onnx").exists()
    views = pd.DataFrame({"accuracy": [60.0, 61.0, 62.0]},
                         index=pd.MultiIndex.from_tuples([(k, "PublicTest") for k in ("none", "flip", "ten_crop")]))
    ms = pd.DataFrame({"fp32": [0.3, 1.2, 1.4], "int8": [0.2, 0.9, 1.3]}, index=["none", "flip", "ten_crop"])
    assert champion.choose_tta(views, ms, limit_ms=1.0) == "flip"  # within the limit as int8 only
    assert champion.choose_tta(views, ms[["fp32"]], limit_ms=1.0) == "none"
    assert champion.choose_tta(views, ms, limit_ms=2.0) == "ten_crop"
    assert champion.choose_tta(views, ms, limit_ms=0.1) == "none"  # none fits: the fastest


def test_the_release_rule_chooses_views_then_tau_on_publictest_or_keeps_an_earlier_choice(tmp_path):
    ds = make_synthetic_fer(200, seed=0)
    net = train.inference_model(models.build("cnn_small", image_size=40), 40, "flip")
    calibration = ds.split("Training")[0][:64]
    choice = champion.release_choice(net, ds, 40, tmp_path, calibration, latency_limit_ms=1e9, balanced_floor=0.0,
                                     kinds=("none", "flip"), repeats=3)
    public = choice.views.xs("PublicTest", level=1)["accuracy"]
    assert choice.tta == max(("none", "flip"), key=lambda k: public[k])  # no latency limit: the most accurate
    assert choice.views.filter(like="ms/face").notna().all().all()
    assert choice.tau == champion.choose_tau(choice.frontier, 0.0) and choice.frontier.index.name == "tau"
    with_views = train.inference_model(champion.network_of(net), 40, choice.tta)
    expected = champion.prior_frontier(train.predict_proba(with_views, ds.split("PublicTest")[0]),
                                       ds.split("PublicTest")[1], ds.split("Training")[1])
    pd.testing.assert_frame_equal(choice.frontier, expected)
    kept = champion.release_choice(net, ds, 40, tmp_path, calibration, kinds=("none", "flip"), repeats=3,
                                   earlier={"params": {"tta": "none", "prior_correction_tau": 0.3}})
    assert (kept.tta, kept.tau) == ("none", 0.3)


def test_the_fer_package_comparison_is_skipped_without_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fer" else real(name, *a))
    assert champion.fer_package_predictor() is None


def test_flip_tta_is_reported_beside_the_single_pass(tmp_path):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    record = train_and_evaluate(run.store, run.dataset, "cnn_small", lambda: models.build("cnn_small"),
                                TrainConfig(epochs=1, batch_size=64), report_flip_tta=True)
    assert record["params"]["report_flip_tta"] is True
    single, tta = record["metrics"], record["metrics_flip_tta"]
    assert set(single) == set(tta) == {"PublicTest", "PrivateTest", "PrivateTest_clean"}
    # the TTA metrics are those of the saved model's probabilities averaged with its mirrored faces'
    model = keras.models.load_model(run.models_dir / "12_cnn_small_none_smoke.keras")
    x, y = run.dataset.split("PrivateTest")
    proba = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    assert tta["PrivateTest"]["accuracy"] == pytest.approx(float((proba.argmax(1) == y).mean()))
    table = champion.with_and_without_tta(record)
    assert table.loc[("flip TTA", "PrivateTest"), "accuracy"] == pytest.approx(100 * tta["PrivateTest"]["accuracy"], abs=0.01)


def test_the_champion_exports_to_onnx_with_the_same_outputs(tmp_path):
    model = models.build(champion.MODEL_NAME)
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    path = export.export_onnx(model, tmp_path / "champion.onnx")
    np.testing.assert_allclose(export.OnnxClassifier(path).predict(faces), model.predict(faces, verbose=0), atol=1e-5)


def test_literature_table_puts_ours_beside_the_published_figures():
    table = champion.literature_table({"ours": 60.0})
    assert table["PrivateTest accuracy %"].is_monotonic_decreasing
    assert (table["source"] == "this project").sum() == 1 and len(table) == 1 + len(champion.LITERATURE)


def test_ablations_train_each_row_and_are_read_back_without_their_models(tmp_path):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    rows = ["recipe as released", "cutmix", "random erasing (p 0.25)"]
    table = champion.train_ablations(run.store, run.dataset, run.profile, rows)
    assert list(table.index) == rows and table.loc["recipe as released", "PublicTest gain (points)"] == 0
    assert (table["epochs"] == 1).all() and (table["faces/s"] > 0).all()
    runs = {r["run"]: r for r in run.store.records()}
    assert {r["params"].get("mix") for r in runs.values()} == {None, "cutmix"}
    assert {r["params"]["schedule"] for r in runs.values()} == {"cosine"}  # their budget is epochs, not the cap
    for path in run.models_dir.glob("*.keras"):
        path.unlink()  # another machine: metrics files only
    again = champion.train_ablations(run.store, run.dataset, run.profile, rows)
    assert {r["run"]: r["created"] for r in run.store.records()} == {k: r["created"] for k, r in runs.items()}
    pd.testing.assert_frame_equal(again, table)


def test_seeds_are_runs_of_their_own_kept_as_onnx_and_rebuilt_on_a_fresh_clone(tmp_path, capsys):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    first = champion.train_seeds(run.store, run.dataset, run.profile, [42, 7], release=tmp_path / "none.onnx")
    assert [r.run_id for r in first] == ["12_champion_cnn_none_smoke", "12_champion_cnn_none_seed7_smoke"]
    assert [r["params"]["seed"] for r in first] == [42, 7]
    files = [champion.seed_file(run.store, r.run_id) for r in first]
    assert all(f.exists() for f in files)
    x = run.dataset.split("PublicTest")[0]
    np.testing.assert_allclose(export.OnnxClassifier(files[1]).predict(x),
                               train.predict_proba(export.load_keras_model(first[1]), x), atol=1e-4)
    for r in first:
        r.model_path.unlink()  # a fresh clone: metrics files and the seeds' ONNX files
    again = champion.train_seeds(run.store, run.dataset, run.profile, [42, 7], release=tmp_path / "none.onnx")
    assert [r["train"] for r in again] == [r["train"] for r in first]  # rebuilt and loaded, not retrained
    assert capsys.readouterr().out.count("Keras model rebuilt from") == 2
    table = evaluate.seed_table(again)
    assert list(table.index) == ["seed 42", "seed 7", "mean over 2 seeds", "standard deviation"]
    public = [100 * r["metrics"]["PublicTest"]["accuracy"] for r in again]
    assert table.loc["mean over 2 seeds", "PublicTest accuracy %"] == pytest.approx(np.mean(public), abs=0.01)
    assert table.loc["standard deviation", "PublicTest accuracy %"] == pytest.approx(np.std(public, ddof=1), abs=0.01)
    low, high = map(float, table.loc["seed 7", "PrivateTest 95% interval"].split("-"))
    assert low < table.loc["seed 7", "PrivateTest accuracy %"] < high
    capped = {**again[1], "params": {**again[1]["params"], "seed": 8},
              "train": {**again[1]["train"], "capped": True, "stopped": "time budget (60 s)"}}
    with_capped = evaluate.seed_table([*again, runs.RunRecord(capped)])
    assert "mean over 2 seeds" in with_capped.index and not with_capped.loc["seed 8", "counted"]

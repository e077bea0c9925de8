"""The shared fit helper: learns, selects on PublicTest, resumes, respects budgets, distributes."""

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fer_utils import config
from fer_utils.config import TRAIN, VAL
from fer_utils.notebook import start
from fer_utils.runs import RunStore
from fer_utils.synthetic import make_synthetic_fer
from fer_utils.train import COSINE_FLOOR, TrainConfig, cosine_learning_rate, fit, train_and_evaluate

keras = config.import_keras()


def tiny_cnn():
    layers = keras.layers
    inputs = keras.Input((48, 48))
    x = layers.Rescaling(1 / 255)(layers.Reshape((48, 48, 1))(inputs))
    for filters in (8, 16):
        x = layers.MaxPooling2D()(layers.Conv2D(filters, 3, activation="relu")(x))
    outputs = layers.Dense(7, activation="softmax")(layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def faces():
    ds = make_synthetic_fer(700, seed=2)
    return ds.split(TRAIN) + ds.split(VAL)


class Interrupt(keras.callbacks.Callback):
    """Simulates a crash after the given epoch (after the backup was written)."""

    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_fit_resumes_after_an_interruption(faces, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=64, patience=None, augment="standard")
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_cnn, *faces, cfg, tmp_path, verbose=0, callbacks=[Interrupt(after_epoch=1)])
    assert (tmp_path / "backup").exists()
    result = fit(tiny_cnn, *faces, cfg, tmp_path, verbose=0)
    assert result.resumed_from_epoch == 2
    assert result.epochs == 4 and len(result.history["val_accuracy"]) == 4
    assert result.stopped == "completed"
    # The returned model is the best PublicTest epoch.
    x_val, y_val = faces[2], faces[3]
    accuracy = (result.model.predict(x_val, verbose=0).argmax(1) == y_val).mean()
    assert accuracy == pytest.approx(max(result.history["val_accuracy"]), abs=1e-6)


def test_time_budget_and_early_stopping(faces, tmp_path):
    budget = fit(tiny_cnn, *faces, TrainConfig(epochs=5, batch_size=64, time_budget_s=1e-3), tmp_path / "a", verbose=0)
    assert budget.epochs == 1 and budget.stopped.startswith("time budget") and budget.capped
    assert budget.summary(len(faces[1]))["capped"] is True
    never_improves = TrainConfig(epochs=20, batch_size=64, learning_rate=0.0, patience=2)
    early = fit(tiny_cnn, *faces, never_improves, tmp_path / "b", verbose=0)
    assert early.epochs == 3 and early.stopped.startswith("early stopping") and not early.capped


def test_class_weights_and_label_smoothing_run(faces, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=64, label_smoothing=0.1, class_weight={i: 1.0 + i for i in range(7)},
                      schedule="cosine", optimizer="adamw")
    result = fit(tiny_cnn, *faces, cfg, tmp_path, verbose=0)
    assert np.isfinite(result.history["loss"][0])


class ZeroLoss(keras.losses.Loss):
    """A loss with no gradient: training with it must leave every weight where it was."""

    def call(self, y_true, y_pred):
        return keras.ops.sum(y_pred * 0.0, axis=-1)


def test_fit_uses_the_given_loss_and_trains_feature_rows(faces, tmp_path):
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(len(faces[1]), 12)).astype("float32"), faces[1],
                rng.normal(size=(len(faces[3]), 12)).astype("float32"), faces[3]]

    def head():
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(7, activation="softmax")])

    cfg = TrainConfig(epochs=2, batch_size=64, patience=None, augment="standard")  # never applied to features
    zero = fit(head, *features, cfg, tmp_path / "zero", verbose=0, loss=ZeroLoss())
    assert zero.history["loss"] == [0.0, 0.0]
    for trained, initial in zip(zero.model.get_weights(), head().get_weights()):
        np.testing.assert_array_equal(trained, initial)
    default = fit(head, *features, cfg, tmp_path / "ce", verbose=0)
    assert min(default.history["loss"]) > 1.0  # cross-entropy of 7 classes on noise features


def test_train_and_evaluate_loads_instead_of_retraining(tmp_path, capsys):
    """Outside any notebook: a dataset, a config and a store."""
    ds = make_synthetic_fer(config.get_profile("smoke").synthetic_size, seed=0)
    store = RunStore(tmp_path / "metrics", tmp_path / "models", notebook="03_test", profile="smoke")
    cfg = TrainConfig(epochs=1, batch_size=64)
    first = train_and_evaluate(store, ds, "tiny", tiny_cnn, cfg)
    metrics_file = store.metrics_dir / "03_tiny_none_smoke.json"
    assert metrics_file.exists() and (store.models_dir / "03_tiny_none_smoke.keras").exists()
    assert first["dataset"]["fingerprint"] == ds.fingerprint and first["notebook"] == "03_test"
    assert set(first["metrics"]) == {"PublicTest", "PrivateTest", "PrivateTest_clean"}
    stamp = metrics_file.stat().st_mtime_ns
    second = train_and_evaluate(store, ds, "tiny", tiny_cnn, cfg)
    assert "loaded, not retrained" in capsys.readouterr().out
    assert metrics_file.stat().st_mtime_ns == stamp and second == json.loads(metrics_file.read_text())
    # Filed under another notebook: found there, never forced.
    assert RunStore(store.metrics_dir, store.models_dir, "07_test", "smoke", force=True).under(
        "03_other").run_id("tiny", "none") == "03_tiny_none_smoke"
    assert train_and_evaluate(replace(store, notebook="07_test", force=True).under("03_test"), ds, "tiny", tiny_cnn,
                              cfg)["created"] == first["created"]
    # Other settings are another experiment: retrained.
    third = train_and_evaluate(store, ds, "tiny", tiny_cnn, TrainConfig(epochs=1, batch_size=32))
    assert third["params"]["batch_size"] == 32 and metrics_file.stat().st_mtime_ns != stamp


def test_fit_under_mirrored_strategy_with_two_logical_cpus(tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from fer_utils import models
        from fer_utils.synthetic import make_synthetic_fer
        from fer_utils.train import TrainConfig, fit
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        ds = make_synthetic_fer(300, seed=0)
        result = fit(lambda: models.build("fc_2304_256_512_7"), *ds.split("Training"), *ds.split("PublicTest"),
                     TrainConfig(epochs=2, batch_size=32), r"{tmp_path}", strategy=strategy, verbose=0)
        assert strategy.num_replicas_in_sync == 2
        print("replicas", strategy.num_replicas_in_sync, "epochs", result.epochs, "loss", result.history["loss"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 epochs 2" in done.stdout


def test_fit_refuses_a_batch_that_replicas_cannot_share_evenly(faces, tmp_path):
    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match="batch_size 33 must be a multiple of the strategy's 2 replicas"):
        fit(tiny_cnn, *faces[:2], *faces[2:4], TrainConfig(epochs=1, batch_size=33), tmp_path, strategy=TwoReplicas())


def test_epoch_size_fixes_the_work_per_epoch(faces, tmp_path):
    class CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            CountBatches.batches += 1

    cfg = TrainConfig(epochs=2, batch_size=50, epoch_size=100, patience=None)
    fit(tiny_cnn, *faces, cfg, tmp_path, verbose=0, callbacks=[CountBatches()])
    assert CountBatches.batches == 4  # 2 epochs x 100 images / 50 per batch, whatever len(x_train)


def test_a_derived_dataset_keeps_the_source_fingerprint(tmp_path):
    from fer_utils import evaluate

    run = start("07_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    derived = run.dataset.subset(np.arange(len(run.dataset)))
    derived.pixels = 255 - derived.pixels  # stands in for aligned faces
    record = train_and_evaluate(run.store, derived, "tiny", tiny_cnn, TrainConfig(epochs=1, batch_size=64),
                                sampling="inverted", derived_from=run.dataset, derived_how="inverted pixels")
    assert record["dataset"]["fingerprint"] == run.dataset.fingerprint
    assert record["dataset"]["derived"] == {"fingerprint": derived.fingerprint, "how": "inverted pixels"}
    plain = train_and_evaluate(run.store, run.dataset, "tiny", tiny_cnn, TrainConfig(epochs=1, batch_size=64))
    runs = evaluate.trained_runs(evaluate.read_metrics(run.metrics_dir), run.dataset.fingerprint)
    assert [r["run"] for r in runs] == [plain["run"]]  # a model of derived data is not offered for the original


# ---------------------------------------------------------------------------------------------
# Crops, test-time views, precision, EMA, batch scaling (the fast path of notebook 12)


def tiny_cnn_any_size(image_size=48):
    layers = keras.layers
    inputs = keras.Input((image_size, image_size))
    x = layers.Rescaling(1 / 255)(layers.Reshape((image_size, image_size, 1))(inputs))
    x = layers.MaxPooling2D()(layers.Conv2D(8, 3, activation="relu")(x))
    outputs = layers.Dense(7, activation="softmax", dtype="float32")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="tiny_any_size")


def test_opt_in_settings_leave_the_params_of_existing_runs_alone():
    plain = TrainConfig(epochs=3)
    assert not {"crop", "precision", "ema_momentum", "tta"} & set(plain.params())
    fast = TrainConfig(epochs=3, crop=40, precision="auto", ema_momentum=0.99, tta="ten_crop")
    assert {k: fast.params()[k] for k in ("crop", "precision", "ema_momentum", "tta")} == \
        {"crop": 40, "precision": "auto", "ema_momentum": 0.99, "tta": "ten_crop"}
    with pytest.raises(ValueError, match="needs crop"):
        TrainConfig(tta="ten_crop")
    with pytest.raises(ValueError, match="crop=60"):
        TrainConfig(crop=60)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixed_batches_blend_faces_and_labels(mix):
    from fer_utils.train import FaceBatches

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8), np.arange(64) % 7
    faces, labels = FaceBatches(x, y, 32, mix=mix, seed=1)[0]
    assert faces.shape == (32, 48, 48) and labels.shape == (32, 7)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
    assert (labels.max(axis=1) < 1).any()  # some labels are blends of two classes
    plain_faces, plain_labels = FaceBatches(x, y, 32, seed=1)[0]
    assert set(np.unique(plain_labels)) == {0.0, 1.0} and not np.allclose(faces, plain_faces)
    with pytest.raises(ValueError, match="mix="):
        TrainConfig(mix="blend")


def test_random_erasing_ends_the_training_augmentation(faces, tmp_path):
    from fer_utils.models import make_augmenter

    stack = make_augmenter("flip", crop=40, erasing=0.5)
    assert type(stack.layers[-1]).__name__ == "RandomErasing" and len(stack.layers) == 3
    assert type(make_augmenter(None, erasing=0.5).layers[0]).__name__ == "RandomErasing"
    assert TrainConfig(erasing=0.25).params()["erasing"] == 0.25 and "erasing" not in TrainConfig().params()
    with pytest.raises(ValueError, match="erasing"):
        TrainConfig(erasing=2)
    (x, y, xv, yv) = faces
    result = fit(tiny_cnn, x, y, xv, yv, TrainConfig(epochs=1, patience=None, erasing=0.5, mix="mixup"), tmp_path)
    assert result.epochs == 1 and result.model.predict(xv[:2], verbose=0).shape == (2, 7)


def test_batch_size_and_learning_rate_scale_together():
    scaled = TrainConfig(batch_size=128, learning_rate=1e-3).with_batch_size(512)
    assert scaled.batch_size == 512 and scaled.learning_rate == pytest.approx(4e-3)


def test_cpu_baselines_train_to_convergence_on_the_fast_path():
    from fer_utils.train import baseline_config

    cpu, smoke = config.get_profile("cpu"), config.get_profile("smoke")
    cnn = baseline_config("cnn", cpu, epoch_size=28709)
    assert (cnn.schedule, cnn.epochs, cnn.patience, cnn.epoch_size) == ("cosine", 40, 10, 28709)
    assert (cnn.crop, cnn.precision, cnn.batch_size) == (40, "auto", 256)
    assert cnn.learning_rate == pytest.approx(2e-3)  # 1e-3 at batch 128, scaled with the batch
    fc = baseline_config("fc", cpu)
    assert (fc.patience, fc.crop, fc.learning_rate, fc.schedule) == (6, None, 1e-3, "constant")
    assert baseline_config("cnn", smoke).batch_size == smoke.batch_size and baseline_config("cnn", smoke).crop is None


def test_sgd_takes_the_configured_weight_decay():
    from fer_utils.train import _optimizer

    assert _optimizer(TrainConfig(optimizer="sgd", weight_decay=1e-3), 10).weight_decay == pytest.approx(1e-3)
    assert _optimizer(TrainConfig(optimizer="sgd"), 10).weight_decay is None


def test_precision_auto_uses_bfloat16_only_where_it_is_native(monkeypatch):
    from fer_utils import train

    monkeypatch.setattr(train, "accelerator", lambda: None)
    monkeypatch.setattr(train, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert train.resolve_precision("auto") == "float32"
    monkeypatch.setattr(train, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert train.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(train, "cpu_flags", set)
    monkeypatch.setattr(train, "accelerator", lambda: "gpu H200")
    assert train.resolve_precision("auto") == "mixed_bfloat16"
    assert train.resolve_precision("float32") == "float32"


def test_crops_train_a_smaller_network_and_test_on_the_centre_crop(faces, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None, augment="standard", crop=40,
                      precision="mixed_bfloat16", tta="none")
    result = fit(tiny_cnn_any_size, *faces, cfg, tmp_path, verbose=0)
    assert result.precision == "mixed_bfloat16"
    model = result.model
    assert model.input_shape == (None, 48, 48)
    net = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    assert net.input_shape == (None, 40, 40)
    # bfloat16 is for training only: the returned model computes in float32 throughout
    assert all(layer.dtype_policy.name == "float32" for layer in net.layers)
    x_val = faces[2]
    np.testing.assert_allclose(model.predict(x_val, verbose=0), net.predict(x_val[:, 4:44, 4:44], verbose=0), atol=1e-6)
    # the saved file loads and computes the same
    from fer_utils.train import save_model

    path = save_model(model, tmp_path / "crop.keras")
    np.testing.assert_allclose(keras.models.load_model(path).predict(x_val, verbose=0),
                               model.predict(x_val, verbose=0), atol=1e-6)


def test_test_time_views_average_the_mirrored_and_corner_crops(tmp_path):
    from fer_utils.train import inference_model, save_model

    keras.utils.set_random_seed(0)
    net = tiny_cnn_any_size(40)
    x = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    views = [x[:, 4:44, 4:44], x[:, :40, :40], x[:, :40, 8:], x[:, 8:, :40], x[:, 8:, 8:]]
    views += [v[:, :, ::-1] for v in views]
    expected = np.mean([net.predict(v, verbose=0) for v in views], axis=0)
    ten = inference_model(net, 40, "ten_crop")
    assert len(ten.get_layer(net.name)._inbound_nodes) == 1  # one pass over the ten views stacked in a batch
    np.testing.assert_allclose(ten.predict(x, verbose=0), expected, atol=1e-6)
    reloaded = keras.models.load_model(save_model(ten, tmp_path / "ten.keras"), compile=False)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    flip = np.mean([net.predict(v, verbose=0) for v in (views[0], views[5])], axis=0)
    np.testing.assert_allclose(inference_model(net, 40, "flip").predict(x, verbose=0), flip, atol=1e-6)
    assert inference_model(net, None, "none") is net


def test_ema_weights_are_the_ones_selected_and_returned(faces, tmp_path):
    from fer_utils.train import FaceBatches, compiled_training_model

    cfg = TrainConfig(epochs=2, batch_size=64, patience=None, ema_momentum=0.9)
    result = fit(tiny_cnn, *faces, cfg, tmp_path, verbose=0)
    assert result.epochs == 2
    # the history's PublicTest accuracy is the EMA weights' (SwapEMAWeights), and so is the returned model's
    accuracy = (result.model.predict(faces[2], verbose=0).argmax(1) == faces[3]).mean()
    assert accuracy == pytest.approx(max(result.history["val_accuracy"]), abs=1e-6)
    model, _ = compiled_training_model(tiny_cnn, cfg, len(FaceBatches(*faces[:2], 64)), "float32")
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.9)


def test_face_batches_draw_a_fixed_epoch_from_a_stream_of_permutations():
    from fer_utils.train import FaceBatches

    x = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 48, 48), np.uint8)
    y = np.arange(10) % 7
    batches = FaceBatches(x, y, batch_size=4, epoch_size=6, sample_weight=np.arange(10) / 10, seed=0)
    assert len(batches) == 2
    seen = []
    for _ in range(5):  # 30 draws = three full passes over the 10 images
        for step in range(len(batches)):
            faces_, labels, weights = batches[step]
            assert faces_.dtype == np.float32 and labels.shape[1] == 7
            np.testing.assert_allclose(weights, faces_[:, 0, 0] / 10)
            seen += list(faces_[:, 0, 0].astype(int))
        batches.on_epoch_end()
    assert sorted(seen) == sorted(list(range(10)) * 3)
    # For a multi-replica strategy every batch is whole: the epoch of 6 becomes 8, nothing dropped.
    whole = FaceBatches(x, y, batch_size=4, epoch_size=6, seed=0, full_batches=True)
    drawn = []
    for _ in range(5):  # 5 epochs of 8 = four full passes
        drawn += [whole[step][0][:, 0, 0].astype(int) for step in range(len(whole))]
        whole.on_epoch_end()
    assert len(whole) == 2 and {len(batch) for batch in drawn} == {4}
    assert sorted(np.concatenate(drawn)) == sorted(list(range(10)) * 4)


def test_fit_without_validation_keeps_the_last_epoch(faces, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None, schedule="cosine")
    result = fit(tiny_cnn, faces[0], faces[1], None, None, cfg, tmp_path, verbose=0)
    assert result.epochs == 2 and "val_accuracy" not in result.history
    with pytest.raises(ValueError, match="fixed schedule"):
        fit(tiny_cnn, faces[0], faces[1], None, None, TrainConfig(epochs=1, patience=3), tmp_path / "b", verbose=0)


def test_cosine_budget_follows_the_epochs_when_the_budget_is_not_reached(faces, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None, schedule="cosine_budget", time_budget_s=3600)
    result = fit(tiny_cnn, faces[0], faces[1], None, None, cfg, tmp_path, verbose=0)
    expected = [cosine_learning_rate(1e-3, e / 3) for e in range(3)]
    assert result.stopped == "completed"
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-5)


def test_cosine_budget_ends_on_the_floor_when_the_time_budget_runs_out(faces, tmp_path):
    """A run resumed with 99% of its budget spent: the one epoch left runs at the schedule's floor,
    not at the epoch count's (nearly full) learning rate, and the cap stops it."""
    budget = 0.05
    cfg = TrainConfig(epochs=100, batch_size=64, patience=None, schedule="cosine_budget", time_budget_s=budget)
    fit(tiny_cnn, faces[0], faces[1], None, None, replace(cfg, epochs=1, time_budget_s=None), tmp_path / "first",
        verbose=0)  # a real epoch's history, then told it took 99% of the budget
    history = pd.read_csv(tmp_path / "first" / "history.csv").assign(epoch_seconds=0.99 * budget)
    history.to_csv(tmp_path / "history.csv", index=False)
    result = fit(tiny_cnn, faces[0], faces[1], None, None, cfg, tmp_path, verbose=0)
    assert result.stopped.startswith("time budget")
    lr = result.history["learning_rate"][-1]
    assert lr == pytest.approx(cosine_learning_rate(1e-3, 0.99), rel=1e-5)
    assert lr < 2 * COSINE_FLOOR * 1e-3 < cosine_learning_rate(1e-3, 1 / 100)


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="schedule='linear'.*cosine_budget"):
        TrainConfig(epochs=1, patience=None, schedule="linear")


DETERMINISM = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()  # process-wide: why this runs in its own process
    from fer_utils import models
    from fer_utils.runs import RunStore
    from fer_utils.synthetic import make_synthetic_fer
    from fer_utils.train import TrainConfig, train_and_evaluate

    ds = make_synthetic_fer(300, seed=0)
    out = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        store = RunStore(f"{sys.argv[1]}/{name}/metrics", f"{sys.argv[1]}/{name}/models", "03_det", "smoke")
        cfg = TrainConfig(epochs=1, batch_size=32, patience=None, augment="standard", crop=40, seed=seed,
                          schedule="cosine", optimizer="adamw")
        record = train_and_evaluate(store, ds, "cnn_small", lambda **kw: models.build("cnn_small", **kw), cfg)
        weights = tf.keras.models.load_model(record.model_path).get_weights()
        out[name] = {"run": record.run_id, "metrics": record["metrics"], "history": record.history,
                     "checksum": float(sum(np.abs(w).sum() for w in weights)),
                     "weights": [w.tolist() for w in weights[:2]]}
    print(json.dumps(out))
""")


def test_the_same_seed_on_the_same_machine_gives_the_same_weights_and_metrics(tmp_path):
    done = subprocess.run([sys.executable, "-c", DETERMINISM, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a["run"] == b["run"] == "03_cnn_small_none_seed7_smoke" and c["run"].endswith("_seed8_smoke")
    assert a["weights"] == b["weights"] and a["checksum"] == b["checksum"]
    assert a["metrics"] == b["metrics"] and a["history"]["loss"] == b["history"]["loss"]
    assert len(a["metrics"]["PrivateTest"]["predicted"]) == a["metrics"]["PrivateTest"]["n"]
    assert c["checksum"] != a["checksum"]  # another seed is another draw


def test_rescoring_adds_ferplus_scores_from_the_saved_model(tmp_path):
    from fer_utils import evaluate
    from fer_utils.train import predict_proba, rescore_ferplus, save_model

    ds = make_synthetic_fer(300, seed=0)
    store = RunStore(tmp_path / "metrics", tmp_path / "models")
    model = tiny_cnn()
    metrics = evaluate.evaluate_splits(lambda x: predict_proba(model, x), ds)
    for name, keep_model in (("12_kept", True), ("12_gone", False)):
        old = {split: {k: v for k, v in m.items() if k not in ("ferplus", "predicted")} for split, m in metrics.items()}
        path = save_model(model, store.model_path(name)) if keep_model else store.model_path(name)
        store.save(evaluate.metrics_record(name, "12_champion", "cnn", "none", "cpu", {}, ds.describe(),
                                           {"epochs": 1, "seconds": 60.0}, old, model_file=str(path)))
    table = rescore_ferplus(store, ds).set_index("run")
    assert table.loc["12_kept", "scored from"] == "model"
    assert table.loc["12_gone", "scored from"] == "not scored: model and per-face predictions gone"
    rescored, direct = store.record("12_kept")["metrics"]["PrivateTest"]["ferplus"], metrics["PrivateTest"]["ferplus"]
    assert rescored["accuracy"] == direct["accuracy"] and rescored["vote_probability"] == pytest.approx(direct["vote_probability"])
    assert "ferplus" not in store.record("12_gone")["metrics"]["PrivateTest"] and store.superseded() == []

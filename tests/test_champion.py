"""The champion: its size limits, the recipe's profiles, the cost counter, TTA reporting."""

import numpy as np
import pytest

from fer_utils import champion, config, export, models
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
    assert champion.multiply_adds(model) == expected


def test_multiply_adds_counts_a_known_layer():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)           # 8*8*4 outputs x 27 weights each
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))      # 256 x 5
    assert champion.multiply_adds(keras.Model(inputs, outputs)) == 8 * 8 * 4 * 27 + 256 * 5


def test_recipe_per_profile():
    cpu, smoke = champion.champion_config(config.get_profile("cpu")), champion.champion_config(config.get_profile("smoke"))
    assert cpu.schedule == "cosine" and cpu.augment == "standard" and cpu.label_smoothing == pytest.approx(0.1)
    assert cpu.patience is None  # the cosine schedule needs its last epochs
    assert cpu.time_budget_s is not None and cpu.time_budget_s <= 2 * 3600
    assert smoke.epochs == 1 and champion.champion_config(config.get_profile("cpu"), epochs=3).epochs == 3


def test_throughput_is_measured_per_model_and_batch_size():
    table = champion.measure_throughput({"tiny": lambda: models.build("cnn_small")}, (8, 16), steps=2, warmup=1)
    assert list(table["batch size"]) == [8, 16] and (table["faces/s"] > 0).all()
    assert table["parameters"].iloc[0] == models.build("cnn_small").count_params()


def test_flip_tta_is_reported_beside_the_single_pass(tmp_path):
    run = start("12_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    record = train_and_evaluate(run, "cnn_small", lambda: models.build("cnn_small"), TrainConfig(epochs=1, batch_size=64),
                                report_flip_tta=True)
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

"""fer_utils.transfer: backbones on raw faces, frozen vs fine-tuned, weights offline, losses."""

import functools
import importlib.util
import json
import sys
import time

import numpy as np
import pytest

from fer_utils import transfer
from fer_utils.config import NUM_CLASSES, get_profile
from fer_utils.notebook import NotebookRun

keras = transfer.keras
HAS_KERAS_HUB = importlib.util.find_spec("keras_hub") is not None
LOCAL = [n for n, s in transfer.BACKBONES.items() if s.source != "keras_hub"]


@pytest.fixture
def faces():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (4, 48, 48), dtype=np.uint8), rng.integers(0, NUM_CLASSES, 4)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras cache and no network."""
    monkeypatch.setattr(transfer, "keras_cache_dir", lambda: tmp_path / "keras")
    monkeypatch.delenv(transfer.PRESETS_ENV_VAR, raising=False)
    monkeypatch.setattr(transfer, "is_online", lambda url, timeout=3.0: False)
    return tmp_path / "keras"


@pytest.mark.parametrize("name", LOCAL)
def test_every_builder_takes_raw_faces_and_outputs_probabilities(name, faces):
    size = transfer.BACKBONES[name].min_size
    model = transfer.build_model(name, size, weights="none", mode="frozen")
    proba = model.predict(faces[0], verbose=0)
    assert proba.shape == (len(faces[0]), NUM_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba >= 0).all()


@pytest.mark.skipif(not HAS_KERAS_HUB, reason="keras_hub not installed")
@pytest.mark.parametrize("name", ["vit_b16", "clip_vit_b32"])
def test_keras_hub_builders_from_scratch(name, faces):  # pragma: no cover (needs keras_hub)
    proba = transfer.build_model(name, weights="none").predict(faces[0][:1], verbose=0)
    assert proba.shape == (1, NUM_CLASSES)


def test_input_sizes_respect_each_backbone():
    assert transfer.input_size("xception", 32) == 71 and transfer.input_size("inception_v3", 64) == 75
    assert transfer.input_size("resnet18") == 96  # write-up 000's 96x96 by default
    assert transfer.input_size("clip_vit_b32", 64) == 224


def test_resnet18_is_the_standard_basic_block_network():
    model = transfer.resnet18((224, 224, 3))
    assert model.count_params() == 11_186_112  # torchvision's 11,176,512 trainable + BN statistics
    assert transfer.trainable_count(model) == 11_176_512
    assert model.output.shape[-1] == 512
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 8  # 4 stages x 2 blocks


@pytest.mark.parametrize("name", ["xception", "vgg16", "densenet121", "inception_v3", "resnet50"])
def test_preprocessing_layers_equal_keras_applications(name):
    s = transfer.spec(name)
    module = {"xception": "xception", "vgg16": "vgg16", "densenet121": "densenet", "inception_v3": "inception_v3",
              "resnet50": "resnet"}[name]
    gray = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    rgb = np.repeat(gray, 3, axis=-1)
    expected = getattr(keras.applications, module).preprocess_input(rgb.copy())
    x = rgb
    for layer in transfer.preprocessing_layers(s.preprocess):
        x = layer(x)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-4)


def _train_one_step(model, faces):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    x, y = faces
    model.fit(x, np.eye(NUM_CLASSES)[y], batch_size=len(x), epochs=1, verbose=0)


def _weights(layer):
    return [np.array(w) for w in layer.weights]


def test_frozen_mode_changes_no_backbone_weight(faces):
    model = transfer.build_model("resnet18", 32, weights="none", mode="frozen")
    extractor, head = transfer.extractor_of(model), model.layers[-1]
    before, head_before = _weights(extractor), _weights(head)
    assert transfer.trainable_count(model) == transfer.trainable_count(head) > 0
    _train_one_step(model, faces)
    for a, b in zip(before, _weights(extractor)):  # kernels and batch-norm statistics alike
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, _weights(head)))


def test_finetuning_a_reloaded_frozen_model_trains_the_backbone_but_can_keep_batchnorm(faces, tmp_path):
    path = tmp_path / "frozen.keras"
    transfer.build_model("resnet18", 32, weights="none", mode="frozen").save(path)
    model = keras.models.load_model(path, compile=False)
    extractor = transfer.unfreeze(transfer.extractor_of(model), keep_batchnorm=True)  # as for ImageNet weights
    assert transfer.trainable_count(model) > 11_000_000
    bn = [v for layer in transfer._all_layers(extractor) if isinstance(layer, keras.layers.BatchNormalization)
          for v in layer.weights]
    conv = extractor.get_layer("resnet18").get_layer("stem_conv").kernel
    bn_before, conv_before = [np.array(v) for v in bn], np.array(conv)
    _train_one_step(model, faces)
    assert not np.array_equal(conv_before, np.array(conv))
    assert bn and all(np.array_equal(a, np.array(v)) for a, v in zip(bn_before, bn))  # statistics, gamma, beta


def test_weights_file_names_what_keras_downloads(offline):
    w = transfer.weights_file("xception")
    assert w.path == offline / "models" / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert w.origin.startswith("https://storage.googleapis.com/") and w.origin.endswith(w.path.name)
    assert transfer.weights_file("mobilenet_v3_large").path.name.endswith("_no_top_v2.h5")
    assert transfer.weights_file("vit_small") is None
    assert transfer.weights_file("resnet18").origin.startswith("kaggle://keras/resnetv1/")


def test_offline_weights_fail_fast_with_the_documented_message(offline):
    with pytest.raises(transfer.WeightsUnavailable) as error:
        transfer.resolve_weights("mobilenet_v3_large", "imagenet")
    message = str(error.value)
    w = transfer.weights_file("mobilenet_v3_large")
    assert str(w.path) in message and w.origin in message and "~/.keras/models" in message
    assert "allow_scratch=True" in message and "weights: none" in message
    with pytest.raises(transfer.WeightsUnavailable, match="cannot be downloaded"):
        transfer.build_model("mobilenet_v3_large", 32, weights="imagenet")
    assert transfer.resolve_weights("mobilenet_v3_large", "imagenet", allow_scratch=True) == "none"
    assert transfer.resolve_weights("vit_small", "imagenet") == "none"  # no pretrained weights exist
    assert transfer.resolve_weights("xception", "none") == "none"


def test_offline_check_is_quick_and_needs_no_download(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.perf_counter()
    assert transfer.is_online("https://fer-utils-test.invalid/weights.h5", timeout=2) is False
    assert time.perf_counter() - t0 < 10


def test_cached_weights_are_used_offline(offline):
    w = transfer.weights_file("efficientnet_b0")
    w.path.parent.mkdir(parents=True)
    w.path.write_bytes(b"")
    assert transfer.resolve_weights("efficientnet_b0", "imagenet") == "imagenet"
    assert transfer.resolve_weights("efficientnet_b0", "imagenet", download=False) == "imagenet"


def test_missing_keras_hub_says_how_to_install(offline, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub now raises ImportError
    with pytest.raises(ImportError, match="pip install keras-hub"):
        transfer.resolve_weights("clip_vit_b32", "imagenet")
    with pytest.raises(ImportError, match="pip install keras-hub"):
        transfer.build_model("vit_b16", weights="none")
    with pytest.raises(ImportError, match="pip install keras-hub"):
        transfer.resolve_weights("resnet18", "imagenet")  # its pretrained weights are a keras_hub preset
    assert transfer.resolve_weights("resnet18", "imagenet", allow_scratch=True) == "none"


def test_focal_loss_matches_its_formula():
    y_true = np.array([[0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]], dtype=np.float32)
    y_pred = np.array([[0.05, 0.7, 0.05, 0.05, 0.05, 0.05, 0.05],
                       [0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.2]], dtype=np.float32)
    gamma, alpha = 2.0, 0.25
    expected = -(alpha * y_true * (1 - y_pred) ** gamma * np.log(y_pred)).sum(axis=1)
    assert expected[0] == pytest.approx(0.25 * 0.3 ** 2 * -np.log(0.7))
    loss = transfer.focal_loss(gamma, alpha)
    assert float(loss(y_true, y_pred)) == pytest.approx(expected.mean(), rel=1e-5)
    assert float(transfer.focal_loss(0.0, 1.0)(y_true, y_pred)) == pytest.approx(
        float(keras.losses.CategoricalCrossentropy()(y_true, y_pred)), rel=1e-5)  # gamma 0, alpha 1: CE
    per_class = transfer.focal_loss(gamma, [1, 2, 3, 4, 5, 6, 7])
    assert float(per_class(y_true[1:], y_pred[1:])) == pytest.approx(7 * 0.8 ** 2 * -np.log(0.2), rel=1e-5)


def test_make_loss_weights_classes_inversely_to_frequency():
    y = np.array([0] * 6 + [1] * 2 + [2, 3, 4, 5, 6] * 2)
    _, weights, params = transfer.make_loss("weighted_ce", y)
    assert params == {"loss": "weighted_ce"} and weights[1] == pytest.approx(3 * weights[0])
    assert transfer.make_loss("ce", y)[1] is None
    with pytest.raises(ValueError, match="loss='hinge'"):
        transfer.make_loss("hinge", y)


def test_plan_and_parameters():
    runs = transfer.plan("smoke")
    assert runs[0][1] == "frozen" and runs[-1][1] == "finetune"
    assert {loss for b, m, loss in runs if b == "vit_small" and m == "frozen"} == set(transfer.LOSSES)
    assert transfer.plan("cpu", ["resnet18"]) == [("resnet18", "frozen", loss) for loss in transfer.LOSSES] + [
        ("resnet18", "finetune", "ce")]
    with pytest.raises(ValueError, match="unknown backbone"):
        transfer.plan("cpu", ["alexnet"])
    assert transfer.as_list("xception, resnet18") == ["xception", "resnet18"] and transfer.as_list("") == []
    assert transfer.as_bool("True") and not transfer.as_bool("False") and transfer.as_bool(True)


def test_lite0_and_its_twin_share_a_budget_of_their_own():
    lite = transfer.recipe("cpu", "efficientnet_lite0")
    assert lite["size"] == 96 and transfer.recipe("cpu")["size"] == transfer.recipe("cpu", "resnet18")["size"] == 64
    tuned, twin = (transfer.transfer_config("cpu", "finetune", "efficientnet_lite0", w) for w in ("imagenet", "none"))
    assert tuned.epochs == twin.epochs == lite["finetune"]["epochs"] and tuned.epoch_size == twin.epoch_size == 8192
    assert tuned.schedule == twin.schedule == "cosine" and tuned.learning_rate < twin.learning_rate
    assert transfer.transfer_config("cpu", "finetune", "resnet18", "none").params() == {
        **twin.params(), "epochs": 6, "schedule": "constant", "time_budget_s": 480}  # the others keep theirs
    assert transfer.finetune_budgets("cpu", "efficientnet_lite0") == (12, 30)
    assert transfer.finetune_budgets("cpu", "resnet18") == (6,) and transfer.finetune_budgets("smoke", "efficientnet_lite0") == (1,)
    frozen = [("frozen", loss, "imagenet", None) for loss in transfer.LOSSES]
    pairs = [("finetune", "ce", w, e) for e in (12, 30) for w in ("imagenet", "none")]
    assert transfer.pretrained_plan("cpu", "imagenet") == frozen + pairs
    assert transfer.pretrained_plan("cpu", "none") == [("frozen", loss, "none", None) for loss in transfer.LOSSES] + [
        ("finetune", "ce", "none", 12), ("finetune", "ce", "none", 30)]
    longer = transfer.transfer_config("cpu", "finetune", "efficientnet_lite0", "imagenet", epochs=30)
    assert longer.params() == {**tuned.params(), "epochs": 30, "time_budget_s": tuned.time_budget_s * 30 / 12}
    assert transfer.pretrained_plan("smoke", "imagenet") == [  # a check that the code runs: one loss
        ("frozen", "ce", "imagenet", None), ("finetune", "ce", "imagenet", 1), ("finetune", "ce", "none", 1)]


def test_train_transfer_frozen_then_finetune(small_ds, tmp_path, monkeypatch, capsys):
    tiny = {**transfer.TRANSFER_RECIPES["smoke"], "size": 16, "finetune_max_train": 64}
    monkeypatch.setitem(transfer.TRANSFER_RECIPES, "smoke", tiny)
    run = NotebookRun("05_test", get_profile("smoke"), small_ds, tmp_path / "reports", seed=0)
    train = functools.partial(transfer.train_transfer, run.store, run.dataset, run.profile)
    cache = transfer.FeatureCache()
    frozen = train("vit_small", "frozen", "focal", "none", cache=cache, verbose=0)
    assert frozen["run"] == "05_vit_small_frozen_focal_none_smoke" and frozen["weights"] == "none"
    saved = json.loads((run.metrics_dir / "05_vit_small_frozen_focal_none_smoke.json").read_text())
    for key in ("run", "notebook", "model", "sampling", "profile", "params", "dataset", "train", "metrics"):
        assert key in saved
    assert saved["params"]["weights"] == "none" and saved["params"]["focal_gamma"] == 2.0
    assert set(saved["metrics"]["PrivateTest"]) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    assert saved["trainable_params"] < saved["n_params"]
    tuned = train("vit_small", "finetune", "focal", "none", cache=cache, verbose=0)
    assert tuned["initialised_from"] == "random (weights: none)" and tuned["train"]["n_train"] == 64
    assert tuned["trainable_params"] == transfer.trainable_count(keras.models.load_model(
        run.models_dir / f"{tuned['run']}.keras", compile=False))
    capsys.readouterr()
    again = train("vit_small", "finetune", "focal", "none", cache=cache, verbose=0)
    assert "loaded, not retrained" in capsys.readouterr().out and again["created"] == tuned["created"]
    longer = train("vit_small", "finetune", "focal", "none", cache=cache, verbose=0, epochs=2)
    assert longer["run"] == "05_vit_small_finetune_focal_none_2epochs_smoke" and longer["params"]["epochs"] == 2
    assert tuned["params"]["epochs"] == 1 and (run.metrics_dir / f"{tuned['run']}.json").exists()  # kept beside it
    table = transfer.comparison_table([frozen, tuned])
    assert list(table["mode"]) == ["frozen", "finetune"] and set(table["weights"]) == {"none"}
    assert {"precision", "accuracy", "recall", "F1", "params (M)", "s/epoch", "faces/s", "ms/face"} <= set(table.columns)


def test_finetuning_continues_a_pretrained_frozen_run_but_starts_random_weights_afresh(small_ds, tmp_path,
                                                                                         monkeypatch):
    tiny = {**transfer.TRANSFER_RECIPES["smoke"], "size": 32, "finetune_max_train": 64}
    monkeypatch.setitem(transfer.TRANSFER_RECIPES, "smoke", tiny)
    real_backbone = transfer.backbone
    # Random weights stand in for downloaded ImageNet ones: this checks the path, not the weights.
    monkeypatch.setattr(transfer, "backbone", lambda name, size, weights: real_backbone(name, size, "none"))
    run = NotebookRun("05_test", get_profile("smoke"), small_ds, tmp_path / "reports", seed=0)
    train = functools.partial(transfer.train_transfer, run.store, run.dataset, run.profile)
    pretrained = train("resnet18", "finetune", "ce", "imagenet", verbose=0)
    assert pretrained["initialised_from"] == "05_resnet18_frozen_ce_imagenet_smoke"
    assert pretrained["params"]["batchnorm_frozen"] and pretrained["params"]["initialisation"] == "the frozen run"
    scratch = train("resnet18", "finetune", "ce", "none", verbose=0)
    assert scratch["initialised_from"] == "random (weights: none)"
    assert not scratch["params"]["batchnorm_frozen"] and scratch["params"]["initialisation"] == "random"
    assert not (run.metrics_dir / "05_resnet18_frozen_ce_none_smoke.json").exists()  # no frozen run needed
    assert scratch["history"]["loss"][0] < 10  # a fresh model starts near log(7), not with an exploding head
    gain = transfer.pretraining_table(pretrained, scratch, small_ds)
    assert list(gain.index) == ["from ImageNet weights", "from random weights (twin)", "difference (points)"]
    assert gain.loc["difference (points)", "PrivateTest %"] == pytest.approx(
        pretrained.score("accuracy", "PrivateTest") - scratch.score("accuracy", "PrivateTest"), abs=0.01)
    assert gain.loc["difference (points)", "95% interval"].startswith("McNemar p = ")
    assert list(transfer.pretraining_table(None, scratch, small_ds).index) == ["from random weights (twin)"]


def test_scratch_runs_cap_batchnorm_momentum_where_it_is_too_slow():
    above = set()
    for name in ("mobilenet_v3_large", "efficientnet_b0", "resnet18", "xception", "vit_small"):
        model = transfer.build_model(name, 32 if name != "xception" else 71)
        changed = transfer.cap_batchnorm_momentum(model)
        if changed:
            above.add(name)
        assert all(layer.momentum <= transfer.SCRATCH_BATCHNORM_MOMENTUM for layer in transfer._all_layers(model)
                   if isinstance(layer, keras.layers.BatchNormalization))
    assert above == set(transfer.HIGH_MOMENTUM_BACKBONES)

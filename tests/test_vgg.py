"""Write-up 003: the VGG builder, its recipes, softmax-average ensembles and the leakage audit."""

import itertools
import json

import numpy as np
import pytest

from fer_utils import balance, evaluate, models, vgg
from fer_utils.config import TEST, TRAIN, VAL, import_keras
from fer_utils.data import FERDataset
from fer_utils.notebook import start
from fer_utils.synthetic import make_synthetic_fer

keras = import_keras()
layers = keras.layers


# ---------------------------------------------------------------------------------------------
# The network


def test_vgg_at_full_width_has_the_papers_layers_and_parameter_count():
    model = models.vgg()
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    filters = [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.filters for c in convs] == filters
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.use_bias for c in convs)
    assert len(norms) == 8 and len(pools) == 4
    assert [d.units for d in dense] == [4096, 4096, 7]
    assert sum(isinstance(layer, layers.Dropout) for layer in model.layers) == 2
    assert dense[-1].activation.__name__ == "softmax"

    # Each block is conv -> ReLU -> batch norm (the paper's order); each stage ends with a pool.
    kinds = [type(layer).__name__ for layer in model.layers]
    stage = ["Conv2D", "Activation", "BatchNormalization"] * 2 + ["MaxPooling2D"]
    start_at = kinds.index("Conv2D")
    assert kinds[start_at:start_at + 4 * len(stage)] == stage * 4
    assert model.get_layer("pool4").output.shape[1:] == (3, 3, 512)

    # Parameters: conv kernels + biases, batch norm (gamma, beta, moving mean and variance),
    # dense 3*3*512 -> 4096 -> 4096 -> 7 with biases.
    channels = [1] + filters
    conv_params = sum(9 * c_in * c_out + c_out for c_in, c_out in itertools.pairwise(channels))
    norm_params = sum(4 * c for c in filters)
    dense_params = (3 * 3 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 7 + 7)
    assert model.count_params() == conv_params + norm_params + dense_params == 40_380_359
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == model.count_params() - 2 * sum(filters)  # moving statistics are not trained


def test_vgg_width_block_order_and_contract():
    narrow = models.vgg(width=0.25, fc_units=512)
    assert [layer.filters for layer in narrow.layers if isinstance(layer, layers.Conv2D)] == [16, 16, 32, 32, 64, 64,
                                                                                               128, 128]
    assert narrow.name == "vgg_w0.25_fc512" and models.vgg_name() == "vgg"
    released = models.vgg(width=0.125, fc_units=16, block_order="conv_bn_relu")
    kinds = [type(layer).__name__ for layer in released.layers]
    first = kinds.index("Conv2D")
    assert kinds[first:first + 3] == ["Conv2D", "BatchNormalization", "Activation"]
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    proba = released.predict(faces, verbose=0)
    assert proba.shape == (2, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="block_order"):
        models.vgg(block_order="bn_conv")
    assert "vgg" in models.BUILDERS


def test_recipes_follow_the_paper_and_write_up_003():
    paper = vgg.vgg_paper_config("full", epoch_size=1000)
    assert (paper.optimizer, paper.learning_rate, paper.schedule, paper.patience, paper.epochs, paper.batch_size) == \
        ("sgd", 0.01, "plateau", None, 300, 64)
    tuned = vgg.vgg_tuned_config("full")
    assert (tuned.optimizer, tuned.learning_rate, tuned.patience, tuned.augment) == ("adam", 1e-4, 10, None)
    cpu = vgg.vgg_config("paper", "cpu", epoch_size=28709)
    assert cpu.epoch_size == 28709 and cpu.epochs < 10 and cpu.time_budget_s is not None
    params = vgg.vgg_params("paper", "cpu")
    assert params["width"] == 0.25 and params["fc_units"] == 512 and params["paper_size"] is False
    assert params["differs_from_paper"] and vgg.vgg_params("tuned", "full")["paper_size"] is True
    assert vgg.vgg_model_name("tuned", "cpu") == "vgg_w0.25_fc512_tuned"
    assert vgg.vgg_model_name("paper", "full") == "vgg_paper"
    with pytest.raises(ValueError, match="recipe"):
        vgg.vgg_config("fancy", "cpu")


# ---------------------------------------------------------------------------------------------
# Ensembles


def test_average_probabilities_by_hand():
    a = np.array([[0.7, 0.1, 0.1, 0.1, 0, 0, 0], [0, 0, 0, 0, 0, 0.5, 0.5]])
    b = np.array([[0.1, 0.7, 0.1, 0.1, 0, 0, 0], [0, 0, 0, 0, 0, 1.0, 0.0]])
    np.testing.assert_allclose(vgg.average_probabilities([a, b]), (a + b) / 2)
    weighted = vgg.average_probabilities([a, b], weights=[3, 1])
    np.testing.assert_allclose(weighted, 0.75 * a + 0.25 * b)
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0)
    assert weighted[1].argmax() == 5 and weighted[0].argmax() == 0
    # Functions of the faces and arrays mix; a zero weight drops a member.
    faces = np.zeros((2, 48, 48), np.uint8)
    np.testing.assert_allclose(vgg.average_probabilities([lambda x: a, b], faces, weights=[0, 1]), b)
    np.testing.assert_allclose(vgg.ensemble_predictor([lambda x: a, lambda x: b])(faces), (a + b) / 2)
    with pytest.raises(ValueError, match="pass the faces"):
        vgg.average_probabilities([lambda x: a])
    with pytest.raises(ValueError, match="weights"):
        vgg.average_probabilities([a, b], weights=[1, -1])
    with pytest.raises(ValueError, match="shapes"):
        vgg.average_probabilities([a, b[:1]])


def test_ensemble_gain_names_the_best_member_per_class():
    import pandas as pd

    table = pd.DataFrame({"angry": [0.2, 0.4, 0.5], "happy": [0.8, 0.7, 0.75]}, index=["ros", "smote", "ensemble"])
    gain = vgg.ensemble_gain(table, "ensemble")
    assert gain.loc["angry", "best member"] == "smote" and gain.loc["angry", "gain over best"] == pytest.approx(0.1)
    assert bool(gain.loc["angry", "beats every member"]) and not bool(gain.loc["happy", "beats every member"])


# ---------------------------------------------------------------------------------------------
# Resampling with parents and the leakage audit


@pytest.fixture(scope="module")
def ds():
    return make_synthetic_fer(350, seed=3)


def test_traced_smote_is_balance_smote_and_its_parents_reproduce_every_image(ds):
    x, y = ds.split(TRAIN)
    traced = vgg.resample_with_parents(x, y, "smote", seed=5)
    reference = balance.balance(x, y, "smote", seed=5, progress=False)
    np.testing.assert_array_equal(traced.x, reference.x)
    np.testing.assert_array_equal(traced.y, reference.y)
    np.testing.assert_array_equal(traced.is_synthetic, reference.is_synthetic)
    new = traced.is_synthetic
    a, b = traced.parents[new, 0], traced.parents[new, 1]
    assert (y[a] == traced.y[new]).all() and (y[b] == traced.y[new]).all()  # parents of the same class
    rebuilt = x[a] + traced.steps[new, None, None] * (x[b].astype(float) - x[a])
    assert np.abs(traced.x[new] - rebuilt).max() <= 0.5 + 1e-6
    assert ((traced.steps[new] >= 0) & (traced.steps[new] < 1)).all()
    ros = vgg.resample_with_parents(x, y, "ros", seed=5)
    np.testing.assert_array_equal(ros.x, x[ros.parents[:, 0]])


def test_overlap_audit_by_hand():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    digests = np.array(["a", "b", "c", "d"])
    train, train_sources = images[:2], np.stack([digests[:2]] * 2, axis=1)
    # test 0: a pixel copy of train 0; test 1: a blend whose parent "b" is in training; test 2: independent
    test = np.stack([images[0], images[3], images[2]])
    test_sources = np.array([["a", "a"], ["b", "d"], ["c", "c"]])
    audit = vgg.overlap_audit(train, train_sources, test, test_sources)
    assert audit["exact_copy"].tolist() == [True, False, False]
    assert audit["shared_source"].tolist() == [True, True, False]
    assert (audit["n_leaked"], audit["n_independent"]) == (2, 1)


def test_leaky_protocol_puts_test_images_in_training_and_the_honest_one_does_not(ds):
    leaky_ros = vgg.leaky_protocol(ds, "ros", seed=0)
    audit = leaky_ros.audit()
    assert audit["n_exact_copy"] > 0.3 * audit["n_test"]  # duplicated minority images land on both sides
    assert leaky_ros.official_overlap()[TEST]["exact copy in leaky training"] > 0.5 * (ds.usage == TEST).sum()
    sizes = leaky_ros.describe()
    assert sizes["n_resampled"] == sizes["n_train"] + sizes["n_val"] + sizes["n_test"] > len(ds)

    leaky_smote = vgg.leaky_protocol(ds, "smote", seed=0)
    smote_audit = leaky_smote.audit()
    assert smote_audit["n_synthetic_test"] > 0
    assert smote_audit["n_shared_source"] > smote_audit["n_exact_copy"]  # SMOTE relatives, not copies
    _, synthetic, parents = leaky_smote.leak_examples(4)
    assert len(parents) == len(synthetic) > 0 and (parents["max_abs_error"] <= 0.5 + 1e-6).all()
    test_sources = set(leaky_smote.resampled.parents[leaky_smote.usage == TEST, 0].tolist())
    assert set(parents["parent_a"]) <= test_sources

    for method in ("ros", "smote"):  # the synthetic stand-in has no duplicates: nothing leaks
        honest = vgg.honest_audit(ds, method, seed=0)
        assert honest["n_test"] == (ds.usage == TEST).sum() and honest["n_leaked"] == 0


def test_honest_audit_finds_exactly_the_datasets_own_duplicates(ds):
    pixels = ds.pixels.copy()
    train_rows, test_rows = np.flatnonzero(ds.usage == TRAIN), np.flatnonzero(ds.usage == TEST)
    pixels[test_rows[:3]] = pixels[train_rows[:3]]  # three PrivateTest images copied from Training
    dup = FERDataset(pixels, ds.labels, ds.usage, synthetic=True)
    for method in ("ros", "smote"):
        audit = vgg.honest_audit(dup, method, seed=0)
        assert audit["n_exact_copy"] == audit["n_leaked"] == 3
        assert audit["exact_copy"][:3].all()


def test_leaky_run_and_ensemble_records(tmp_path):
    run = start("11_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    protocol = vgg.leaky_protocol(run.dataset, "ros", seed=0)
    record = vgg.train_leaky(run, protocol)
    assert record["leaky"] and "LEAKY" in record["warning"] and "model_file" not in record
    assert record["sampling"] == "leaky_ros_before_split" and record["params"]["width"] == 0.125
    assert {VAL, TEST, evaluate.CLEAN_TEST, vgg.LEAKY_TEST} <= set(record["metrics"])
    assert record["metrics"][vgg.LEAKY_TEST]["n"] == (protocol.usage == TEST).sum()
    assert record["leakage"]["test_audit"]["exact copy in training"] > 0
    assert record["dataset"]["fingerprint"] == run.dataset.fingerprint and "derived" in record["dataset"]
    saved = json.loads((run.metrics_dir / f"{record['run']}.json").read_text())
    assert saved["leaky"] is True
    assert (tmp_path / "models" / f"{record['run']}.keras").exists()
    # A leaky model is never picked as "the best model", and a second call loads it.
    assert evaluate.trained_runs(evaluate.read_metrics(run.metrics_dir)) == []
    assert vgg.train_leaky(run, protocol)["created"] == record["created"]

    members = [record, dict(record, run="other", sampling="x", n_params=5)]
    proba = {split: np.full(((run.dataset.usage == split).sum(), 7), 1 / 7) for split in (VAL, TEST)}
    ensemble = vgg.write_ensemble_record(run, "pair", members, proba, weights=[1, 1])
    assert ensemble["model"] == "ensemble" and ensemble["run"] == "11_ensemble_pair_smoke"
    assert ensemble["params"]["members"] == [record["run"], "other"]
    assert ensemble["train"]["seconds"] == pytest.approx(2 * record["train"]["seconds"], abs=0.2)
    assert (run.metrics_dir / "11_ensemble_pair_smoke.json").exists()


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
    chosen = vgg.best_run_per_notebook(records, "f", exclude_notebooks=["06_e"])
    assert [r["run"] for r in chosen] == ["a2", "b1"]

"""Notebook 11: resampling with parents, the leakage audit and a model trained on the leaky protocol."""

import json

import numpy as np
import pytest

from fer_utils import balance, evaluate, leakage
from fer_utils.config import TEST, TRAIN, VAL
from fer_utils.data import FERDataset
from fer_utils.notebook import start
from fer_utils.synthetic import make_synthetic_fer


@pytest.fixture(scope="module")
def ds():
    return make_synthetic_fer(350, seed=3)


def test_traced_smote_is_balance_smote_and_its_parents_reproduce_every_image(ds):
    x, y = ds.split(TRAIN)
    traced = leakage.resample_with_parents(x, y, "smote", seed=5)
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
    ros = leakage.resample_with_parents(x, y, "ros", seed=5)
    np.testing.assert_array_equal(ros.x, x[ros.parents[:, 0]])


def test_overlap_audit_by_hand():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    digests = np.array(["a", "b", "c", "d"])
    train, train_sources = images[:2], np.stack([digests[:2]] * 2, axis=1)
    # test 0: a pixel copy of train 0; test 1: a blend whose parent "b" is in training; test 2: independent
    test = np.stack([images[0], images[3], images[2]])
    test_sources = np.array([["a", "a"], ["b", "d"], ["c", "c"]])
    audit = leakage.overlap_audit(train, train_sources, test, test_sources)
    assert audit["exact_copy"].tolist() == [True, False, False]
    assert audit["shared_source"].tolist() == [True, True, False]
    assert (audit["n_leaked"], audit["n_independent"]) == (2, 1)


def test_leaky_protocol_puts_test_images_in_training_and_the_honest_one_does_not(ds):
    leaky_ros = leakage.leaky_protocol(ds, "ros", seed=0)
    audit = leaky_ros.audit()
    assert audit["n_exact_copy"] > 0.3 * audit["n_test"]  # duplicated minority images land on both sides
    assert leaky_ros.official_overlap()[TEST]["exact copy in leaky training"] > 0.5 * (ds.usage == TEST).sum()
    sizes = leaky_ros.describe()
    assert sizes["n_resampled"] == sizes["n_train"] + sizes["n_val"] + sizes["n_test"] > len(ds)

    leaky_smote = leakage.leaky_protocol(ds, "smote", seed=0)
    smote_audit = leaky_smote.audit()
    assert smote_audit["n_synthetic_test"] > 0
    assert smote_audit["n_shared_source"] > smote_audit["n_exact_copy"]  # SMOTE relatives, not copies
    _, synthetic, parents = leaky_smote.leak_examples(4)
    assert len(parents) == len(synthetic) > 0 and (parents["max_abs_error"] <= 0.5 + 1e-6).all()
    test_sources = set(leaky_smote.resampled.parents[leaky_smote.usage == TEST, 0].tolist())
    assert set(parents["parent_a"]) <= test_sources

    for method in ("ros", "smote"):  # the synthetic stand-in has no duplicates: nothing leaks
        honest = leakage.honest_audit(ds, method, seed=0)
        assert honest["n_test"] == (ds.usage == TEST).sum() and honest["n_leaked"] == 0


def test_honest_audit_finds_exactly_the_datasets_own_duplicates(ds):
    pixels = ds.pixels.copy()
    train_rows, test_rows = np.flatnonzero(ds.usage == TRAIN), np.flatnonzero(ds.usage == TEST)
    pixels[test_rows[:3]] = pixels[train_rows[:3]]  # three PrivateTest images copied from Training
    dup = FERDataset(pixels, ds.labels, ds.usage, synthetic=True)
    for method in ("ros", "smote"):
        audit = leakage.honest_audit(dup, method, seed=0)
        assert audit["n_exact_copy"] == audit["n_leaked"] == 3
        assert audit["exact_copy"][:3].all()


def test_leaky_run_record(tmp_path):
    run = start("11_test", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    protocol = leakage.leaky_protocol(run.dataset, "ros", seed=0)
    record = leakage.train_leaky(run.store, run.dataset, protocol, run.profile)
    assert record["leaky"] and "LEAKY" in record["warning"] and "model_file" not in record
    assert record["sampling"] == "leaky_ros_before_split" and record["params"]["width"] == 0.125
    assert {VAL, TEST, evaluate.CLEAN_TEST, leakage.LEAKY_TEST} <= set(record["metrics"])
    assert record["metrics"][leakage.LEAKY_TEST]["n"] == (protocol.usage == TEST).sum()
    assert record["leakage"]["test_audit"]["exact copy in training"] > 0
    assert record["dataset"]["fingerprint"] == run.dataset.fingerprint and "derived" in record["dataset"]
    saved = json.loads((run.metrics_dir / f"{record['run']}.json").read_text())
    assert saved["leaky"] is True
    assert (tmp_path / "models" / f"{record['run']}.keras").exists()
    # A leaky model is never picked as "the best model", and a second call loads it.
    assert evaluate.trained_runs(evaluate.read_metrics(run.metrics_dir)) == []
    assert leakage.train_leaky(run.store, run.dataset, protocol, run.profile)["created"] == record["created"]

"""fer_utils.balance on generated data: shapes, target counts, purity, seeding, SMOTE parents."""

import numpy as np
import pytest

from fer_utils import balance
from fer_utils.config import NUM_CLASSES, TRAIN


@pytest.fixture(scope="module")
def train(small_ds):
    """The synthetic training split: uint8 (N, 48, 48), int64 (N,), every class present."""
    x, y = small_ds.split(TRAIN)
    assert (np.bincount(y, minlength=NUM_CLASSES) >= 6).all()
    return x, y


@pytest.fixture(scope="module")
def results(train):
    x, y = train
    x_copy, y_copy = x.copy(), y.copy()
    out = balance.balance_all(x, y, seed=0, progress=False)
    assert np.array_equal(x, x_copy) and np.array_equal(y, y_copy), "balancing modified its inputs"
    return out


@pytest.mark.parametrize("method", balance.METHODS)
def test_every_method_returns_uint8_images_and_int_labels(results, method):
    result = results[method]
    assert result.method == method
    assert result.x.dtype == np.uint8 and result.x.ndim == 3 and result.x.shape[1:] == (48, 48)
    assert np.issubdtype(result.y.dtype, np.integer) and result.y.shape == (len(result.x),)
    assert result.is_synthetic.shape == result.source_index.shape == result.y.shape
    np.testing.assert_array_equal(result.counts_after, np.bincount(result.y, minlength=NUM_CLASSES))
    assert result.seconds >= 0 and np.isfinite(result.peak_memory_mb)


def test_target_counts(results, train):
    counts = np.bincount(train[1], minlength=NUM_CLASSES)
    median = int(np.median(counts))
    expect = {"none": counts, "ros": counts.max(), "rus": counts.min(), "hybrid": median, "smote": counts.max(),
              "augment": counts.max()}
    for method, expected in expect.items():
        np.testing.assert_array_equal(results[method].counts_after, np.broadcast_to(expected, (NUM_CLASSES,)),
                                      err_msg=method)
    for method in ("smote_tomek", "smote_enn"):  # cleaning only removes rows
        assert (results[method].counts_after <= counts.max()).all()
        assert len(results[method]) < len(results["smote"])


def test_explicit_targets(train):
    x, y = train
    counts = np.bincount(y, minlength=NUM_CLASSES)
    target = int(np.median(counts))
    aug = balance.balance(x, y, "augment", target=target, progress=False)
    assert (aug.counts_after >= target).all()
    np.testing.assert_array_equal(aug.counts_after, np.maximum(counts, target))
    rus = balance.balance(x, y, "rus", target=target)
    np.testing.assert_array_equal(rus.counts_after, np.minimum(counts, target))
    hybrid = balance.balance(x, y, "hybrid", target="max")
    assert (hybrid.counts_after == counts.max()).all()
    with pytest.raises(ValueError, match="target"):
        balance.balance(x, y, "ros", target="mode")


def test_copies_and_new_images_are_traced_to_their_sources(results, train):
    x, y = train
    for method in ("none", "ros", "rus", "hybrid"):
        r = results[method]
        assert not r.is_synthetic.any()
        np.testing.assert_array_equal(r.x, x[r.source_index])
        np.testing.assert_array_equal(r.y, y[r.source_index])
    for method in ("smote", "augment"):
        r = results[method]
        assert r.is_synthetic.sum() == len(r) - len(y)
        np.testing.assert_array_equal(r.x[~r.is_synthetic], x)  # originals first, unchanged
    aug = results["augment"]
    np.testing.assert_array_equal(aug.y, y[aug.source_index])
    assert (results["smote"].source_index[results["smote"].is_synthetic] == -1).all()


@pytest.mark.parametrize("method", balance.METHODS)
def test_seeded(train, method):
    x, y = train
    a = balance.balance(x, y, method, seed=3, progress=False)
    b = balance.balance(x, y, method, seed=3, progress=False)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_other_seed_other_sample(train):
    x, y = train
    assert not np.array_equal(balance.balance(x, y, "smote", seed=1).x, balance.balance(x, y, "smote", seed=2).x)


def test_smote_images_lie_between_their_parents(results, train):
    x, y = train
    smote = results["smote"]
    pick = balance.synthetic_examples(smote, n=10, seed=0)
    assert len(pick) == 10 and smote.is_synthetic[pick].all()
    assert len(set(smote.y[pick])) == int((smote.counts_after > smote.counts_before).sum())  # spread over classes
    parents = balance.smote_parents(x, y, smote.x[pick], smote.y[pick])
    assert len(parents) == 10
    # Same class, distinct parents, on the segment: only the uint8 rounding (rms ~0.29) remains.
    assert (y[parents["parent_a"]] == smote.y[pick]).all() and (y[parents["parent_b"]] == smote.y[pick]).all()
    assert (parents["parent_a"] != parents["parent_b"]).all()
    assert parents["t"].between(0, 1).all()
    assert (parents["max_abs_error"] <= 0.5 + 1e-3).all() and (parents["rms_error"] < 0.35).all()
    # Rebuilt from its parents, the image matches; with another same-class image as b, it does not.
    row = parents.iloc[0]
    a, b, t = x[row.parent_a].astype(float), x[row.parent_b].astype(float), row.t
    assert np.abs(smote.x[pick[0]] - (a + t * (b - a))).max() <= row.max_abs_error + 1e-4
    other = next(i for i in np.flatnonzero(y == smote.y[pick[0]]) if i not in (row.parent_a, row.parent_b))
    assert np.abs(smote.x[pick[0]] - (a + t * (x[other] - a))).mean() > 1


def test_cleaning_notes_and_reduced_k_neighbors(results, train):
    assert "PCA" in results["smote_enn"].notes[0]
    x, y = train
    few = np.concatenate([np.flatnonzero(y != 1), np.flatnonzero(y == 1)[:3]])
    result = balance.balance(x[few], y[few], "smote", k_neighbors=5)
    assert "k_neighbors reduced from 5 to 2" in result.notes[0]
    assert (result.counts_after == result.counts_after.max()).all()
    one = np.concatenate([np.flatnonzero(y != 1), np.flatnonzero(y == 1)[:1]])
    with pytest.raises(ValueError, match="at least 2 images.*'disgust' has 1"):
        balance.balance(x[one], y[one], "smote")


def test_class_weights_are_sklearns_balanced_formula(train):
    y = train[1]
    weights = balance.class_weights(y)
    counts = np.bincount(y, minlength=NUM_CLASSES)
    assert sorted(weights) == list(range(NUM_CLASSES))
    for c, w in weights.items():
        assert w == pytest.approx(len(y) / (NUM_CLASSES * counts[c]))
    assert balance.class_weights(np.array([0, 0, 0, 2])) == pytest.approx({0: 4 / 6, 2: 2.0})


def test_clear_errors(train):
    x, y = train
    with pytest.raises(ValueError, match=r"method='smote-enn'.*'smote_enn'"):
        balance.balance(x, y, "smote-enn")
    with pytest.raises(ValueError, match="empty"):
        balance.balance(x[:0], y[:0], "ros")
    with pytest.raises(ValueError, match="empty"):
        balance.class_weights(np.array([], int))
    with pytest.raises(ValueError, match="labels"):
        balance.balance(x[:5], np.full(5, 9), "ros")


def test_summary_table(results):
    table = balance.summary_table(results)
    assert list(table.index) == list(balance.METHODS)
    assert {"seconds", "peak_memory_mb", "images_after", "disgust"} <= set(table.columns)
    assert (table["images_after"] == [len(r) for r in results.values()]).all()

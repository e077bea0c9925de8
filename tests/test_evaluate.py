"""Metrics against hand-computed values, metrics files, and the summary table."""

import copy
import json

import numpy as np
import pytest

from fer_utils import config, data, evaluate
from fer_utils.config import CLASS_NAMES, TEST, TRAIN, VAL


def one_hot(pred, n=7, p=0.9):
    proba = np.full((len(pred), n), (1 - p) / (n - 1))
    proba[np.arange(len(pred)), pred] = p
    return proba


def test_split_metrics_match_hand_computed_values():
    # 10 faces: classes 0 (4), 1 (2), 3 (4). Predictions: 0->0,0,0,1 ; 1->1,0 ; 3->3,3,3,3
    y_true = np.array([0, 0, 0, 0, 1, 1, 3, 3, 3, 3])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 3, 3, 3, 3])
    m = evaluate.split_metrics(y_true, one_hot(y_pred))
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.8)
    # recalls: class0 3/4, class1 1/2, class3 4/4 -> balanced accuracy = mean over present classes
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    # precision: class0 3/4, class1 1/2, class3 1 ; f1: 0.75, 0.5, 1.0 ; absent classes score 0
    assert m["per_class"]["angry"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert m["per_class"]["disgust"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["happy"]["f1"] == pytest.approx(1.0)
    assert m["per_class"]["fear"]["support"] == 0
    assert m["macro_f1"] == pytest.approx((0.75 + 0.5 + 1.0) / 7)
    assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 2 * 0.5 + 4 * 1.0) / 10)
    confusion = np.array(m["confusion"])
    assert confusion.shape == (7, 7) and confusion.sum() == 10
    assert confusion[0, 0] == 3 and confusion[0, 1] == 1 and confusion[1, 0] == 1  # rows = true class
    assert list(m["per_class"]) == list(CLASS_NAMES)


def test_top_k():
    proba = np.array([[0.5, 0.3, 0.2, 0, 0, 0, 0], [0.1, 0.2, 0.7, 0, 0, 0, 0]])
    y = np.array([1, 0])
    m = evaluate.split_metrics(y, proba)
    assert m["accuracy"] == 0.0
    assert m["top2"] == 0.5
    assert m["top3"] == 1.0


def test_wrong_probability_shape():
    with pytest.raises(ValueError, match=r"proba must be \(N, 7\)"):
        evaluate.split_metrics(np.array([0, 1]), np.zeros((2, 5)))


def test_clean_private_test_leaves_out_training_copies(small_ds):
    ds = small_ds.subset(np.arange(len(small_ds)))
    train, test = np.flatnonzero(ds.usage == TRAIN), np.flatnonzero(ds.usage == TEST)
    ds.pixels[test[:3]] = ds.pixels[train[:3]]
    perfect = {s: one_hot(ds.split(s)[1]) for s in (VAL, TEST)}
    m = evaluate.evaluate_predictions(perfect, ds)
    assert m[TEST]["n"] == len(test) and m[evaluate.CLEAN_TEST]["n"] == len(test) - 3
    assert m[TEST]["accuracy"] == m[evaluate.CLEAN_TEST]["accuracy"] == 1.0


def _record(run="03_cnn_small_none_cpu", acc=0.5):
    metrics = {s: evaluate.split_metrics(np.array([0, 1, 3, 3]), one_hot(np.array([0, 1, 3, 2 if acc < 1 else 3])))
               for s in (VAL, TEST, evaluate.CLEAN_TEST)}
    return evaluate.metrics_record(run, "03_baselines", "cnn_small", "none", "cpu", {"lr": 1e-3},
                                   {"name": "x", "fingerprint": "abc", "n_train": 1, "n_val": 1, "n_test": 1},
                                   {"epochs": 2, "seconds": 90.0}, metrics, n_params=np.int64(10))


def test_metrics_file_round_trip_and_contract(tmp_path):
    record = _record()
    path = evaluate.write_metrics(record, tmp_path / "metrics")
    assert path.name == "03_cnn_small_none_cpu.json"
    assert not list(path.parent.glob("*.tmp"))
    loaded = evaluate.read_metrics(tmp_path / "metrics")[0]
    assert loaded == json.loads(json.dumps(record, default=int))
    for key in ("run", "notebook", "model", "sampling", "profile", "params", "dataset", "train", "metrics"):
        assert key in loaded
    for split in (VAL, TEST):
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top2", "top3", "per_class", "confusion"):
            assert key in loaded["metrics"][split]


def test_summary_lists_every_run(tmp_path):
    evaluate.write_metrics(_record("a_run"), tmp_path / "metrics")
    evaluate.write_metrics(_record("b_run", acc=1.0), tmp_path / "metrics")
    table = evaluate.write_summary(tmp_path)
    assert list(table["run"]) == ["a_run", "b_run"]
    assert list(table["PrivateTest_acc"]) == [75.0, 100.0]
    assert table["train_min"].tolist() == [1.5, 1.5]
    md = (tmp_path / "summary.md").read_text()
    assert "| a_run |" in md and "| b_run |" in md
    assert (tmp_path / "summary.csv").read_text().startswith("run,")


def test_against_claims_puts_our_number_beside_the_write_up_and_says_if_it_converged():
    def rec(acc, val):
        return {"metrics": {"PrivateTest": {"accuracy": acc, "n": 1000}}, "train": {"epochs": len(val), "stopped": "completed"},
                "history": {"val_accuracy": val}}

    converged = rec(0.62, [0.40, 0.55, 0.600, 0.601, 0.602, 0.602, 0.602, 0.602])
    rising = rec(0.50, [0.30, 0.40, 0.45, 0.48, 0.50, 0.52])
    table = evaluate.against_claims({"a": (62.16, "004", "same"), "b": (65.29, "004", "budget"), "c": (1.0, "x", "")},
                                    {"a": converged, "b": rising})
    assert list(table.index) == ["a", "b"]  # no record, no row
    assert table.loc["a", "gap (points)"] == pytest.approx(-0.16) and table.loc["b", "ours %"] == 50.0
    assert table.loc["a", "95% interval"] == evaluate.interval_text({"accuracy": 0.62, "n": 1000}) == "59.0-65.0"
    assert table.loc["a", "PublicTest gain, last 5 epochs"] == pytest.approx(0.2)
    assert table.loc["b", "PublicTest gain, last 5 epochs"] == pytest.approx(22.0)
    assert np.isnan(evaluate.late_gain({"val_accuracy": [0.1, 0.2]}))
    leaky = {"metrics": {"PrivateTest": {"accuracy": 0.57, "n": 100}, "leaky_test": {"accuracy": 0.569, "n": 1000}},
             "train": {"epochs": 4, "stopped": "time budget"}}
    other = evaluate.against_claims({"leaky": (85.97, "003", "protocol")}, {"leaky": leaky}, split="leaky_test")
    assert other.loc["leaky", "ours %"] == 56.9 and other.loc["leaky", "measured on"] == "leaky_test"


def test_the_claims_of_every_notebook_are_collected_in_one_table(tmp_path):
    def save(notebook, claims, records):
        (tmp_path / "tables").mkdir(exist_ok=True)
        evaluate.against_claims(claims, records).to_csv(tmp_path / "tables" / f"{notebook}_{evaluate.CLAIMS_TABLE}.csv")

    record = {"metrics": {"PrivateTest": {"accuracy": 0.65, "n": 3589}}, "train": {"epochs": 50, "stopped": "completed"}}
    assert (evaluate.claims_table(tmp_path)).empty
    save("04_vgg_baseline", {"VGG, paper recipe": (73.28, "paper", "width 1/4")}, {"VGG, paper recipe": record})
    save("03_baselines_fc_cnn", {"small CNN": (62.16, "004", "crops"), "medium CNN": (65.29, "004", "")},
         {"small CNN": record, "medium CNN": record})
    table = evaluate.claims_table(tmp_path)
    assert list(table["notebook"]) == ["03_baselines_fc_cnn"] * 2 + ["04_vgg_baseline"]
    assert list(table["model"]) == ["small CNN", "medium CNN", "VGG, paper recipe"]
    assert table["gap (points)"].tolist() == pytest.approx([2.84, -0.29, -8.28])
    evaluate.write_summary(tmp_path)
    md = (tmp_path / "claims.md").read_text()
    assert "| 04_vgg_baseline | VGG, paper recipe | paper | 73.28 | 65.0 | 63.4-66.5 | PrivateTest | -8.28 |" in md


def test_records_keep_every_face_and_intervals_are_wilson():
    from fer_utils.synthetic import make_synthetic_fer

    ds = make_synthetic_fer(300, seed=0)
    rng = np.random.default_rng(0)
    proba = {s: rng.dirichlet(np.ones(7), (ds.usage == s).sum()) for s in (VAL, TEST)}
    metrics = evaluate.evaluate_predictions(proba, ds)
    for split in (VAL, TEST):
        np.testing.assert_array_equal(evaluate.predicted_classes(metrics[split]), proba[split].argmax(1))
    assert evaluate.predicted_classes({"accuracy": 0.5}) is None  # an old record
    low, high = evaluate.accuracy_interval(686, 1000)
    assert low == pytest.approx(65.66, abs=0.01) and high == pytest.approx(71.41, abs=0.01)
    assert evaluate.interval_text({"accuracy": 0.686, "n": 1000}) == "65.7-71.4"


def test_paired_seeds_match_seeds_and_test_each_pair():
    from fer_utils.synthetic import make_synthetic_fer

    ds = make_synthetic_fer(300, seed=0)
    y = ds.split(TEST)[1]

    def run(seed, wrong):  # a record whose PrivateTest predictions get the first `wrong` faces wrong
        pred = y.copy()
        pred[:wrong] = (pred[:wrong] + 1) % 7
        m = {TEST: {**evaluate.split_metrics(y, one_hot(pred)), "predicted": "".join(map(str, pred))}}
        return {"params": {"seed": seed}, "metrics": m}

    a = [run(1, 10), run(2, 12), run(3, 5)]
    b = [run(2, 2), run(1, 0), run(4, 0)]  # seed 3 has no partner, seed 4 no counterpart
    table = evaluate.paired_seeds(a, b, ds)
    assert list(table.index) == ["seed 1", "seed 2", "mean over 2 seeds", "standard deviation"]
    n = len(y)
    assert table.loc["seed 1", "b - a (points)"] == pytest.approx(100 * 10 / n)
    assert table.loc["seed 2", "McNemar p"] == pytest.approx(evaluate.mcnemar_p(
        y, evaluate.predicted_classes(a[1]["metrics"][TEST]), evaluate.predicted_classes(b[0]["metrics"][TEST])))
    assert table.loc["seed 1", "McNemar p"] < 0.01  # 10 faces only b gets right, none the other way
    assert table.loc["mean over 2 seeds", "b - a (points)"] == pytest.approx(100 * 10 / n)
    assert table.loc["standard deviation", "b - a (points)"] == pytest.approx(0.0)


# --- FER+ ------------------------------------------------------------------------------------

# FER+'s columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
HAND_VOTES = np.array([[0, 8, 0, 0, 0, 0, 0, 0, 2, 0],   # happy
                       [0, 6, 0, 0, 0, 0, 0, 0, 4, 0],   # happy
                       [4, 0, 0, 4, 0, 0, 0, 0, 2, 0],   # no majority (a tie)
                       [0, 0, 0, 0, 0, 0, 0, 7, 3, 0],   # contempt: not one of the seven
                       [2, 0, 0, 8, 0, 0, 0, 0, 0, 0],   # sad
                       [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]])  # not a face
HAPPY, SAD, NEUTRAL = CLASS_NAMES.index("happy"), CLASS_NAMES.index("sad"), CLASS_NAMES.index("neutral")


def test_ferplus_scores_match_hand_computed_values():
    votes = data.FerPlusVotes(HAND_VOTES)
    predicted = np.array([HAPPY, SAD, HAPPY, HAPPY, SAD, HAPPY])
    proba = one_hot(predicted, p=0.7)
    scores = evaluate.ferplus_scores(predicted, votes, CLASS_NAMES, proba)
    assert scores["n"] == 3 and scores["accuracy"] == pytest.approx(2 / 3)  # faces 0, 1, 4: right, wrong, right
    assert scores["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # happy 1 of 2, sad 1 of 1
    assert scores["left_out"] == {"no majority": 1, "contempt": 1, "not a face": 1}
    assert scores["accuracy_95"] == pytest.approx(list(evaluate.accuracy_interval(2, 3)))
    # the probability of an annotator's vote among the seven classes: face 0 all happy (predicted, .7), face 1
    # happy (predicted sad: .05), face 2 neutral and sad (.05 each), face 4 sad .8 (predicted) and neutral .2;
    # faces 3 and 5 have no vote among the seven (contempt, unknown, not a face) and are left out
    other = 0.3 / 6
    expected = [0.7, other, other, 0.7 * 0.8 + other * 0.2]
    assert scores["vote_probability"] == pytest.approx(np.mean(expected))
    eight = config.FERPLUS_CLASS_NAMES  # an 8-class model saying contempt on a happy face is wrong
    with_contempt = evaluate.ferplus_scores(np.array([7, HAPPY, 0, 7, SAD, 0]), votes, eight)
    assert with_contempt["accuracy"] == pytest.approx(2 / 3) and "vote_probability" not in with_contempt


def test_records_hold_ferplus_scores_and_rescoring_keeps_the_record(tmp_path):
    from fer_utils.runs import RunStore
    from fer_utils.synthetic import make_synthetic_fer

    ds = make_synthetic_fer(300, seed=0)
    rng = np.random.default_rng(0)
    proba = {s: rng.dirichlet(np.ones(7), (ds.usage == s).sum()) for s in (VAL, TEST)}
    metrics = evaluate.evaluate_predictions(proba, ds)
    for split in (VAL, TEST):
        direct = evaluate.ferplus_scores(proba[split].argmax(1), ds.ferplus_split(split), CLASS_NAMES, proba[split])
        assert metrics[split]["ferplus"] == direct and 0 < direct["vote_probability"] < 1
    old = copy.deepcopy(evaluate.metrics_record("12_old", "12_champion", "cnn", "none", "cpu", {}, ds.describe(),
                                                {"epochs": 1, "seconds": 60.0}, metrics))
    for split in (VAL, TEST):  # as written before FER+ scores existed
        del old["metrics"][split]["ferplus"]
    store = RunStore(tmp_path / "metrics", tmp_path / "models")
    store.save(old)
    assert evaluate.ferplus_cell(old) == "not scored yet"
    rescored = evaluate.with_ferplus(store.record("12_old"), ds)
    assert rescored["metrics"][TEST]["ferplus"] == {k: v for k, v in metrics[TEST]["ferplus"].items() if k != "vote_probability"}
    store.save({**rescored, "created": "later"})
    assert store.superseded() == [] and store.record("12_old")["created"] == old["created"]
    table = evaluate.summary_table(store.records())
    low, high = metrics[TEST]["ferplus"]["accuracy_95"]
    assert table.loc[0, "PrivateTest_FER+_acc_95"] == f"{100 * metrics[TEST]['ferplus']['accuracy']:.2f} ({low:.1f}-{high:.1f})"
    with pytest.raises(ValueError, match="12_old: its model predicts"):  # a model that is not the record's
        evaluate.with_ferplus(old, ds, lambda faces: np.roll(one_hot(np.zeros(len(faces), int)), 1, axis=1))
    gone = {k: v for k, v in _record().items()}
    assert evaluate.ferplus_cell(gone) == "model and per-face predictions gone"
    assert evaluate.summary_table([gone]).loc[0, "PrivateTest_FER+_acc_95"] == "model and per-face predictions gone"

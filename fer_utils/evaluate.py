"""Evaluation and reporting: the metrics of DESIGN.md, metrics files, and the summary table.

A split's metrics (``split_metrics``): accuracy, balanced accuracy, macro and weighted F1,
top-2/top-3 accuracy, per-class precision/recall/F1/support and the 7x7 confusion matrix
(rows = true class). ``evaluate_splits`` computes them on PublicTest, PrivateTest and
``PrivateTest_clean`` (PrivateTest without the images whose pixels also appear in Training).
With FER+'s votes (``FERDataset.ferplus``), PublicTest's and PrivateTest's metrics also hold
``ferplus`` (:func:`ferplus_scores`): the same predictions scored against FER+'s majority label.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from . import machine
from .config import CLASS_NAMES, PROJECT_ROOT, TEST, VAL
from .data import NO_MAJORITY, FERDataset, FerPlusVotes, without_training_duplicates
from .files import write_text_atomic

#: How a record's ``train.stopped`` starts when the time cap stopped the run before its epochs.
CAPPED = "time budget"
CLEAN_TEST = "PrivateTest_clean"  #: PrivateTest without images that also appear in Training
EVAL_SPLITS = (VAL, TEST, CLEAN_TEST)


def split_metrics(y_true: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """All DESIGN.md metrics of one split from true labels ``(N,)`` and probabilities ``(N, classes)``
    over ``class_names`` (FER2013's seven by default)."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = len(class_names)
    if proba.shape != (len(y_true), n_classes):
        raise ValueError(f"proba must be (N, {n_classes}) for N={len(y_true)} labels, got {proba.shape}")
    y_pred = proba.argmax(axis=1)
    labels = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "top2": float(top_k_accuracy_score(y_true, proba, k=2, labels=labels)),
        "top3": float(top_k_accuracy_score(y_true, proba, k=3, labels=labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def evaluate_splits(predict: Callable[[np.ndarray], np.ndarray], ds: FERDataset) -> dict:
    """Metrics on PublicTest, PrivateTest and PrivateTest_clean.

    ``predict`` maps uint8 faces ``(N, 48, 48)`` to probabilities ``(N, classes)`` over
    ``ds.class_names``: a Keras model's ``predict``, an ONNX session wrapper, an ensemble average, ...
    """
    return evaluate_predictions({split: predict(ds.split(split)[0]) for split in (VAL, TEST)}, ds)


def evaluate_predictions(proba_by_split: dict[str, np.ndarray], ds: FERDataset) -> dict:
    """Metrics from precomputed probabilities ``{"PublicTest": (N,7), "PrivateTest": (M,7)}``;
    PublicTest's and PrivateTest's also keep the predicted class of every face (``predicted``, one
    digit a face in split order: ``predicted_classes``), so two runs can be compared face by face,
    and, when ``ds`` has FER+'s votes, the scores against them (``ferplus``: :func:`ferplus_scores`)."""
    out = {split: {**split_metrics(ds.split(split)[1], proba_by_split[split], ds.class_names),
                   "predicted": "".join(map(str, np.asarray(proba_by_split[split]).argmax(axis=1)))}
           for split in (VAL, TEST)}
    if ds.ferplus is not None:
        for split in (VAL, TEST):
            proba = np.asarray(proba_by_split[split])
            out[split]["ferplus"] = ferplus_scores(proba.argmax(axis=1), ds.ferplus_split(split), ds.class_names, proba)
    test_rows = np.flatnonzero(ds.usage == TEST)
    keep = without_training_duplicates(ds, TEST)[test_rows]
    out[CLEAN_TEST] = split_metrics(ds.labels[test_rows][keep], np.asarray(proba_by_split[TEST])[keep], ds.class_names)
    return out


def predicted_classes(split_metrics_: dict) -> np.ndarray | None:
    """The per-face predicted classes a split's metrics keep (``evaluate_predictions``), or None
    for a record written before they were kept."""
    digits = split_metrics_.get("predicted")
    return None if digits is None else np.frombuffer(digits.encode(), dtype=np.uint8) - ord("0")


def ferplus_scores(predicted: np.ndarray, votes: FerPlusVotes, model_classes: tuple[str, ...] = CLASS_NAMES,
                   proba: np.ndarray | None = None, scored_classes: tuple[str, ...] = CLASS_NAMES) -> dict:
    """A model's predictions of one split scored against FER+'s majority label (FER+'s rule:
    :meth:`FerPlusVotes.majority`) over ``scored_classes`` (FER2013's seven by default, so every
    model is compared on the same faces).

    ``predicted``: class indices ``(N,)`` into ``model_classes`` (a class outside
    ``scored_classes``, e.g. an 8-class model's contempt, is simply wrong); ``votes``: the same
    faces' votes. Returns ``n`` (faces scored), ``accuracy``, ``accuracy_95`` (Wilson interval,
    percent), ``balanced_accuracy`` (mean recall over the classes present), ``left_out`` (faces
    without a majority label over ``scored_classes``, by reason) and, given the probabilities
    ``proba`` ``(N, classes)``, ``vote_probability``: the mean over faces of the probability the
    model gives to an annotator's vote among its classes (votes for classes it lacks, unknown and
    NF left out; faces with no such vote too).
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    if len(predicted) != len(votes):
        raise ValueError(f"{len(predicted)} predictions for {len(votes)} faces with FER+ votes")
    majority, reasons = votes.majority(scored_classes)
    as_scored = np.array([scored_classes.index(c) if c in scored_classes else -1 for c in model_classes])[predicted]
    kept = majority >= 0
    y_true, y_pred = majority[kept], as_scored[kept]
    correct = int((y_true == y_pred).sum())
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    left_out = pd.Series(reasons[~kept]).value_counts()
    scores = {"n": int(kept.sum()), "accuracy": correct / max(int(kept.sum()), 1),
              "accuracy_95": list(accuracy_interval(correct, int(kept.sum()))) if kept.any() else None,
              "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
              "left_out": {reason: int(left_out.get(reason, 0))
                           for reason in (NO_MAJORITY, *sorted(set(left_out.index) - {NO_MAJORITY}))},
              "labels": f"FER+ majority over {len(scored_classes)} classes",
              "votes_sha256": votes.sha256}
    if proba is not None:
        class_votes = votes.class_votes(model_classes).astype(np.float64)
        totals = class_votes.sum(axis=1)
        share = class_votes[totals > 0] / totals[totals > 0, None]
        scores["vote_probability"] = float((np.asarray(proba, np.float64)[totals > 0] * share).sum(axis=1).mean())
    return scores


def ferplus_from_predictions(record: dict, ds: FERDataset) -> dict[str, dict]:
    """FER+ scores (:func:`ferplus_scores`, without ``vote_probability``: that needs the model) of
    a metrics record from the per-face predictions it keeps, for PublicTest and PrivateTest;
    ``{}`` when it keeps none or was not scored on ``ds``'s faces in ``ds``'s split order (another
    dataset, a leaky resampling) or ``ds`` has no votes."""
    dataset = record.get("dataset", {})
    if ds.ferplus is None or record.get("leaky") or dataset.get("fingerprint") != ds.fingerprint \
            or labels_of(record) != FER2013_LABELS:  # a run on FER+'s labels scored a subset of the faces
        return {}
    classes = tuple(record.get("classes", CLASS_NAMES))
    out = {}
    for split in (VAL, TEST):
        predicted = predicted_classes(record.get("metrics", {}).get(split, {}))
        if predicted is not None and len(predicted) == int((ds.usage == split).sum()):
            out[split] = ferplus_scores(predicted, ds.ferplus_split(split), classes)
    return out


def with_ferplus(record: dict, ds: FERDataset, predict: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """``record`` with FER+ scores (``ferplus``) in its PublicTest and PrivateTest metrics, nothing
    else changed: from ``predict`` (the record's model: faces to probabilities over its classes), which
    also gives ``vote_probability``, else from the per-face predictions it keeps
    (:func:`ferplus_from_predictions`); unchanged when it has neither or was scored on other faces.
    A model that does not reproduce the record's accuracy (more than one face in a thousand differs)
    raises ValueError naming the run: it is not the model that was scored."""
    scores = ferplus_from_predictions(record, ds)
    dataset = record.get("dataset", {})
    if predict is not None and ds.ferplus is not None and not record.get("leaky") and "derived" not in dataset \
            and dataset.get("fingerprint") == ds.fingerprint:
        classes = tuple(record.get("classes", CLASS_NAMES))
        for split in (VAL, TEST):
            faces, labels = ds.split(split)
            proba = np.asarray(predict(faces))
            kept = predicted_classes(record["metrics"][split])
            differs = (int((proba.argmax(axis=1) != kept).sum()) if kept is not None else
                       abs(round(record["metrics"][split]["accuracy"] * len(labels)) - int((proba.argmax(axis=1) == labels).sum())))
            if differs > len(labels) / 1000:
                raise ValueError(f"{record['run']}: its model predicts {differs} {split} faces otherwise than its "
                                 "record says; not the model that was scored")
            scores[split] = ferplus_scores(proba.argmax(axis=1), ds.ferplus_split(split), classes, proba)
    if not scores:
        return record
    metrics = {**record["metrics"], **{split: {**record["metrics"][split], "ferplus": f} for split, f in scores.items()}}
    return {**record, "metrics": metrics}


def ferplus_cell(record: dict, split: str = TEST) -> str:
    """A record's FER+ majority accuracy on ``split`` for a table (percent, with its 95% interval),
    or why it has none: its model and per-face predictions are gone, or it was not scored yet."""
    m = record.get("metrics", {}).get(split, {})
    if (f := m.get("ferplus")) is not None:
        return f"{100 * f['accuracy']:.2f} ({f['accuracy_95'][0]:.1f}-{f['accuracy_95'][1]:.1f})"
    if record.get("leaky"):
        return "n/a: leaky resampled split"
    model_kept = bool(record.get("model_file")) and model_path(record).is_file()
    if "predicted" in m or model_kept:
        return "not scored yet"
    return "model and per-face predictions gone"


def accuracy_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of ``correct`` out of ``n`` (statsmodels), in percent."""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(correct, n, alpha=1 - level, method="wilson")
    return 100 * float(low), 100 * float(high)


def was_capped(train: dict) -> bool:
    """Whether a record's ``train`` entry says the time cap stopped it (``capped``, or, in records
    written before that field, its ``stopped`` reason): never released, never counted as a seed."""
    return bool(train.get("capped") or str(train.get("stopped", "")).startswith(CAPPED))


def interval_text(split_metrics_: dict) -> str:
    """A split's accuracy interval (``accuracy_interval``) as text, e.g. ``67.1-70.1``."""
    low, high = accuracy_interval(round(split_metrics_["accuracy"] * split_metrics_["n"]), split_metrics_["n"])
    return f"{low:.1f}-{high:.1f}"


def seed_table(records: list[dict], splits: tuple[str, ...] = (VAL, TEST)) -> pd.DataFrame:
    """One row per seed of a recipe (accuracy with its 95% Wilson interval and balanced accuracy on
    each of ``splits``; epochs, minutes, faces/s and machine), then the mean and standard deviation
    over the finished seeds. A run the time cap stopped is shown, marked, and left out of both."""
    rows = {}
    for r in records:
        row = {}
        for split in splits:
            m = r["metrics"][split]
            row |= {f"{split} accuracy %": 100 * m["accuracy"], f"{split} 95% interval": interval_text(m),
                    f"{split} balanced %": 100 * m["balanced_accuracy"]}
        t = r["train"]
        rows[f"seed {r['params']['seed']}"] = row | {
            "epochs": t["epochs"], "minutes": round(t["seconds"] / 60, 1), "faces/s": t["images_per_second"],
            "machine": f"{t.get('cpu', 'unknown')}, {t.get('precision', 'unknown')}",
            "counted": not was_capped(t)}
    table = pd.DataFrame(rows).T
    counted = table[table["counted"].astype(bool)]
    numeric = [c for c in table.columns if c.endswith("%")]
    summary = pd.DataFrame({f"mean over {len(counted)} seeds": counted[numeric].astype(float).mean(),
                            "standard deviation": counted[numeric].astype(float).std(ddof=1)}).T
    return pd.concat([table, summary]).round(2)


def paired_seeds(a: list[dict], b: list[dict], ds: FERDataset, split: str = TEST) -> pd.DataFrame:
    """Two recipes ``a`` and ``b`` run with the same seeds, seed by seed on ``split``: each one's
    accuracy, the difference (b - a, points) and the exact McNemar p of the pair from their per-face
    predictions (empty for a record written before they were kept); then the differences' mean and
    standard deviation over the seeds both finished."""
    by_seed = {r["params"]["seed"]: r for r in b}
    y = ds.split(split)[1]
    rows = {}
    for ra in a:
        rb = by_seed.get(ra["params"]["seed"])
        if rb is None:
            continue
        pa, pb = predicted_classes(ra["metrics"][split]), predicted_classes(rb["metrics"][split])
        rows[f"seed {ra['params']['seed']}"] = {
            "a %": 100 * ra["metrics"][split]["accuracy"], "b %": 100 * rb["metrics"][split]["accuracy"],
            "b - a (points)": 100 * (rb["metrics"][split]["accuracy"] - ra["metrics"][split]["accuracy"]),
            "McNemar p": mcnemar_p(y, pa, pb) if pa is not None and pb is not None else np.nan}
    table = pd.DataFrame(rows).T
    diff = table["b - a (points)"].astype(float)
    table.loc[f"mean over {len(diff)} seeds"] = {"a %": table["a %"].mean(), "b %": table["b %"].mean(),
                                                 "b - a (points)": diff.mean(), "McNemar p": np.nan}
    table.loc["standard deviation"] = {"a %": table["a %"].iloc[:-1].std(ddof=1), "b %": table["b %"].iloc[:-1].std(ddof=1),
                                       "b - a (points)": diff.std(ddof=1), "McNemar p": np.nan}
    return table


def scores_table(metrics_by_name: dict[str, dict], splits: tuple[str, ...] = (VAL, TEST, CLEAN_TEST)) -> pd.DataFrame:
    """One row per model (``{name: evaluate_splits(...)}``): accuracy, balanced accuracy and macro F1
    (percent) on each of ``splits``, PublicTest's and PrivateTest's 95% intervals, and, where the
    metrics hold them (:func:`ferplus_scores`), the same predictions against FER+'s majority label
    (accuracy with its interval, balanced accuracy) and the probability given to annotators' votes."""
    rows = {}
    for name, m in metrics_by_name.items():
        row = {f"{split} {key.replace('_', ' ')} %": 100 * m[split][key] for split in splits
               for key in ("accuracy", "balanced_accuracy", "macro_f1")}
        row |= {f"{split} 95% interval": interval_text(m[split]) for split in (VAL, TEST)}
        for split in (VAL, TEST):
            if (f := m[split].get("ferplus")) is not None:
                row |= {f"{split} FER+ majority %": 100 * f["accuracy"],
                        f"{split} FER+ 95% interval": f"{f['accuracy_95'][0]:.1f}-{f['accuracy_95'][1]:.1f}",
                        f"{split} FER+ balanced %": 100 * f["balanced_accuracy"],
                        f"{split} FER+ vote probability %": 100 * f.get("vote_probability", np.nan)}
        rows[name] = row
    return pd.DataFrame(rows).T


def mcnemar_p(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value (statsmodels) of two classifiers' predictions ``(N,)`` of
    the same faces: only the faces exactly one of them gets right count."""
    from statsmodels.stats.contingency_tables import mcnemar

    y_true = np.asarray(y_true)
    right = confusion_matrix(np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true, labels=[True, False])
    return float(mcnemar(right, exact=True).pvalue)


# ---------------------------------------------------------------------------------------------
# Metrics files


def metrics_record(run: str, notebook: str, model: str, sampling: str, profile: str, params: dict,
                   dataset: dict, train: dict, metrics: dict, classes: tuple[str, ...] = CLASS_NAMES, **extra) -> dict:
    """A metrics-file dict with the DESIGN.md keys and the model's ``classes`` (its output order),
    plus ``extra`` (weights, n_params, ...)."""
    import keras  # only for its version and backend; keras is imported by then anyway

    record = {
        "run": run, "notebook": notebook, "model": model, "sampling": sampling, "profile": profile,
        "params": params, "dataset": dataset, "train": train, "metrics": metrics, "classes": list(classes),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": {"python": platform.python_version(), "keras": keras.__version__,
                        keras.backend.backend(): _version(keras.backend.backend()),
                        "machine": machine.architecture()},
    }
    record.update(extra)
    return record


def _version(package: str) -> str:
    """An installed package's version (``unknown`` when its metadata is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def write_metrics(record: dict, metrics_dir: str | os.PathLike) -> Path:
    """Write ``<metrics_dir>/<run>.json`` atomically (temp file, then rename)."""
    path = Path(metrics_dir) / f"{record['run']}.json"
    return write_text_atomic(path, json.dumps(record, indent=1, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_metrics(metrics_dir: str | os.PathLike) -> list[dict]:
    """Every ``*.json`` metrics file of a folder, sorted by run name."""
    return [json.loads(p.read_text()) for p in sorted(Path(metrics_dir).glob("*.json"))]


def model_path(record: dict) -> Path:
    """The Keras file a metrics record names (``model_file``, relative to the project root)."""
    path = Path(record["model_file"])
    return path if path.is_absolute() else PROJECT_ROOT / path


def trained_on(record: dict, fingerprint: str) -> bool:
    """Whether a run trained and was evaluated on the dataset with ``fingerprint`` itself, with its
    own labels, not on data derived from it (aligned faces, a leaky resampling) nor on other labels
    of its images (FER+'s: ``dataset.labels``, :func:`labels_of`)."""
    dataset = record.get("dataset", {})
    return dataset.get("fingerprint") == fingerprint and "derived" not in dataset and labels_of(record) == FER2013_LABELS


#: What :func:`labels_of` calls the labels of the FER2013 file itself.
FER2013_LABELS = "fer2013"


def labels_of(record: dict) -> str:
    """Which labels a run trained and was scored on: ``fer2013`` (the dataset's own), or the name its
    ``dataset.labels`` entry gives (``ferplus``: FER+'s votes over the same images)."""
    return record.get("dataset", {}).get("labels", {}).get("name", FER2013_LABELS)


def trained_runs(records: list[dict], fingerprint: str | None = None) -> list[dict]:
    """Records whose model file exists, trained and scored on FER2013's own labels (never a run on
    FER+'s: its accuracies answer another label set, :func:`labels_of`), and, if ``fingerprint`` is
    given, on that very dataset, not on one derived from it such as aligned faces; best PublicTest
    accuracy first. PrivateTest plays no part in the order."""
    usable = [r for r in records if r.get("model_file") and not r.get("leaky") and model_path(r).is_file()
              and labels_of(r) == FER2013_LABELS and (fingerprint is None or trained_on(r, fingerprint))]
    return sorted(usable, key=lambda r: r["metrics"][VAL]["accuracy"], reverse=True)


def summary_table(records: list[dict]) -> pd.DataFrame:
    """One row per run: what was trained, how long, and its headline metrics (percent)."""
    rows = []
    for r in records:
        m = r["metrics"]
        test, val = m.get(TEST, {}), m.get(VAL, {})
        rows.append({
            "run": r["run"],
            "notebook": r.get("notebook", ""),
            "model": r.get("model", ""),
            "sampling": r.get("sampling", ""),
            "labels": labels_of(r),
            "weights": r.get("weights", "none"),
            "params": r.get("n_params"),
            "profile": r.get("profile", ""),
            "epochs": r.get("train", {}).get("epochs"),
            "train_min": round(r.get("train", {}).get("seconds", 0) / 60, 1),
            "capped": was_capped(r.get("train", {})),
            "PublicTest_acc": _pct(val.get("accuracy")),
            "PublicTest_acc_95": interval_text(val) if val else None,
            "PrivateTest_acc": _pct(test.get("accuracy")),
            "PrivateTest_acc_95": interval_text(test) if test else None,
            "PrivateTest_bal_acc": _pct(test.get("balanced_accuracy")),
            "PrivateTest_macro_f1": _pct(test.get("macro_f1")),
            "PrivateTest_top2": _pct(test.get("top2")),
            "PrivateTest_clean_acc": _pct(m.get(CLEAN_TEST, {}).get("accuracy")),
            "PrivateTest_FER+_acc_95": ferplus_cell(r, TEST),
            "PrivateTest_FER+_bal_acc": _pct(test.get("ferplus", {}).get("balanced_accuracy")),
            "PrivateTest_FER+_vote_prob": _pct(test.get("ferplus", {}).get("vote_probability")),
            "fingerprint": r.get("dataset", {}).get("fingerprint", ""),
        })
    return pd.DataFrame(rows)


def against_claims(claims: dict[str, tuple[float, str, str]], records: dict[str, dict],
                   split: str = TEST) -> pd.DataFrame:
    """Each write-up's claim beside this project's number for the same model: ``claims`` maps a
    row label to ``(claimed accuracy %, source, what differs here)``, ``records`` the same labels
    to metrics records (labels without a record are left out). Columns: the claim, our accuracy
    on ``split`` (PrivateTest unless the comparison needs another test set) with its 95% interval, the gap in points,
    its FER+ majority accuracy on the same split (:func:`ferplus_cell`), epochs, how training stopped,
    the PublicTest gain of its last epochs (``late_gain``: whether it had converged) and what differs."""
    rows = {}
    for label, (claim, source, differs) in claims.items():
        if (record := records.get(label)) is None:
            continue
        ours = 100 * record["metrics"][split]["accuracy"]
        rows[label] = {"write-up": source, "claim %": claim, "ours %": round(ours, 2),
                       "95% interval": interval_text(record["metrics"][split]), "measured on": split,
                       "gap (points)": round(ours - claim, 2), FERPLUS_COLUMN: ferplus_cell(record, split),
                       "epochs": record["train"]["epochs"],
                       "stopped": record["train"]["stopped"],
                       "PublicTest gain, last 5 epochs": late_gain(record.get("history", {})), "what differs": differs,
                       "run": record.get("run", "")}
    return pd.DataFrame(rows).T


def late_gain(history: dict, last: int = 5) -> float:
    """How much the best PublicTest accuracy rose during the last ``last`` epochs, in points (NaN
    for a shorter history): near zero once a run has converged (issue 15 asks for under 0.3)."""
    val = history.get("val_accuracy", [])
    if len(val) <= last:
        return float("nan")
    return round(100 * (max(val) - max(val[:-last])), 2)


def _pct(value):
    return None if value is None else round(100 * value, 2)


def write_summary(reports_dir: str | os.PathLike) -> pd.DataFrame:
    """Build ``<reports_dir>/summary.md`` and ``summary.csv`` from every metrics file, and
    ``claims.md`` from every notebook's claims table (:func:`claims_table`)."""
    reports_dir = Path(reports_dir)
    table = summary_table(read_metrics(reports_dir / "metrics"))
    reports_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("summary.csv", table.to_csv(index=False)), ("summary.md", _summary_markdown(table)),
                       ("claims.md", _claims_markdown(claims_table(reports_dir)))):
        write_text_atomic(reports_dir / name, text)
    return table


#: The name under which notebooks save their :func:`against_claims` table (``NotebookRun.save_table``).
CLAIMS_TABLE = "against_claims"
#: The claims tables' column of our number against FER+'s majority labels (:func:`ferplus_cell`).
FERPLUS_COLUMN = "ours, FER+ majority %"


def claims_table(reports_dir: str | os.PathLike) -> pd.DataFrame:
    """Every notebook's :func:`against_claims` table (``tables/<notebook>_against_claims.csv``)
    in one, notebook by notebook: each write-up's claim, our number, the gap and why."""
    paths = sorted((Path(reports_dir) / "tables").glob(f"*_{CLAIMS_TABLE}.csv"))
    parts = [pd.read_csv(path, index_col=0).rename_axis("model").reset_index()
             .assign(notebook=path.name[:-len(f"_{CLAIMS_TABLE}.csv")]) for path in paths]
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    # FER+ scores from the records as they are now (a record rescored after its notebook ran)
    records = {r["run"]: r for r in read_metrics(Path(reports_dir) / "metrics")}
    known = table["run"].map(records) if "run" in table else pd.Series(None, index=table.index)
    fresh = [ferplus_cell(record, split) if isinstance(record, dict) else None
             for record, split in zip(known, table.get("measured on", pd.Series(TEST, index=table.index)))]
    table[FERPLUS_COLUMN] = [new if new is not None else old for new, old in
                             zip(fresh, table.get(FERPLUS_COLUMN, pd.Series("no record", index=table.index)))]
    columns = [c for c in table.columns if c not in ("notebook", FERPLUS_COLUMN)]
    at = columns.index("gap (points)") + 1 if "gap (points)" in columns else len(columns)
    return table[["notebook", *columns[:at], FERPLUS_COLUMN, *columns[at:]]]


def _claims_markdown(table: pd.DataFrame) -> str:
    head = (
        "# Against the write-ups\n\n"
        "Each write-up's claim beside this project's converged number for the same model, from every "
        "notebook's claims table (`reports/tables/*_against_claims.csv`), generated by "
        "`fer_utils.evaluate.write_summary`. Ours is PrivateTest accuracy on the official split unless "
        "`measured on` says otherwise, with its 95% Wilson interval (a claim inside it is within noise of ours); "
        "`ours, FER+ majority %` scores the same model against FER+'s ten annotators (their majority label over "
        "the seven classes, with its 95% interval; `fer_utils.evaluate.ferplus_scores`), or says why it cannot; "
        "`PublicTest gain, last 5 epochs` under 0.3 points means the run "
        "had converged; `what differs` gives the reason for the gap.\n\n"
    )
    return head + (markdown_table(table) if not table.empty else "No claims tables yet.") + "\n"


def _summary_markdown(table: pd.DataFrame) -> str:
    head = (
        "# Results\n\n"
        "Every trained model of the project, generated from `reports/metrics/*.json` by "
        "`fer_utils.evaluate.write_summary`. Accuracies in percent; models chosen on PublicTest, "
        "reported on PrivateTest, each accuracy with its 95% Wilson interval (`_95`); `PrivateTest_clean` leaves out the PrivateTest images whose pixels "
        "also appear in Training. `weights: none` means trained from scratch. The `FER+` columns score the same "
        "PrivateTest predictions against FER+'s ten annotators (Barsoum et al. 2016): accuracy (with its 95% interval) "
        "and balanced accuracy against their majority label over the seven FER2013 classes (faces without one left "
        "out), and the mean probability the model gives to an annotator's vote (`vote_prob`); a record whose model "
        "and per-face predictions are gone says so. `labels`: what a run trained and was scored on: `fer2013` (the "
        "file's own labels, seven classes) or `ferplus` (FER+'s votes; its PublicTest and PrivateTest columns are then "
        "FER+ majority accuracy over FER+'s eight classes).\n\n"
    )
    if table.empty:
        return head + "No runs yet.\n"
    return head + markdown_table(table) + "\n"


def markdown_table(table: pd.DataFrame) -> str:
    """A pipe table of a DataFrame (no extra dependency); empty cells for missing values."""
    def cell(value):
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)

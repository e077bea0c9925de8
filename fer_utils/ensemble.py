"""Notebook 06 (write-up 003): softmax-average ensembles of trained models.

:func:`average_probabilities` averages probability arrays or predict functions (optional
weights); :func:`member_probabilities` runs each member's saved model on the evaluation splits;
:func:`write_ensemble_record` writes the ensemble's metrics file (model ``ensemble``, training time
the sum of the members'); :func:`ensemble_gain` compares it with its best member per class;
:func:`best_run_per_notebook` picks the members of an ensemble across notebooks.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .config import NUM_CLASSES, TEST, VAL
from .data import FERDataset
from .evaluate import evaluate_predictions, metrics_record, trained_runs
from .export import ModelFileError, load_keras_model
from .runs import RunRecord, RunStore
from .train import predict_proba


def average_probabilities(members: Sequence, x: np.ndarray | None = None,
                          weights: Sequence[float] | None = None) -> np.ndarray:
    """Softmax averaging: the (weighted) mean of the members' class probabilities.

    ``members``: probability arrays ``(N, 7)`` and/or functions mapping faces ``x`` (uint8
    ``(N, 48, 48)``) to such arrays (e.g. ``lambda x: predict_proba(model, x)``); functions need
    ``x``. ``weights``: one non-negative weight per member (normalised to sum 1), None = equal.
    Returns float64 ``(N, 7)``; rows sum to 1 when the members' rows do.
    """
    if len(members) == 0:
        raise ValueError("average_probabilities: no members")
    arrays = []
    for i, member in enumerate(members):
        if callable(member):
            if x is None:
                raise ValueError(f"member {i} is a function: pass the faces x")
            member = member(x)
        arrays.append(np.asarray(member, dtype=np.float64))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2 or arrays[0].shape[1] != NUM_CLASSES:
        raise ValueError(f"members must all give (N, {NUM_CLASSES}) probabilities; got shapes {sorted(shapes)}")
    w = np.ones(len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(arrays)} non-negative numbers with a positive sum; got {weights}")
    w = w / w.sum()
    return np.tensordot(w, np.stack(arrays), axes=1)


def ensemble_predictor(members: Sequence[Callable[[np.ndarray], np.ndarray]],
                       weights: Sequence[float] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function (faces ``(N, 48, 48)`` -> ``(N, 7)``) averaging ``members``' outputs,
    e.g. for ``evaluate.evaluate_splits``."""
    return lambda x: average_probabilities(members, x, weights)


def member_probabilities(records: Sequence[dict], ds: FERDataset, splits: Sequence[str] = (VAL, TEST),
                         batch_size: int = 512, skip_unloadable: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """``{run: {split: probabilities (N, 7)}}`` of each record's saved model on ``ds``'s splits
    (with the record's own test-time flip setting). With ``skip_unloadable`` a model file that
    Keras cannot load is reported and left out instead of raising."""
    out = {}
    for record in records:
        try:
            model = load_keras_model(record)
        except ModelFileError as err:
            if not skip_unloadable:
                raise
            print(f"{record['run']}: left out ({err})")
            continue
        flip = bool(record.get("params", {}).get("tta_flip", False))
        out[record["run"]] = {split: predict_proba(model, ds.split(split)[0], batch_size=batch_size, tta_flip=flip)
                              for split in splits}
        del model
    return out


def write_ensemble_record(store: RunStore, dataset, name: str, members: Sequence[dict],
                          proba_by_split: dict[str, np.ndarray], weights: Sequence[float] | None = None,
                          sampling: str | None = None, member_files: Sequence[str] | None = None) -> RunRecord:
    """Evaluate an ensemble's probabilities ``{"PublicTest": (N,7), "PrivateTest": (M,7)}`` on
    ``dataset`` and save its metrics file ``<NN>_ensemble_<name>_<profile>.json`` in ``store``: model
    ``ensemble``, ``params`` listing the members (runs, the files their probabilities came from:
    ``member_files``, default their Keras models, and weights), training time the sum of the
    members'. Returns the record (it names no ``model_file``: the members' are listed)."""
    metrics = evaluate_predictions(proba_by_split, dataset)
    run_id = store.run_id("ensemble", name)
    params = {"model": "ensemble", "combination": "softmax average (mean of the members' class probabilities)",
              "members": [r["run"] for r in members],
              "weights": "equal" if weights is None else [float(w) for w in weights],
              "member_model_files": list(member_files or [r.get("model_file") for r in members])}
    seconds = float(sum(r["train"]["seconds"] for r in members))
    train = {"epochs": int(sum(r["train"]["epochs"] or 0 for r in members)), "seconds": round(seconds, 1),
             "stopped": "members trained separately", **members_machine(members),
             "members": {r["run"]: {"epochs": r["train"]["epochs"], "seconds": r["train"]["seconds"]} for r in members}}
    record = metrics_record(run_id, store.notebook, "ensemble", sampling or "+".join(r["sampling"] for r in members),
                            store.profile, params, dataset.describe(), train, metrics, weights="none",
                            n_params=int(sum(r.get("n_params") or 0 for r in members)))
    return store.save(record)


#: The fields of a record's ``train`` entry that say where it ran.
MACHINE_FIELDS = ("backend", "device", "cpu", "precision")


def members_machine(members: Sequence[dict]) -> dict:
    """Where an ensemble's members trained: each of ``MACHINE_FIELDS`` as the members' common value,
    or their distinct values joined by " | " (``unknown`` where a member's record does not say)."""
    out = {}
    for key in MACHINE_FIELDS:
        values = list(dict.fromkeys(str(r["train"].get(key) or "unknown") for r in members))
        out[key] = " | ".join(values)
    return out


def ensemble_gain(per_class: pd.DataFrame, ensemble: str) -> pd.DataFrame:
    """Per class (rows): the best member (of the other rows of a ``per_class_table``), its value,
    the ensemble's, and the gain (ensemble minus best member, same units)."""
    members = per_class.drop(index=ensemble)
    out = pd.DataFrame({"best member": members.idxmax(), "best member value": members.max(),
                        "members' mean": members.mean(), "ensemble": per_class.loc[ensemble]})
    out["gain over best"] = out["ensemble"] - out["best member value"]
    out["beats every member"] = out["gain over best"] > 0
    return out


def best_run_per_notebook(records: Sequence[dict], fingerprint: str | None = None,
                          exclude_notebooks: Sequence[str] = ()) -> list[dict]:
    """The best run (PublicTest accuracy) of each notebook among the honest trained runs on the
    dataset with ``fingerprint``: runs with a Keras file, not leaky, not on derived data; best first."""
    chosen = {}
    for record in trained_runs(records, fingerprint):
        notebook = record.get("notebook", "")
        if record.get("leaky") or notebook in exclude_notebooks or notebook in chosen:
            continue
        chosen[notebook] = record
    return list(chosen.values())

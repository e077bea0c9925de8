"""The store of trained runs: one metrics file (``<metrics_dir>/<run>.json``) and one Keras model
(``<models_dir>/<run>.keras``) per run, and the resumable state of a run in training
(``<models_dir>/<run>.work/``).

A run is a :class:`RunRecord`: its metrics file's JSON (the contract of ``DESIGN.md``) with named
accessors for what notebooks read from it (``record.score("accuracy", TEST)``, ``record.label``, ...).
Every training function asks the store first (:meth:`RunStore.existing`: the same run, dataset and
settings were trained before, so they are loaded instead) and hands it the finished run
(:meth:`RunStore.finish`); every notebook that picks a model from earlier ones asks it too
(:meth:`RunStore.trained`, :meth:`RunStore.best`, :func:`select_for_export`), so "train, or reuse
the saved run" and "which runs exist" are written once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .config import CLASS_NAMES, TEST, VAL
from .evaluate import labels_of, model_path, read_metrics, trained_on, trained_runs, write_metrics
from .naming import DEFAULT_SEED, describe_run


def _train_entry(key: str, doc: str) -> property:
    """A :class:`RunRecord` property reading ``key`` of the metrics file's ``train`` entry."""
    return property(lambda record: record["train"][key], doc=doc)


class RunRecord(dict):
    """One trained run: the metrics file's JSON as a dict (so it is written, compared and passed
    on unchanged), with named accessors. Scores are in percent."""

    @property
    def run_id(self) -> str:
        return self["run"]

    @property
    def label(self) -> str:
        """The run in words, for tables and figures (``naming.describe_run``)."""
        return describe_run(self)

    def score(self, key: str, split: str) -> float:
        """A headline metric (``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``top2``, ...) of
        ``split`` in percent. The split is always named: PublicTest chooses, PrivateTest reports."""
        return 100 * self["metrics"][split][key]

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's classes in output order (records written before they were kept: FER2013's seven)."""
        return tuple(self.get("classes", CLASS_NAMES))

    @property
    def labels(self) -> str:
        """Which labels it trained and was scored on: ``fer2013``, or ``ferplus`` (``evaluate.labels_of``)."""
        return labels_of(self)

    def per_class(self, key: str = "recall", split: str = TEST) -> pd.Series:
        """``precision``, ``recall`` or ``f1`` of every class on ``split`` (0-1), in class order."""
        return pd.Series({c: self["metrics"][split]["per_class"][c][key] for c in self.classes}, name=self.label)

    def per_class_table(self, split: str = TEST) -> pd.DataFrame:
        """Precision, recall, F1 and support of every class on ``split``."""
        return pd.DataFrame(self["metrics"][split]["per_class"]).T[["precision", "recall", "f1", "support"]]

    def confusion(self, split: str = TEST) -> np.ndarray:
        """The confusion matrix of ``split`` (classes x classes, rows: true class)."""
        return np.asarray(self["metrics"][split]["confusion"])

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch training history (``loss``, ``accuracy``, ``val_accuracy``, ...)."""
        return self.get("history", {})

    @property
    def minutes(self) -> float:
        """Training time in minutes."""
        return self["train"]["seconds"] / 60

    # What the metrics file's ``train`` entry says about how and where the run trained.
    epochs = _train_entry("epochs", "Epochs trained.")
    n_train = _train_entry("n_train", "Training images (after any resampling).")
    faces_per_second = _train_entry("images_per_second", "Training throughput: faces seen per second of training.")
    stopped = _train_entry("stopped", "Why training stopped (``completed``, early stopping, the time cap, ...).")
    training_precision = _train_entry("precision", "The numeric precision training ran at (``float32`` or "
                                      "``mixed_bfloat16``; not the precision metric, which is :meth:`per_class`'s).")
    device = _train_entry("device", "Where training ran: the accelerator, or ``cpu (<N> cores)`` (``machine.describe``).")
    cpu = _train_entry("cpu", "The processor of the machine that trained the run.")

    def trained_on(self, fingerprint: str) -> bool:
        """Whether the run trained on the dataset with ``fingerprint`` itself, not on data derived
        from it (aligned faces, a leaky resampling)."""
        return trained_on(self, fingerprint)

    @property
    def model_path(self) -> Path:
        """The saved Keras model's path."""
        return model_path(self)


#: The folder (inside the metrics folder) of records that a later training of the same run replaced.
SUPERSEDED = "superseded"
#: Settings that guard a run without defining it: a time cap is a safety net (a run it stops is
#: marked ``capped``), so changing it does not make a finished run a different one.
NOT_IDENTITY = ("time_budget_s",)


def run_identity(params: dict) -> dict:
    """The settings that make two runs the same run: ``params`` without ``NOT_IDENTITY``."""
    return {k: v for k, v in params.items() if k not in NOT_IDENTITY}


@dataclass(frozen=True)
class RunStore:
    """Trained runs in ``metrics_dir`` and ``models_dir``. New runs are filed under ``notebook``
    at ``profile`` (:meth:`run_id`); ``force`` retrains instead of reusing; ``metrics_suffice``
    reuses a run whose metrics file exists even when its model file does not (to re-render a
    notebook from committed results, or to finish a long study across machines)."""

    metrics_dir: Path
    models_dir: Path
    notebook: str = "00_runs"
    profile: str = "smoke"
    force: bool = False
    metrics_suffice: bool = False

    def run_id(self, *parts: str, seed: int | None = None) -> str:
        """A new run's name: ``<NN>_<parts...>_<profile>``, e.g. ``03_cnn_small_ros_cpu``; a
        ``seed`` other than ``DEFAULT_SEED`` is part of it (``03_cnn_small_ros_seed43_cpu``), so
        every seed of a recipe keeps its own record and the seed-42 runs keep their names."""
        seeded = [f"seed{seed}"] if seed is not None and seed != DEFAULT_SEED else []
        return "_".join([self.notebook[:2], *parts, *seeded, self.profile])

    def under(self, notebook: str) -> RunStore:
        """The same store filing runs under another ``notebook`` (notebook 07's unaligned baseline
        is notebook 03's run): loaded if it exists, else trained under that name, never forced."""
        return self if notebook == self.notebook else replace(self, notebook=notebook, force=False)

    def metrics_path(self, run_id: str) -> Path:
        return Path(self.metrics_dir) / f"{run_id}.json"

    def model_path(self, run_id: str) -> Path:
        return Path(self.models_dir) / f"{run_id}.keras"

    def workdir(self, run_id: str) -> Path:
        """The folder of a run's resumable training state; emptied first when forced (a forced
        run starts over instead of resuming)."""
        path = Path(self.models_dir) / f"{run_id}.work"
        if self.force and path.exists():
            shutil.rmtree(path)
        return path

    def records(self) -> list[RunRecord]:
        """Every run's record, by run name (none when the folder does not exist yet)."""
        return [RunRecord(r) for r in read_metrics(self.metrics_dir)] if Path(self.metrics_dir).exists() else []

    def trained(self, fingerprint: str | None = None) -> list[RunRecord]:
        """The honest runs whose Keras model exists (on the dataset with ``fingerprint``, if given,
        and not on data derived from it), best PublicTest accuracy first."""
        return trained_runs(self.records(), fingerprint)

    def best(self, fingerprint: str | None = None) -> RunRecord | None:
        """The trained run with the best PublicTest accuracy (PrivateTest plays no part), or None."""
        runs = self.trained(fingerprint)
        return runs[0] if runs else None

    def record(self, run_id: str) -> RunRecord | None:
        """``run_id``'s saved record as it is (no checks), or None when it has no metrics file."""
        path = self.metrics_path(run_id)
        return RunRecord(json.loads(path.read_text())) if path.exists() else None

    def existing(self, run_id: str, params: dict, dataset: dict, needs_model: bool = True) -> RunRecord | None:
        """The saved record of ``run_id`` if it can be reused: its metrics file and (unless
        ``needs_model`` is False, for runs only tabulated later) its model exist,
        it was trained on the same dataset (``dataset``: ``FERDataset.describe()``, with the
        ``derived`` entry of data derived from it and the ``labels`` of other labels) with the same
        ``params``, and the store is not
        forced. None otherwise (the run must be trained)."""
        metrics_path, model_path = self.metrics_path(run_id), self.model_path(run_id)
        if self.force or not (metrics_path.exists() and (model_path.exists() or not needs_model or self.metrics_suffice)):
            return None
        record = json.loads(metrics_path.read_text())
        saved = record["dataset"]
        if (saved.get("fingerprint"), saved.get("derived", {}).get("fingerprint"), saved.get("labels")) != \
                (dataset["fingerprint"], dataset.get("derived", {}).get("fingerprint"), dataset.get("labels")) or \
                run_identity(record["params"]) != run_identity(params):
            return None
        print(f"{run_id}: results exist ({metrics_path.name}, trained {record['train']['seconds'] / 60:.1f} min); "
              "loaded, not retrained (force=True retrains)")
        return RunRecord(record)

    def train_or_load(self, run_id: str, params: dict, dataset: dict, train: Callable[[Path], dict],
                      needs_model: bool = True, summary: Callable[[dict], str] | None = None) -> RunRecord:
        """Every trainer's lifecycle in one place: the saved run if it can be reused
        (:meth:`existing`), else ``train(workdir)`` (the run's resumable folder, :meth:`workdir`)
        returns its metrics record, which is filed (:meth:`finish`: saved, the folder removed, one
        line printed, ``summary(record)`` if given)."""
        if (record := self.existing(run_id, params, dataset, needs_model)) is not None:
            return record
        workdir = self.workdir(run_id)
        record = train(workdir)
        return self.finish(record, workdir, summary(record) if summary else None)

    def save(self, record: dict) -> RunRecord:
        """Write a run's metrics file (atomically); the record as a :class:`RunRecord`. A record
        it replaces that trained or scored differently (a retrain of the same run) is kept in
        ``superseded/`` (:meth:`superseded`): every run that reached evaluation stays in the ledger.
        A record re-saved with the same training and scores keeps the date it was created."""
        earlier = self.record(record["run"])
        if earlier is not None and (earlier.get("train") != record.get("train")
                                    or _scores(earlier.get("metrics", {})) != _scores(record.get("metrics", {}))):
            stamp = str(earlier.get("created", "undated")).replace(":", "-")
            write_metrics({**earlier, "run": f"{earlier['run']}@{stamp}", "superseded_by": record.get("created")},
                          Path(self.metrics_dir) / SUPERSEDED)
        elif earlier is not None and "created" in earlier:
            record = {**record, "created": earlier["created"]}
        write_metrics(record, self.metrics_dir)
        return RunRecord(record)

    def superseded(self, run_id: str | None = None) -> list[RunRecord]:
        """The records that later trainings of the same run replaced (of ``run_id``, or all), oldest first."""
        folder = Path(self.metrics_dir) / SUPERSEDED
        records = [RunRecord(r) for r in read_metrics(folder)] if folder.exists() else []
        return sorted((r for r in records if run_id is None or r.run_id.split("@")[0] == run_id),
                      key=lambda r: r.get("created", ""))

    def finish(self, record: dict, workdir: str | Path, summary: str | None = None) -> RunRecord:
        """Save a trained run's record, remove its resumable state and print one line: ``summary``,
        or its training time and PublicTest and PrivateTest accuracy."""
        record = self.save(record)
        shutil.rmtree(workdir, ignore_errors=True)
        print(summary or f"{record.run_id}: {record.epochs} epochs in {record.minutes:.1f} min ({record.stopped}); "
                         f"PublicTest {record.score('accuracy', VAL):.2f}%, PrivateTest {record.score('accuracy', TEST):.2f}%")
        return record


#: Entries of a split's metrics that scoring the same predictions again adds (the per-face
#: predictions, the FER+ scores): a record re-saved with them is the same result, not a new one.
RESCORED = ("predicted", "ferplus")


def _scores(metrics: dict) -> dict:
    """A record's metrics without what rescoring adds (:data:`RESCORED`)."""
    return {split: {k: v for k, v in m.items() if k not in RESCORED} if isinstance(m, dict) else m
            for split, m in metrics.items()}


def select_for_export(records: list[dict], n_others: int = 2, fingerprint: str | None = None) -> list[dict]:
    """Metrics records worth exporting: the champion first, then up to ``n_others`` more.

    The champion is the run marked ``release`` (notebook 12's choice), else the best (PublicTest
    accuracy) run whose model name starts with ``champion``; without one, the best run by
    PublicTest accuracy. Only runs whose Keras file
    exists and, if ``fingerprint`` is given, trained on that dataset count (``trained_runs``);
    PrivateTest plays no part in the choice.
    """
    usable = trained_runs(records, fingerprint)
    champions = sorted((r for r in usable if str(r.get("model", "")).startswith("champion")),
                       key=lambda r: not r.get("release"))  # stable: PublicTest order otherwise
    first = champions[0] if champions else (usable[0] if usable else None)
    if first is None:
        return []
    return [first] + [r for r in usable if r is not first][:n_others]

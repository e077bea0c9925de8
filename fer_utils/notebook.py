"""The set-up every notebook shares: profile, seed, dataset and where results go.

A notebook calls :func:`start` right after its ``parameters`` cell; the returned
:class:`NotebookRun` prints what data the results come from (first output lines) and knows
where figures and metrics belong. Results from the synthetic stand-in or the ``smoke`` profile
never go to the committed ``reports/`` folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config
from .config import KNOWN_FINGERPRINTS, USAGES, Profile
from .data import FERDataset, find_dataset, load_fer2013, sample_per_class
from .files import atomic_path
from .runs import RunStore
from .synthetic import make_synthetic_fer


@dataclass
class NotebookRun:
    """What one notebook run works with: its profile, dataset and output folders."""

    notebook: str
    profile: Profile
    dataset: FERDataset
    reports_dir: Path
    seed: int
    force: bool = False
    reuse_metrics: bool = False

    @property
    def figures_dir(self) -> Path:
        return self.reports_dir / "figures"

    @property
    def metrics_dir(self) -> Path:
        return self.reports_dir / "metrics"

    @property
    def models_dir(self) -> Path:
        """``models/`` for real-data runs into ``reports/``; beside the reports folder otherwise."""
        if self.reports_dir.resolve() == config.REPORTS_DIR.resolve():
            return config.MODELS_DIR
        return self.reports_dir.parent / "models"

    @property
    def store(self) -> RunStore:
        """The trained runs of this run's reports folder (metrics files and Keras models)."""
        return RunStore(self.metrics_dir, self.models_dir, self.notebook, self.profile.name, self.force,
                        self.reuse_metrics)

    def savefig(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``<reports_dir>/figures/<notebook>_<name>.png`` (atomic),
        show that PNG in the notebook and close the figure.

        The PNG is shown whatever matplotlib's backend (``MPLBACKEND=Agg`` shows nothing by
        itself), exactly once: the figure is closed, so an inline backend has nothing left to
        draw at the end of the cell, and memory does not grow with every figure.
        """
        import matplotlib.pyplot as plt

        path = self.figures_dir / f"{self.notebook}_{name}.png"
        try:
            with atomic_path(path, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        show_image(path)
        return path

    def save_table(self, table, name: str) -> Path:
        """Save a pandas table as ``<reports_dir>/tables/<notebook>_<name>.csv`` (atomic)."""
        path = self.reports_dir / "tables" / f"{self.notebook}_{name}.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp)
        return path

    @property
    def stand_in(self):
        """What trains a stand-in model where none exists (notebooks 09 and 10): the smoke
        profile's :meth:`quick_model_record`; None at the other profiles (a missing model is an error)."""
        return self.quick_model_record if self.profile.name == "smoke" else None

    def quick_model_record(self) -> dict:
        """Train the small CNN for one epoch (``train.train_and_evaluate``) and return its metrics
        record: the stand-in model of notebooks 09 and 10 in the ``smoke`` profile, when no
        trained model exists yet (so ``fer_utils.export`` never imports the training code)."""
        from . import models
        from .train import TrainConfig, train_and_evaluate

        train_config = TrainConfig(epochs=1, batch_size=self.profile.batch_size, patience=None, seed=self.seed)
        with config.quiet_native_stderr():  # TensorFlow's native device-probing lines; Python output is unaffected
            return train_and_evaluate(self.store, self.dataset, "cnn_small", models.cnn_small, train_config)

    def banner(self) -> str:
        """A few lines saying which data, profile and output folder these results come from."""
        ds = self.dataset
        fp = ds.fingerprint
        lines = []
        if ds.synthetic:
            lines.append("!" * 88)
            lines += [f"!! {note}" for note in ds.notes if note.startswith("SYNTHETIC")]
            lines.append("!! No FER2013 copy was given (data_path / FER2013=...), so this run uses it.")
            lines.append("!" * 88)
        known = KNOWN_FINGERPRINTS.get(fp, "not a known FER2013 copy")
        lines.append(f"dataset    : {ds.name} from {ds.source}")
        lines.append(f"fingerprint: {fp} ({known})")
        lines.append("splits     : " + ", ".join(f"{u} {int((ds.usage == u).sum()):,}" for u in USAGES))
        lines += [f"note       : {n}" for n in ds.notes if not n.startswith("SYNTHETIC")]
        lines.append(f"profile    : {self.profile.name} ({self.profile.description})")
        lines.append(f"seed       : {self.seed}")
        lines.append(f"reports    : {self.reports_dir}")
        return "\n".join(lines)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, papermill), where rich outputs are shown."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover (IPython comes with the notebook dependencies)
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def show_image(path: str | os.PathLike) -> None:
    """Display an image file in the running notebook's cell output (nothing outside a kernel)."""
    if in_notebook():
        from IPython.display import Image, display

        display(Image(filename=str(path)))


def resolve_reports_dir(reports_dir: str | os.PathLike | None, profile: str, synthetic: bool) -> Path:
    """Where a run writes: ``reports/`` for real data, else ``build/<profile>[-synthetic]/reports``.

    Refuses an explicit ``reports/`` for smoke or synthetic runs, so they never overwrite the
    committed real-data reports.
    """
    throwaway = synthetic or profile == "smoke"
    if reports_dir is None or str(reports_dir) == "":
        if not throwaway:
            return config.REPORTS_DIR
        return config.BUILD_DIR / f"{profile}{'-synthetic' if synthetic else ''}" / "reports"
    path = Path(reports_dir).resolve()
    if throwaway and path == config.REPORTS_DIR.resolve():
        raise ValueError(
            f"refusing to write {'synthetic' if synthetic else 'smoke'} results into {path}: "
            "reports/ holds real-data results only; leave reports_dir empty or pick another folder"
        )
    return path


def subsample_per_class(ds: FERDataset, per_class: int, seed: int = 0) -> FERDataset:
    """At most ``per_class`` images of each class in each split (seeded), keeping every split."""
    rng = np.random.default_rng(seed)
    keep = [idx for usage in USAGES for idx in sample_per_class(ds.labels, per_class, rng, where=ds.usage == usage)]
    sub = ds.subset(np.sort(np.concatenate(keep)))
    sub.notes.append(f"subsampled to at most {per_class} images per class and split")
    return sub


def start(notebook: str, profile: str = "cpu", data_path: str | None = None,
          reports_dir: str | None = None, seed: int = 42, force: bool = False,
          verbose: bool = True, reuse_metrics: bool = False) -> NotebookRun:
    """Seed everything, load the dataset (or the synthetic stand-in) and pick the output folders.

    ``data_path`` falls back to ``$FER2013`` and then ``data/``; with none found the run uses
    the synthetic stand-in. The ``smoke`` profile also shrinks real data to a few images per
    class. ``reuse_metrics`` reuses trained runs from their metrics files alone (``RunStore``).
    """
    prof = config.get_profile(profile)
    config.set_seed(seed)
    path = find_dataset(data_path)
    if path is None:
        dataset = make_synthetic_fer(prof.synthetic_size, seed=seed)
    else:
        dataset = load_fer2013(path, seed=seed)
        if prof.name == "smoke":
            dataset = subsample_per_class(dataset, prof.max_train_per_class or 50, seed)
    out = resolve_reports_dir(reports_dir, prof.name, dataset.synthetic)
    run = NotebookRun(notebook, prof, dataset, out, seed, force, reuse_metrics)
    if verbose:
        print(run.banner())
    return run

"""Run the numbered notebooks end to end with papermill (what ``make all`` and ``make smoke`` call).

    python -m fer_utils.pipeline [--profile cpu] [--data PATH] [--reports-dir DIR] [--force] [NB ...]

NB is a notebook path or its number (``01``); none means every ``notebooks/NN_*.ipynb`` in order.
Executed copies go to ``<reports_dir>/notebooks/``; the reports folder is chosen as in
``fer_utils.notebook.resolve_reports_dir`` (smoke and synthetic runs never write ``reports/``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from pathlib import Path

from . import config
from .data import SYNTHETIC, find_dataset
from .notebook import resolve_reports_dir
from .progress import BATCH_RUN_ENV

NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"


#: Notebooks that use another's results run after it: 09 exports and 10 demos the champion of 12.
RUNS_AFTER: dict[str, tuple[str, ...]] = {"09": ("12",), "10": ("12",)}


def run_order(notebooks: list[Path]) -> list[Path]:
    """``notebooks`` by number, except that each runs after the ones ``RUNS_AFTER`` names."""
    pending, ordered = sorted(notebooks), []
    while pending:
        names = {p.name[:2] for p in pending}
        ready = next(p for p in pending if not names & set(RUNS_AFTER.get(p.name[:2], ())))
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def list_notebooks(selection: list[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks in run order (see ``run_order``), or those named by path or number
    in ``selection``, in the order given."""
    every = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return run_order(every)
    chosen = []
    for item in selection:
        path = Path(item)
        if path.suffix == ".ipynb":
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such notebook")
            chosen.append(path)
            continue
        matches = [p for p in every if p.name.startswith(f"{int(item):02d}_")] if item.isdigit() else []
        if not matches:
            raise FileNotFoundError(f"no notebook numbered {item!r} in {folder}")
        chosen += matches
    return chosen


#: What the kernels papermill starts get in their environment, whatever the caller's: the inline
#: matplotlib backend (an inherited ``MPLBACKEND=Agg`` would keep figures out of the executed
#: copies), and the batch-run flag (one Keras log line per epoch, plain-text progress bars).
KERNEL_ENV: dict[str, str] = {
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    BATCH_RUN_ENV: "1",
}


@contextlib.contextmanager
def kernel_environment(overrides: dict[str, str] = KERNEL_ENV):
    """Set ``overrides`` in ``os.environ`` (which kernels inherit) for the duration, then restore it."""
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: Native start-up lines that say nothing about the results: TensorFlow probing for a GPU on a
#: machine without a usable one (``failed call to cuInit``), and what comes with them.
STARTUP_NOISE = re.compile(
    r"^(?:[EWI]\d{4} [^\n]*(?:cuInit|Unable to register cu(?:DNN|FFT|BLAS) factory|cuda_(?:dnn|fft|blas|platform))"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)[^\n]*(?:\n|$)",
    re.MULTILINE,
)
_OVERWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")  # text that a later carriage return on its line overwrote


def tidy_outputs(nb):
    """Make an executed notebook read like what a person saw (in place; returns ``nb``): each run
    of stream outputs of one name becomes one output, text overwritten by a carriage return
    (a plain-text progress bar's updates) is dropped, only the last state of each line stays, and
    :data:`STARTUP_NOISE` lines go (an output left empty goes too)."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or not cell.get("outputs"):
            continue
        merged = []
        for output in cell.outputs:
            last = merged[-1] if merged else None
            if (output.get("output_type") == "stream" and last is not None
                    and last.get("output_type") == "stream" and last.get("name") == output.get("name")):
                last["text"] += output["text"]
            else:
                merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream":
                output["text"] = STARTUP_NOISE.sub("", _OVERWRITTEN.sub("", output["text"]))
        cell.outputs = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]
    return nb


def run_notebook(notebook: Path, profile: str, data_path: str | None, reports_dir: Path,
                 seed: int = 42, force: bool = False, extra: dict | None = None) -> Path:
    """Execute one notebook with papermill (its kernel started with :data:`KERNEL_ENV`), tidy its
    outputs (:func:`tidy_outputs`); returns the executed copy's path."""
    import nbformat
    import papermill as pm

    output = reports_dir / "notebooks" / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    parameters = dict(profile=profile, data_path=data_path or "", reports_dir=str(reports_dir),
                      seed=seed, force=force, **(extra or {}))
    try:
        with kernel_environment():
            pm.execute_notebook(
                str(notebook), str(output), parameters=parameters, cwd=str(notebook.parent),
                kernel_name="python3", progress_bar=sys.stderr.isatty(), log_output=not sys.stderr.isatty(),
            )
    finally:  # a failed run's copy too (papermill wrote it with the error)
        if output.exists():
            nbformat.write(tidy_outputs(nbformat.read(output, as_version=4)), output)
    return output


def parse_parameter(text: str) -> tuple[str, object]:
    """A ``-p NAME=VALUE`` option: the value read as YAML, as papermill's own ``-y`` option reads
    parameters (``True``, ``3``, ``0.5``, ``[ros, smote]``; anything else, and an empty value, stays
    a string). Notebooks run inside notebooks/, so a string naming an existing path is made absolute."""
    import yaml

    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"-p {text!r}: expected NAME=VALUE")
    value = yaml.safe_load(raw) if raw.strip() else raw
    if isinstance(value, str) and value and Path(value).exists():
        value = str(Path(value).resolve())
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebook paths or numbers (default: all)")
    parser.add_argument("--profile", default="cpu", choices=sorted(config.PROFILES))
    parser.add_argument("--data", default=None, help="FER2013 CSV, CSV.gz or image folder (default: $FER2013, data/)")
    parser.add_argument("--reports-dir", default=None, help="output folder (default: reports/ for real data)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--force", action="store_true", help="retrain models whose results exist")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra notebook parameter (repeatable), e.g. -p compare_data_path=...")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # kernels inherit it: no TensorFlow start-up chatter

    data_path = find_dataset(args.data)
    asked_for_synthetic = (args.data or os.environ.get(config.DATA_ENV_VAR)) == SYNTHETIC
    if data_path is None and args.profile != "smoke" and not asked_for_synthetic:
        print(f"no FER2013 copy found: every notebook runs on the synthetic stand-in with the smoke profile's "
              f"sizes (minutes, not the {args.profile} profile's hours; --data synthetic keeps it)", flush=True)
        args.profile = "smoke"
    reports_dir = resolve_reports_dir(args.reports_dir, args.profile, synthetic=data_path is None)
    try:
        extra = dict(parse_parameter(p) for p in args.param)
    except ValueError as err:
        parser.error(str(err))
    notebooks = list_notebooks(args.notebooks)
    print(f"data: {data_path or 'none found: synthetic stand-in'}\nprofile: {args.profile}\n"
          f"reports: {reports_dir}\nnotebooks: {', '.join(p.name for p in notebooks)}", flush=True)
    for nb in notebooks:
        t0 = time.time()
        print(f"\n=== {nb.name} ===", flush=True)
        out = run_notebook(nb, args.profile, str(data_path.resolve()) if data_path else None, reports_dir,
                           args.seed, args.force, extra)
        print(f"=== {nb.name}: done in {time.time() - t0:.0f} s -> {out}", flush=True)
    if data_path is None:
        print(f"\nThese results ({reports_dir}) come from the synthetic stand-in, not FER2013: for the real results, "
              "run `make all FER2013=path/to/fer2013.csv.gz` (README, 'The data').", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

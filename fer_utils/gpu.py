"""The `full` profile on a borrowed GPU host that has JAX but neither TensorFlow nor Keras.

    python -m fer_utils.gpu pack    [--data PATH] [--runs NAME ...] [--minutes 9] [--job build/gpu_job]
    python -m fer_utils.gpu train   JOB [--out DIR] [--allow-cpu]   # on the host, under KERAS_BACKEND=jax
    python -m fer_utils.gpu collect RESULTS [--data PATH] [--reports-dir DIR]
    python -m fer_utils.gpu dry-run [--data PATH]                   # all three on this CPU, tiny budget

``pack`` writes the job: the Training split only (PublicTest and PrivateTest never leave this
machine), compressed and cut into parts that fit the host's 64 MiB upload beside the work tree,
and the pure-Python wheels the host lacks (Keras and its small dependencies; never JAX or torch:
the host's own match its driver). It prints the device calls to make. ``train`` prints
``jax.devices()`` and stops at once without a GPU, measures training faces/s per model, then
trains the runs in order on a fixed schedule (no validation set there, so the last epoch is kept
and no choice is made on the host) within the time given, and writes each run's weights (16-bit,
in files of at most 15 MiB) and a ``results.json``. ``collect`` rebuilds each model here,
evaluates it on PublicTest and PrivateTest like every other run and writes its metrics file:
profile ``full`` when the run completed its schedule, ``gpu_<N>ep`` (its real length) when the
time cap cut it short.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import PROJECT_ROOT, TRAIN

#: What the device tool accepts per call (work tree, shared/ and carried paths together), and
#: what it returns (files, each at most 16 MiB).
UPLOAD_LIMIT = 64 * 2**20
RETURN_FILE_LIMIT = 15 * 2**20
#: The host's Python and the packages it lacks (it has numpy, h5py, absl-py, rich, ml-dtypes,
#: packaging, pandas, scikit-learn, scipy, pillow, tqdm, matplotlib).
HOST_PYTHON = "3.12"
HOST_WHEELS = ("keras", "namex", "optree")
STAGE_DIR = Path("/tmp/fer_gpu_stage")  #: where parts wait on the host between calls
#: Set by the dry run: this process plays the host, where TensorFlow cannot be imported.
SIMULATE_HOST_ENV = "FER_GPU_SIMULATE_HOST"
XZ_FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]


@dataclass
class JobRun:
    """One run of a GPU job: which notebook's model, how to build it and the fixed schedule."""

    name: str
    notebook: str
    model: str
    builder: str  #: ``module:function`` in fer_utils, called with ``builder_kwargs`` (+ ``image_size``)
    builder_kwargs: dict
    config: dict  #: ``TrainConfig`` fields

    def build(self, **kwargs):
        import importlib

        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"fer_utils.{module}"), function)(**self.builder_kwargs, **kwargs)

    def train_config(self):
        from .train import TrainConfig

        return TrainConfig(**self.config)


def default_runs(seed: int = 42) -> list[JobRun]:
    """The `full` profile's runs in priority order (issue 16): the VGGNet of Khaireddin & Chen at
    full width on 40-pixel crops (their input), 300 epochs; the champion recipe at full length (a
    teacher for distillation); write-up 004's CNNs. Schedules are fixed (cosine, no early
    stopping): the host has no validation set."""
    from . import champion, vgg
    from .config import get_profile
    from .train import baseline_config

    full = get_profile("full")
    paper = replace(vgg.vgg_config("paper", full, seed=seed), schedule="cosine", crop=40, precision="auto")
    cnn = replace(baseline_config("cnn", full, seed=seed), patience=None, augment="standard", precision="auto")
    return [
        JobRun("vgg_paper", "04", "vgg_paper", "models:vgg", vgg.vgg_size(full), paper.params()),
        JobRun("champion", "12", champion.MODEL_NAME, "models:champion_cnn", {},
               champion.champion_config(full, seed).params()),
        JobRun("cnn_small", "03", "cnn_small", "models:cnn_small", {}, cnn.params()),
        JobRun("cnn_medium", "03", "cnn_medium", "models:cnn_medium", {}, cnn.params()),
    ]


# ---------------------------------------------------------------------------------------------
# Packing (this machine)


def tree_bytes(root: Path = PROJECT_ROOT) -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked,
    not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / name.decode()).stat().st_size for name in listed if name and (root / name.decode()).is_file())


def download_wheels(folder: Path, python_version: str = HOST_PYTHON) -> list[Path]:
    """The host's missing wheels, at this machine's versions (Keras must match to load weights),
    built for ``python_version`` (the host's; the dry run asks for this machine's)."""
    from importlib.metadata import version

    folder.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (28, 27, 17)] + ["--platform=manylinux2014_x86_64"]
    for name in HOST_WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        f"--python-version={python_version}", "--implementation=cp", *platforms, "-d", str(folder),
                        f"{name}=={version(name)}"], check=True)
    return sorted(folder.glob("*.whl"))


def pack(x_train: np.ndarray, y_train: np.ndarray, job: Path, runs: list[JobRun], minutes: float,
         fingerprint: str, wheels: list[Path] | None = None, limit: int = UPLOAD_LIMIT) -> dict:
    """Write a job folder: ``common/`` (job.json, labels, wheels) and ``part-K/`` folders of
    compressed Training faces, each small enough to travel with the work tree and ``common/``.
    Returns the job description (also in ``common/job.json``), with the device calls to make."""
    if job.exists():
        shutil.rmtree(job)
    shutil.rmtree(STAGE_DIR, ignore_errors=True)  # (a dry run's leftovers on this machine)
    common = job / "common"
    (common / "wheels").mkdir(parents=True)
    for wheel in wheels or []:
        shutil.copy(wheel, common / "wheels" / wheel.name)
    np.save(common / "labels.npy", y_train.astype(np.uint8))
    blob = lzma.compress(np.ascontiguousarray(x_train, dtype=np.uint8).tobytes(), format=lzma.FORMAT_XZ,
                         filters=XZ_FILTERS)
    fixed = tree_bytes() + sum(p.stat().st_size for p in common.rglob("*") if p.is_file()) + 2**20  # + job.json
    room = limit - fixed - 2**20  # a MiB of margin
    if room <= 0:
        raise ValueError(f"the work tree and wheels alone ({fixed / 2**20:.1f} MiB) leave no room under "
                         f"{limit / 2**20:.0f} MiB for the data")
    n_parts = int(np.ceil(len(blob) / room))
    size = int(np.ceil(len(blob) / n_parts))
    parts = []
    for k in range(n_parts):
        folder = job / f"part-{k + 1}"
        folder.mkdir()
        (folder / "faces.xz.part").write_bytes(blob[k * size:(k + 1) * size])
        parts.append(folder.name)
    description = {"fingerprint": fingerprint, "n_train": int(len(x_train)), "shape": list(x_train.shape[1:]),
                   "minutes": minutes, "parts": parts, "runs": [vars(r) for r in runs],
                   "upload_mib": {"tree": round(tree_bytes() / 2**20, 1), "data": round(len(blob) / 2**20, 1),
                                  "per_call": round((fixed + size) / 2**20, 1)}}
    (common / "job.json").write_text(json.dumps(description, indent=1))
    description["calls"] = device_calls(job, parts)
    return description


def device_calls(job: Path, parts: list[str]) -> list[dict]:
    """The device-tool calls that run a job: each stages one part on the host; the last trains."""
    from .train import display_path

    rel = Path(display_path(job))  # relative to the work tree the host receives
    calls = []
    for i, part in enumerate(parts):
        command = f"python3 -m fer_utils.gpu stage {rel} {part}"
        if i == len(parts) - 1:
            command += f" && PYTHONUNBUFFERED=1 KERAS_BACKEND=jax python3 -m fer_utils.gpu train {rel} --out \"$OUT\""
        calls.append({"command": command, "carry": [str(rel / "common"), str(rel / part)]})
    return calls


# ---------------------------------------------------------------------------------------------
# On the host


def stage(job: Path, part: str, stage_dir: Path = STAGE_DIR) -> Path:
    """Keep a carried part on the host (outside the work tree, which each call lays anew)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    target = stage_dir / f"{part}.faces.xz.part"
    shutil.copy(job / part / "faces.xz.part", target)
    print(f"staged {part}: {target.stat().st_size / 2**20:.1f} MiB in {stage_dir}")
    return target


def install_wheels(folder: Path, site: Path) -> None:
    """Unpack wheels into ``site`` and put it first on ``sys.path`` (no pip, no network needed)."""
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    sys.path.insert(0, str(site))


def load_training(job: Path, description: dict, stage_dir: Path = STAGE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The Training faces and labels from the staged (or carried) parts."""
    chunks = []
    for part in description["parts"]:
        carried, staged = job / part / "faces.xz.part", stage_dir / f"{part}.faces.xz.part"
        path = carried if carried.exists() else staged
        if not path.exists():
            raise FileNotFoundError(f"{part} is neither carried ({carried}) nor staged ({staged}): stage it first")
        chunks.append(path.read_bytes())
    x = np.frombuffer(lzma.decompress(b"".join(chunks)), dtype=np.uint8).reshape(-1, *description["shape"])
    return x, np.load(job / "common" / "labels.npy").astype(np.int64)


def save_weights(weights: list[np.ndarray], out: Path, name: str, max_bytes: int = RETURN_FILE_LIMIT) -> list[str]:
    """Weights as one float16 ``.npz`` cut into files of at most ``max_bytes``; their names."""
    buffer = tempfile.SpooledTemporaryFile()
    np.savez(buffer, *[w.astype(np.float16) if w.dtype.kind == "f" else w for w in weights])
    buffer.seek(0)
    data, files = buffer.read(), []
    for k in range(0, len(data), max_bytes):
        files.append(f"{name}.w{k // max_bytes:02d}")
        (out / files[-1]).write_bytes(data[k:k + max_bytes])
    return files


def read_weights(folder: Path, files: list[str]) -> list[np.ndarray]:
    """The weights :func:`save_weights` wrote, as float32."""
    import io

    archive = np.load(io.BytesIO(b"".join((folder / f).read_bytes() for f in files)))
    return [archive[f"arr_{i}"].astype(np.float32) if archive[f"arr_{i}"].dtype.kind == "f" else archive[f"arr_{i}"]
            for i in range(len(archive.files))]


def train_job(job: Path, out: Path, allow_cpu: bool = False, epochs: int | None = None,
              epoch_size: int | None = None) -> dict:
    """Run a packed job (the host side): devices first, then throughput, then the runs within
    the job's minutes. ``epochs``/``epoch_size`` shorten every run (the CPU dry run)."""
    description = json.loads((job / "common" / "job.json").read_text())
    install_wheels(job / "common" / "wheels", Path(tempfile.mkdtemp(prefix="fer_site_")))
    import jax

    devices = jax.devices()
    print("jax.devices():", devices, flush=True)
    if not any(d.platform == "gpu" for d in devices) and not allow_cpu:
        print("no GPU: stopping before any work (the runs would take hours on this CPU)", file=sys.stderr)
        raise SystemExit(4)
    from .champion import measure_throughput
    from .train import fit, machine_description, resolve_precision

    x, y = load_training(job, description)
    print(f"Training faces: {x.shape}, {description['fingerprint']}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60 * description["minutes"]
    runs = [JobRun(**r) for r in description["runs"]]
    results = {"fingerprint": description["fingerprint"], "machine": machine_description(), "runs": []}
    for i, run in enumerate(runs):
        config = run.train_config()
        config = replace(config, epochs=epochs or config.epochs, epoch_size=epoch_size or config.epoch_size)
        speed = measure_throughput({run.name: run.build}, {"job": config}, steps=5 if epoch_size else 20)
        left = deadline - time.monotonic()
        if left < 30:
            print(f"{run.name}: skipped, {left:.0f} s left", flush=True)
            continue
        config = replace(config, time_budget_s=left / (len(runs) - i))
        print(f"{run.name}: {speed['faces/s'].iloc[0]:.0f} faces/s, up to {config.time_budget_s / 60:.1f} min", flush=True)
        result = fit(run.build, x, y, None, None, config, Path(tempfile.mkdtemp(prefix=f"{run.name}_")), verbose=2)
        results["runs"].append({
            "name": run.name, "files": save_weights(_network_weights(result.model), out, run.name),
            "train": result.summary(len(x), config.epoch_size), "history": result.history,
            "faces_per_second_measured": float(speed["faces/s"].iloc[0]), "config": config.params(),
            "precision": resolve_precision(config.precision)})
        (out / "results.json").write_text(json.dumps(results, indent=1))  # after each run: nothing lost
    return results


def _network_weights(model) -> list[np.ndarray]:
    """The weights of the network inside an inference model (or of the model itself)."""
    nested = [layer for layer in model.layers if hasattr(layer, "layers")]
    return (nested[0] if nested else model).get_weights()


# ---------------------------------------------------------------------------------------------
# Back here: evaluate and write metrics files


def collect(results_dir: Path, dataset, reports_dir: Path, job_runs: list[JobRun] | None = None) -> list[dict]:
    """Rebuild each returned run, evaluate it here on every split and write its metrics file."""
    from .evaluate import evaluate_splits, metrics_record, write_metrics
    from .train import build_network, display_path, inference_model, predict_proba, save_model

    results = json.loads((results_dir / "results.json").read_text())
    if results["fingerprint"] != dataset.fingerprint:
        raise ValueError(f"{results_dir}: trained on dataset {results['fingerprint']}, not this one "
                         f"({dataset.fingerprint})")
    specs = {r.name: r for r in (job_runs or default_runs())}
    records = []
    for entry in results["runs"]:
        spec, train = specs[entry["name"]], entry["train"]
        config = replace(spec.train_config(), **{k: v for k, v in entry["config"].items()
                                                 if k in ("epochs", "epoch_size", "time_budget_s")})
        net = build_network(spec.build, config, "float32")
        net.set_weights(read_weights(results_dir, entry["files"]))
        model = inference_model(net, config.crop, config.tta)
        completed = train["stopped"] == "completed" and train["epochs"] == spec.train_config().epochs
        profile = "full" if completed else f"gpu_{train['epochs']}ep"
        run_id = f"{spec.notebook}_{spec.model}_none_{profile}"
        path = save_model(model, reports_dir.parent / "models" / f"{run_id}.keras"
                          if reports_dir.resolve() != PROJECT_ROOT.joinpath("reports").resolve()
                          else PROJECT_ROOT / "models" / f"{run_id}.keras")
        metrics = evaluate_splits(lambda faces: predict_proba(model, faces), dataset)
        record = metrics_record(run_id, spec.notebook, spec.model, "none", profile, {"model": spec.model, **entry["config"]},
                                dataset.describe(), {**train, "selection": "last epoch (no validation on the host)"},
                                metrics, weights="none", n_params=int(net.count_params()), model_file=display_path(path),
                                history=entry["history"], gpu_machine=results["machine"],
                                faces_per_second_measured=entry["faces_per_second_measured"])
        write_metrics(record, reports_dir / "metrics")
        records.append(record)
        print(f"{run_id}: {train['epochs']} epochs in {train['seconds'] / 60:.1f} min on {results['machine']['device']}; "
              f"PublicTest {100 * metrics['PublicTest']['accuracy']:.2f}%, PrivateTest {100 * metrics['PrivateTest']['accuracy']:.2f}%")
    return records


def dry_run(dataset, workdir: Path) -> list[dict]:
    """Pack, 'send' (copy the work tree and the carried paths as the device tool would), train
    for one short epoch per run under JAX on this CPU with TensorFlow out of reach, and collect
    into ``workdir`` (never reports/): proves the packing, the host side and the round trip."""
    x, y = dataset.split(TRAIN)
    job = PROJECT_ROOT / "build" / "gpu_job"
    description = pack(x, y, job, default_runs(), minutes=5, fingerprint=dataset.fingerprint,
                       wheels=download_wheels(workdir / "wheels", "{}.{}".format(*sys.version_info[:2])))
    print(json.dumps({k: description[k] for k in ("parts", "upload_mib")}), flush=True)
    host = workdir / "host"
    if host.exists():
        shutil.rmtree(host)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    for call in description["calls"]:
        for name in [n for n in listed if n] + call["carry"]:
            source, target = PROJECT_ROOT / name, host / name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)
        command = call["command"].replace('"$OUT"', str(out)).replace("python3 ", f"{sys.executable} ")
        if " train " in command:
            command += " --allow-cpu --epochs 1 --epoch-size 256"
        subprocess.run(command, shell=True, cwd=host, check=True, env={**os.environ, SIMULATE_HOST_ENV: "1"})
        shutil.rmtree(host / "build", ignore_errors=True)  # carried paths do not stay between calls
    return collect(out, dataset, workdir / "reports")


class _NoTensorFlow:
    """A meta-path finder that makes ``import tensorflow`` fail, as on the GPU host."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError(f"No module named {name!r} (the simulated GPU host has no TensorFlow)")
        return None


def main(argv: list[str] | None = None) -> int:
    if os.environ.get(SIMULATE_HOST_ENV):
        sys.meta_path.insert(0, _NoTensorFlow())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write a job folder and print the device calls")
    p.add_argument("--data", default=None)
    p.add_argument("--runs", nargs="*", default=None, help="run names (default: all, in priority order)")
    p.add_argument("--minutes", type=float, default=9.0)
    p.add_argument("--job", default="build/gpu_job")
    p = sub.add_parser("stage", help="(host) keep a carried part between calls")
    p.add_argument("job")
    p.add_argument("part")
    p = sub.add_parser("train", help="(host) train a job")
    p.add_argument("job")
    p.add_argument("--out", required=True)
    p.add_argument("--allow-cpu", action="store_true")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--epoch-size", type=int, default=None)
    p = sub.add_parser("collect", help="evaluate returned weights here and write metrics files")
    p.add_argument("results")
    p.add_argument("--data", default=None)
    p.add_argument("--reports-dir", default=None)
    p = sub.add_parser("dry-run", help="everything on this CPU with a tiny budget, into build/gpu_dry_run")
    p.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    if args.command == "stage":
        stage(Path(args.job), args.part)
        return 0
    if args.command == "train":
        train_job(Path(args.job), Path(args.out), args.allow_cpu, args.epochs, args.epoch_size)
        return 0
    from .data import find_dataset, load_fer2013

    path = find_dataset(args.data)
    if path is None:
        parser.error("no FER2013 copy found: give --data or set FER2013")
    dataset = load_fer2013(path)
    if args.command == "pack":
        runs = [r for r in default_runs() if not args.runs or r.name in args.runs]
        x, y = dataset.split(TRAIN)
        description = pack(x, y, Path(args.job), runs, args.minutes, dataset.fingerprint,
                           download_wheels(Path(args.job) / "wheels-download"))
        print(json.dumps(description, indent=1))
    elif args.command == "collect":
        reports = Path(args.reports_dir) if args.reports_dir else PROJECT_ROOT / "reports"
        collect(Path(args.results), dataset, reports)
    else:
        dry_run(dataset, PROJECT_ROOT / "build" / "gpu_dry_run")
    return 0


if __name__ == "__main__":
    sys.exit(main())

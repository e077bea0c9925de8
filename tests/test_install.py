"""The recognizer as a light package: a non-editable base install (``pip install <repo>``, no
extras) into a fresh virtual environment ships the released model, runs ``fer-predict`` on a real
face photo and ``analyze_video`` on a clip, says in one line which extra brings what it leaves
out, and holds no TensorFlow, Keras, scikit-learn or Streamlit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from fer_utils import ExpressionRecognizer, model_file, samples
from fer_utils.config import FERPLUS_CLASS_NAMES, PROJECT_ROOT
from fer_utils.model_file import RELEASED_MODEL

pytestmark = pytest.mark.skipif(not RELEASED_MODEL.is_file(), reason=f"no released model at {RELEASED_MODEL}")
#: The lab's packages, none of which the base install may bring.
LAB_PACKAGES = ("tensorflow", "keras", "sklearn", "streamlit")
#: What the base install may weigh at most (it measured about 0.4 GB; the full `make install` one, 4.3 GB).
MAX_BASE_MB = 800


def source_copy(folder: Path) -> Path:
    """What ``pip install <repo>`` builds from: the package, pyproject.toml, the README and models/
    (with a trained model beside the released one, which must not be shipped)."""
    shutil.copytree(PROJECT_ROOT / "fer_utils", folder / "fer_utils", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "models").mkdir()
    released = [f"models/{Path(file).stem}{suffix}" for file in model_file.RELEASED_MODELS.values()
                for suffix in (".onnx", ".md")]
    for name in ("pyproject.toml", "README.md", *released, "models/README.md"):
        shutil.copy(PROJECT_ROOT / name, folder / name)
    (folder / "models" / "12_some_run.keras").write_bytes(b"a trained model: not shipped")
    return folder


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@pytest.mark.slow
def test_the_base_install_is_the_recognizer_without_the_lab(tmp_path):
    env_dir, work = tmp_path / "env", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    clean = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
             "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", str(source_copy(tmp_path / "source"))],
                             capture_output=True, text=True, cwd=work, env=clean, timeout=1200)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=clean).stdout.strip()
    installed = Path(purelib) / "fer_utils"
    assert sorted(os.listdir(installed / "released")) == [
        "fer_champion.md", "fer_champion.onnx", "ferplus_champion.md", "ferplus_champion.onnx"]

    # fer-predict on a real face photo, as the checkout's recognizer sees it
    photo = work / "astronaut.png"
    Image.fromarray(samples.astronaut()).save(photo)
    expected = ExpressionRecognizer().predict(photo)
    done = subprocess.run([bin_dir / "fer-predict", "predict", str(photo)], capture_output=True, text=True, cwd=work,
                          env=clean, timeout=300)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    assert [f["label"] for f in entry["faces"]] == [f.label for f in expected]
    assert [f["box"] for f in entry["faces"]] == [list(f.box) for f in expected]

    # the Python API on a short clip, and what is left out
    clip = work / "clip.mp4"
    samples.make_test_clip(12, no_face_frames=2, path=clip, fps=10)
    script = textwrap.dedent(f"""
        import importlib.util, json
        import fer_utils
        from fer_utils import ExpressionRecognizer, plot_timeline
        from fer_utils.extras import MissingExtra
        recognizer = ExpressionRecognizer()
        table = recognizer.analyze_video("clip.mp4", progress=False)
        try:
            plot_timeline(table)
            plot = "drawn"
        except MissingExtra as exc:
            plot = str(exc)
        print(json.dumps({{"package": fer_utils.__file__, "model": str(recognizer.model_path),
                          "labels": table.label.tolist(), "frames": table.attrs["frames"], "plot": plot,
                          "present": [m for m in {LAB_PACKAGES!r} if importlib.util.find_spec(m)]}}))
    """)
    run = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=work, env=clean, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["package"] == str(installed / "__init__.py")
    assert result["model"] == str(installed / "released" / model_file.RELEASED_MODELS[model_file.DEFAULT_MODEL])
    assert result["present"] == [], f"the base install brought the lab's {result['present']}"
    assert result["frames"] == 12 and result["labels"][:2] == ["no face"] * 2
    labelled = [label for label in result["labels"] if label in FERPLUS_CLASS_NAMES]
    ours = ExpressionRecognizer().analyze_video(clip, progress=False).label.tolist()
    assert len(labelled) >= 8 and max(set(labelled), key=labelled.count) == max(set(ours), key=ours.count)
    assert result["plot"] == 'the timeline plot needs matplotlib, which is not installed: pip install "fer_utils[plot]"'

    # a missing extra is one line naming it, and a documented exit status (4), not a traceback
    for args, extra in ((["predict", str(photo), "--detector", "mtcnn"], "mtcnn"), (["make-clip", "c.mp4"], "app")):
        done = subprocess.run([bin_dir / "fer-predict", *args], capture_output=True, text=True, cwd=work, env=clean,
                              timeout=300)
        assert done.returncode == 4 and done.stdout == "", done.stderr
        assert done.stderr.endswith(f'is not installed: pip install "fer_utils[{extra}]"\n')
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")

    du = subprocess.run(["du", "-sh", str(env_dir)], capture_output=True, text=True).stdout.split()[0]
    print(f"\nbase install: {du} ({size_mb(env_dir):.0f} MB) in {env_dir}")
    assert size_mb(env_dir) < MAX_BASE_MB

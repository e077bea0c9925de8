"""The command line (``python -m fer_utils.cli`` / ``fer-predict``) on real images and clips."""

import csv
import io
import json
import subprocess
import sys

import cv2
import pytest

from fer_utils import cli, media, model_file, samples
from fer_utils.config import CLASS_NAMES, PROJECT_ROOT
from onnx_helpers import tiny_onnx


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def test_predict_prints_json_with_one_face_and_7_probabilities(model, astronaut):
    # the real entry point, in a fresh interpreter
    done = subprocess.run([sys.executable, "-m", "fer_utils.cli", "predict", str(astronaut), "--model", str(model)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 1 and results[0]["image"] == str(astronaut)
    faces = results[0]["faces"]
    assert len(faces) == 1
    face = faces[0]
    assert len(face["box"]) == 4 and face["label"] in CLASS_NAMES
    assert list(face["probabilities"]) == list(CLASS_NAMES)
    assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)


def test_predict_csv_and_a_missing_image(model, astronaut, tmp_path, capsys):
    code = cli.main(["predict", str(astronaut), str(tmp_path / "nope.jpg"), "--model", str(model), "--format", "csv"])
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == cli.EXIT_PARTIAL and "nope.jpg: no such image file" in err
    assert len(rows) == 2 and rows[0]["label"] in CLASS_NAMES and rows[1]["label"] == "error"
    assert sum(float(rows[0][c]) for c in CLASS_NAMES) == pytest.approx(1, abs=1e-4)


def test_missing_released_model_says_how_to_get_one(astronaut, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(model_file, "RELEASED_MODEL", tmp_path / "models" / "fer_champion.onnx")
    assert cli.main(["predict", str(astronaut)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    default = model_file.RELEASED_MODELS[model_file.DEFAULT_MODEL]
    assert err.startswith(f"error: no model at {tmp_path / 'models' / default}") and "notebook 09" in err and "notebook 13" in err
    assert "Traceback" not in err


def test_wrong_model_file_is_a_clear_error(astronaut, tmp_path, capsys):
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(b"PK\x03\x04 not onnx")
    assert cli.main(["predict", str(astronaut), "--model", str(wrong)]) == cli.EXIT_ERROR
    assert "model.onnx: not a valid ONNX model" in capsys.readouterr().err
    keras_file = tmp_path / "model.keras"
    keras_file.write_text("x")
    assert cli.main(["run", "--source", "0", "--model", str(keras_file)]) == cli.EXIT_ERROR
    assert "convert it with" in capsys.readouterr().err


def test_run_on_a_clip_writes_the_annotated_video(model, tmp_path, capsys):
    clip = samples.make_test_clip(12, no_face_frames=2, path=tmp_path / "clip.mp4")
    out = tmp_path / "annotated.mp4"
    code = cli.main(["run", "--source", str(tmp_path / "clip.mp4"), "--out", str(out), "--model", str(model),
                     "--detect-every", "3", "--max-frames", "10", "--no-show"])
    printed = capsys.readouterr().out
    assert code == 0 and "FPS" in printed and "classify" in printed and str(out) in printed
    assert len(media.read_video(out)) == 10 and len(clip) == 12


@pytest.mark.parametrize("source, message", [("96", "no camera at index 96"),
                                             ("broken.mp4", "broken.mp4: not a readable video"),
                                             ("absent.mp4", "absent.mp4: no such file or folder")])
def test_run_bad_sources_are_clear_errors(model, tmp_path, capsys, source, message):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 500)
    path = source if source.isdigit() else str(tmp_path / source)
    assert cli.main(["run", "--source", path, "--model", str(model), "--no-show"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_make_clip_command(tmp_path, capsys):
    assert cli.main(["make-clip", str(tmp_path / "c.mp4"), "--frames", "5"]) == 0
    assert len(media.read_video(tmp_path / "c.mp4")) == 5


def test_predict_a_folder_tree_as_csv_with_a_summary_line(model, astronaut, tmp_path, capsys):
    (tmp_path / "album" / "2024").mkdir(parents=True)
    for target in (tmp_path / "album" / "a.png", tmp_path / "album" / "2024" / "b.jpg"):
        cv2.imwrite(str(target), cv2.imread(str(astronaut)))
    (tmp_path / "album" / "2024" / "c.png").write_bytes(b"")
    code = cli.main(["predict", str(tmp_path / "album"), "--model", str(model), "--format", "csv"])
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == cli.EXIT_PARTIAL and [r["image"] for r in rows] == [
        str(tmp_path / "album" / p) for p in ("2024/b.jpg", "2024/c.png", "a.png")]
    assert [r["label"] in CLASS_NAMES for r in rows] == [True, False, True] and rows[1]["label"] == "error"
    assert list(rows[0])[:8] == ["image", "face", "x", "y", "w", "h", "detector_score", "label"]
    assert rows[0]["face"] == "0" and float(rows[0]["detector_score"]) > 5
    assert err.splitlines() == [f"error: {tmp_path / 'album' / '2024' / 'c.png'}: the file is empty",
                                "summary: 3 images: 2 with a face (2 faces), 0 without a face, 1 failed"]


def test_run_writes_the_table_of_expressions(model, tmp_path, capsys):
    import pandas as pd

    from fer_utils import ExpressionRecognizer

    clip = tmp_path / "clip.mp4"
    samples.make_test_clip(12, no_face_frames=2, path=clip)
    table = tmp_path / "tables" / "frames.csv"
    code = cli.main(["run", "--source", str(clip), "--csv", str(table), "--model", str(model), "--seconds", "0.6",
                     "--no-show"])
    printed = capsys.readouterr().out
    assert code == cli.EXIT_OK and f"table of expressions (9 rows): {table}" in printed
    assert "frames: 9 (7 with a face, 7 faces; seconds (0.6))" in printed
    written = pd.read_csv(table)
    assert list(written.columns) == ["frame", "time_s", "face", "x", "y", "w", "h", "detector_score", "label",
                                     *CLASS_NAMES]
    assert list(written.frame) == list(range(9)) and list(written.label[:2]) == ["no face"] * 2
    expected = ExpressionRecognizer(model).analyze_video(clip, seconds=0.6, progress=False)  # the same answer
    pd.testing.assert_frame_equal(written, expected.astype({c: "float64" for c in ("face", "x", "y", "w", "h")})
                                  .astype({"label": "object"}), check_dtype=False)


def test_a_missing_optional_dependency_is_one_line_naming_the_extra(astronaut, model, monkeypatch, capsys):
    """``--detector mtcnn`` without mtcnn installed (hidden here): one ``error:`` line that names
    the extra to install, status 4, no traceback."""
    from fer_utils import detection

    monkeypatch.setattr(detection, "import_keras", lambda: None)  # (TensorFlow is installed here; mtcnn is not)
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # `import mtcnn` fails as if it were not installed
    code = cli.main(["predict", str(astronaut), "--model", str(model), "--detector", "mtcnn"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_MISSING_EXTRA == 4 and out == ""
    assert err == 'error: the MTCNN face detector needs mtcnn, which is not installed: pip install "fer_utils[mtcnn]"\n'

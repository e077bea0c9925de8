"""Fault injection: every class of bad input at every entry point (the CLI, the loader, the app,
the pipeline), and faults during long runs. Each test generates its bad input, then checks the
message, the exit code and that nothing partial or temporary is left behind."""

from __future__ import annotations

import gzip
import io
import json
import os

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from fer_utils import cli, data, evaluate, export, files, media, pipeline, samples
from fer_utils.detection import HaarDetector
from fer_utils.model_file import ModelFileError, OnnxClassifier
from fer_utils.recognizer import Recognizer
from fer_utils.config import IMAGE_SIZE, TEST, TRAIN, VAL
from fer_utils.data import DataFormatError
from onnx_helpers import build_tiny, tiny_onnx


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos: the astronaut (one face) and the coffee cup (no face), as PNG files."""
    from skimage import data as samples

    folder = tmp_path_factory.mktemp("photos")
    for name, rgb in (("astronaut.png", samples.astronaut()), ("coffee.png", samples.coffee())):
        Image.fromarray(rgb).save(folder / name)
    return folder


def predict(capsys, *args):
    """``fer-predict predict ARGS``: (exit code, stdout, stderr)."""
    code = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def run(capsys, *args):
    """``fer-predict run ARGS --no-show``: (exit code, stdout, stderr)."""
    code = cli.main(["run", *map(str, args), "--no-show"])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder) -> list[str]:
    """Temporary files anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob("*") if ".tmp" in p.name)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


# ---------------------------------------------------------------------------------------------
# Output paths


@pytest.fixture
def clip(tmp_path):
    samples.make_test_clip(8, size=(320, 240), no_face_frames=2, path=tmp_path / "clip.mp4")
    return tmp_path / "clip.mp4"


@pytest.mark.parametrize("option, out, message", [
    ("--out", "folder", "folder: is a folder; name the video file to write"),
    ("--out", "a_file/annotated.mp4", "cannot be written: {tmp}/a_file is a file, not a folder"),
    ("--out", "a_file/deeper/annotated.mp4", "cannot be written: {tmp}/a_file is a file, not a folder"),
    ("--out", "annotated.txt", "annotated.txt: a video file name must end in .mp4 or .avi"),
    ("--csv", "folder", "folder: is a folder; name the table file to write, e.g. {tmp}/folder/frames.csv"),
    ("--csv", "frames.txt", "frames.txt: a table file name must end in .csv"),
    ("--csv", "a_file/frames.csv", "cannot be written: {tmp}/a_file is a file, not a folder"),
])
def test_run_refuses_an_unwritable_output_before_processing(clip, tmp_path, capsys, option, out, message, monkeypatch):
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("a regular file")
    monkeypatch.setattr(Recognizer, "process", lambda *a, **k: pytest.fail("a frame was processed"))
    code, printed, err = run(capsys, "--source", clip, option, tmp_path / out, "--model", "absent.onnx")
    assert code == cli.EXIT_ERROR and printed == ""
    assert error_lines(err) == [line for line in err.splitlines() if line]  # only error lines
    assert len(error_lines(err)) == 1 and message.format(tmp=tmp_path) in err and "Traceback" not in err
    assert leftovers(tmp_path) == [] and not list((tmp_path / "folder").iterdir())


def test_make_clip_refuses_a_folder(tmp_path, capsys):
    assert cli.main(["make-clip", str(tmp_path)]) == cli.EXIT_ERROR
    assert "is a folder" in capsys.readouterr().err and leftovers(tmp_path) == []


def test_a_folder_of_unreadable_images_is_an_error_not_nan(model, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.jpg").write_text("not an image")
    (frames / "b.png").write_bytes(b"")
    out = tmp_path / "annotated.mp4"
    code, printed, err = run(capsys, "--source", frames, "--out", out, "--model", model)
    assert code == cli.EXIT_ERROR and "nan" not in printed.lower()
    lines = error_lines(err)
    assert len(lines) == 3 and "a.jpg: not an image" in lines[0] and "b.png: the file is empty" in lines[1]
    assert "no frame could be read; no video written" in lines[2]
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_folder_with_some_unreadable_images_is_partial(model, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(samples.make_test_clip(3, size=(320, 240), no_face_frames=0)):
        cv2.imwrite(str(frames / f"{i}.png"), frame)
    (frames / "9.jpg").write_text("not an image")
    out = tmp_path / "annotated.mp4"
    code, printed, err = run(capsys, "--source", frames, "--out", out, "--model", model)
    assert code == cli.EXIT_PARTIAL and len(error_lines(err)) == 1 and "9.jpg: not an image" in err
    assert "frames: 3" in printed and len(media.read_video(out)) == 3 and leftovers(tmp_path) == []


@pytest.mark.parametrize("option, name, writer", [("--out", "annotated.mp4", media), ("--csv", "frames.csv", files)])
def test_a_failed_rename_of_the_video_or_table_leaves_nothing(model, clip, tmp_path, capsys, monkeypatch,
                                                              option, name, writer):
    def refuse(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(writer.os, "replace", refuse)
    out = tmp_path / "out" / name
    code, _, err = run(capsys, "--source", clip, option, out, "--model", model)
    assert code == cli.EXIT_ERROR and "No space left on device" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("option, name", [("--out", "annotated.mp4"), ("--csv", "frames.csv")])
def test_an_interrupted_run_exits_130_without_a_partial_video_or_table(model, clip, tmp_path, capsys, monkeypatch,
                                                                        option, name):
    process = Recognizer.process

    def stop_at_frame_3(self, frame, annotate=True):
        self.seen = getattr(self, "seen", 0) + 1
        if self.seen == 3:
            raise KeyboardInterrupt
        return process(self, frame, annotate)

    monkeypatch.setattr(Recognizer, "process", stop_at_frame_3)
    out = tmp_path / name
    code, printed, err = run(capsys, "--source", clip, option, out, "--model", model)
    assert code == cli.EXIT_INTERRUPTED and "frames: 2" in printed and f"{out} not written" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_interrupted_predict_exits_130(model, photos, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Recognizer, "faces_in_image", interrupt)
    code, _, err = predict(capsys, photos / "astronaut.png", "--model", model)
    assert code == cli.EXIT_INTERRUPTED and err.strip() == "interrupted"


# ---------------------------------------------------------------------------------------------
# Internal errors


def test_an_internal_error_exits_3_with_the_traceback_in_a_log(photos, capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(cli, "_predict", broken)
    code, _, err = predict(capsys, photos / "astronaut.png")
    assert code == cli.EXIT_INTERNAL and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("error: internal error (RuntimeError: a bug); the traceback is in ")
    log = line.split("the traceback is in ")[1].split(" ")[0]
    try:
        assert "Traceback" in open(log).read() and "a bug" in open(log).read()
    finally:
        os.unlink(log)
    code, _, err = predict(capsys, photos / "astronaut.png", "--debug")
    assert code == cli.EXIT_INTERNAL and "Traceback" in err and err.rstrip().endswith("(RuntimeError: a bug)")


# ---------------------------------------------------------------------------------------------
# Model files that load but are not a 7-class probability model


def linear_onnx(path, input_type=TensorProto.FLOAT, softmax=True, classes=7):
    """A valid ONNX model (N, 48, 48) -> (N, classes): row means times random weights, with or
    without a softmax; ``input_type`` sets the input's element type."""
    dtype = helper.tensor_dtype_to_np_dtype(input_type)
    weights = (10 * np.random.default_rng(0).normal(size=(IMAGE_SIZE, classes))).astype(dtype)
    nodes = [helper.make_node("ReduceMean", ["face"], ["rows"], axes=[2], keepdims=0),
             helper.make_node("MatMul", ["rows", "w"], ["scores" if softmax else "out"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores"], ["out"], axis=-1))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("face", input_type, ["N", IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("out", input_type, ["N", classes])],
        [helper.make_tensor("w", input_type, weights.shape, weights.ravel())])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("float64", "float64.onnx: not a FER classifier: its input 'face' is tensor(double); expected float32"),
    ("scores", "scores.onnx: not a FER classifier: its outputs are not probabilities"),
    ("classes5", "classes5.onnx: not a FER classifier (expects one input (N, 48, 48) and 7 outputs"),
])
def test_a_model_that_is_not_a_probability_model_is_refused(kind, message, photos, tmp_path, capsys):
    path = linear_onnx(tmp_path / f"{kind}.onnx", input_type=TensorProto.DOUBLE if kind == "float64" else
                       TensorProto.FLOAT, softmax=kind != "scores", classes=5 if kind == "classes5" else 7)
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        OnnxClassifier(path)
    code, out, err = predict(capsys, photos / "astronaut.png", "--model", path)
    assert code == cli.EXIT_ERROR and out == "" and error_lines(err) == [err.strip()] and message in err
    assert "Traceback" not in err and "667" not in out


def test_a_softmax_model_passes_the_probe(tmp_path):
    classifier = OnnxClassifier(linear_onnx(tmp_path / "ok.onnx"))
    assert classifier.predict(np.zeros((3, 48, 48), np.uint8)).sum(axis=1) == pytest.approx(1, abs=1e-5)


def test_the_app_names_the_model_not_the_face_detector(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from fer_utils import app

    monkeypatch.setenv(app.MODEL_ENV_VAR, str(linear_onnx(tmp_path / "scores.onnx", softmax=False)))
    page = AppTest.from_file(str(app.__file__), default_timeout=120).run()
    errors = [e.value for e in page.error]
    assert len(errors) == 1 and errors[0].startswith(f"The model cannot be loaded: {tmp_path / 'scores.onnx'}: "
                                                     "not a FER classifier: its outputs are not probabilities")
    assert "detector" not in errors[0] and not page.subheader


# ---------------------------------------------------------------------------------------------
# Photos


def test_a_photo_without_a_face_is_a_result_with_a_note(model, photos, capsys):
    code, out, err = predict(capsys, photos / "coffee.png", "--model", model)
    (result,) = json.loads(out)
    assert code == cli.EXIT_OK and result["faces"] == [] and result["note"].startswith("no face found")
    assert err.startswith(f"note: {photos / 'coffee.png'}: no face found") and not error_lines(err)
    code, out, _ = predict(capsys, photos / "coffee.png", "--model", model, "--format", "csv")
    assert code == cli.EXIT_OK and out.splitlines()[1].split(",")[7] == "no face"


@pytest.mark.parametrize("size", [(1, 1), (23, 100), (100, 10)])
@pytest.mark.parametrize("whole", [False, True])
def test_a_tiny_image_is_not_labelled_as_a_face(model, tmp_path, capsys, size, whole):
    path = tmp_path / "tiny.png"
    Image.new("L", size, 128).save(path)
    code, out, err = predict(capsys, path, "--model", model, *(["--whole"] if whole else []))
    assert code == cli.EXIT_ERROR and json.loads(out)[0]["faces"] == []
    assert f"tiny.png: the image is {size[0]}x{size[1]} pixels, too small to hold a face (at least 24x24" in err
    from fer_utils import app

    with pytest.raises(app.InputError, match="too small to hold a face"):
        app.decode_image(path.read_bytes(), "tiny.png")


def test_the_smallest_face_size_is_accepted(model, tmp_path, capsys):
    Image.new("L", (24, 24), 128).save(tmp_path / "small.png")
    code, out, _ = predict(capsys, tmp_path / "small.png", "--model", model)
    assert code == cli.EXIT_OK and json.loads(out)[0]["faces"][0]["box"] == [0, 0, 24, 24]


@pytest.mark.parametrize("option", [["--margin", "-5"], ["--margin", "3"], ["--margin", "wide"], ["--threads", "0"]])
def test_out_of_range_options_are_refused(photos, capsys, option):
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", str(photos / "astronaut.png"), *option])
    err = capsys.readouterr().err
    assert stop.value.code == cli.EXIT_ERROR and len(error_lines(err)) == 1
    assert error_lines(err)[0].startswith(f"error: argument {option[0]}: ")
    with pytest.raises(ValueError, match="margin=-5"):
        Recognizer(lambda x: x, HaarDetector(), margin=-5)


def test_a_folder_given_to_predict_is_searched_for_images(model, photos, tmp_path, capsys):
    code, out, err = predict(capsys, photos, "--model", model)
    results = json.loads(out)
    assert code == cli.EXIT_OK and [r["image"] for r in results] == [str(photos / "astronaut.png"),
                                                                    str(photos / "coffee.png")]
    assert len(results[0]["faces"]) == 1 and results[1]["faces"] == [] and not error_lines(err)
    assert err.splitlines()[-1] == "summary: 2 images: 1 with a face (1 face), 1 without a face, 0 failed"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = predict(capsys, empty, "--model", model)
    assert code == cli.EXIT_ERROR and error_lines(err) == [f"error: {empty}: a folder without images (.bmp, .jpeg, "
                                                           ".jpg, .png, .tif, .tiff, .webp)"]
    assert json.loads(out)[0]["error"].startswith(f"{empty}: a folder without images")


def truncated_jpeg(folder):
    from skimage import data as samples

    buffer = io.BytesIO()
    Image.fromarray(samples.astronaut()).save(buffer, "JPEG")
    path = folder / "truncated.jpg"
    path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    return path


def test_a_truncated_jpeg_is_refused_by_the_cli_and_the_app_alike(model, photos, tmp_path, capsys):
    from fer_utils import app

    path = truncated_jpeg(tmp_path)
    code, out, err = predict(capsys, path, photos / "astronaut.png", "--model", model)
    assert code == cli.EXIT_PARTIAL and len(json.loads(out)[1]["faces"]) == 1
    (line,) = error_lines(err)
    assert line.startswith(f"error: {path}: a damaged or truncated image")
    with pytest.raises(app.InputError) as refused:
        app.decode_image(path.read_bytes(), str(path))
    assert line == f"error: {refused.value}"


def test_the_cli_has_the_apps_pixel_limit(model, tmp_path, capsys):
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 6_000)).save(path)  # 60 megapixels in a few kB
    code, _, err = predict(capsys, path, "--model", model)
    assert code == cli.EXIT_ERROR
    assert "huge.png: the image is 10000x6000 (60 megapixels); the limit is 50 megapixels" in err


# ---------------------------------------------------------------------------------------------
# Datasets


def damaged_gzip(csv_path, folder, damage: str):
    """The CSV gzipped, then damaged: ``body`` (a second gzip member whose deflate data is
    invalid, after 100 good rows: what raised a raw ``zlib.error``), ``garbage`` (bytes in the
    middle overwritten), ``truncated`` or ``crc`` (the stored checksum flipped)."""
    content = csv_path.read_bytes()
    raw = bytearray(gzip.compress(content))
    if damage == "body":
        lines = content.splitlines(keepends=True)
        bad = bytearray(gzip.compress(b"".join(lines[100:])))
        bad[10] = 0x07  # the first deflate block header: final block of the reserved type 3
        raw = bytearray(gzip.compress(b"".join(lines[:100]))) + bad
    elif damage == "garbage":
        raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(range(64))
    elif damage == "truncated":
        raw = raw[:len(raw) // 2]
    else:
        raw[-8] ^= 0xFF
    path = folder / "fer2013.csv.gz"
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("damage", ["body", "truncated", "crc"])
def test_damaged_csv_gz_is_a_named_error(csv_file, tmp_path, damage):
    path = damaged_gzip(csv_file, tmp_path, damage)
    with pytest.raises(DataFormatError, match="cannot be read as a \\(gzipped\\) CSV file .*the file is damaged") as err:
        data.load_fer2013(path, progress=False)
    assert str(err.value).startswith(f"{path}, after line ") and err.value.__cause__ is None
    if damage == "body":
        assert "zlib" in str(err.value) or "invalid block type" in str(err.value)
    assert not data.config.cache_dir().exists() or not list(data.config.cache_dir().iterdir())


def test_garbage_in_a_csv_gz_is_a_named_error(csv_file, tmp_path):
    path = damaged_gzip(csv_file, tmp_path, "garbage")
    with pytest.raises(DataFormatError, match=f"^{path}"):
        data.load_fer2013(path, progress=False)


def test_image_folder_with_only_train_is_refused_before_caching(small_ds, tmp_path):
    root = data.write_image_folder(small_ds.subset(small_ds.usage == TRAIN), tmp_path / "only-train")
    with pytest.raises(DataFormatError, match=f"{root}: no PublicTest images .*all three splits"):
        data.load_fer2013(root, progress=False)
    cache = data.config.cache_dir()
    assert not cache.exists() or not list(cache.iterdir())


def test_csv_without_a_split_is_refused(small_ds, tmp_path):
    path = data.write_csv(small_ds.subset(small_ds.usage != TEST), tmp_path / "fer2013.csv")
    with pytest.raises(DataFormatError, match="no row has Usage PrivateTest"):
        data.load_csv(path, progress=False)


@pytest.mark.parametrize("name", ["fer2013.csv", "fer2013.csv.gz"])
def test_csv_with_a_utf8_bom_is_accepted(small_ds, csv_file, tmp_path, name):
    path = tmp_path / name
    content = b"\xef\xbb\xbf" + csv_file.read_bytes()
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    assert data.load_csv(path, progress=False).fingerprint == small_ds.fingerprint


# ---------------------------------------------------------------------------------------------
# No data at all


@pytest.fixture
def notebooks_run(monkeypatch):
    """Record what the pipeline would execute, without running a notebook."""
    calls = []
    monkeypatch.setattr(pipeline, "run_notebook", lambda nb, profile, data_path, reports_dir, *a: (
        calls.append((nb.name, profile, data_path, reports_dir)) or reports_dir / nb.name))
    return calls


def test_make_all_without_data_runs_the_smoke_sizes_and_says_how_to_get_real_results(notebooks_run, capsys):
    assert pipeline.main(["--profile", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert notebooks_run and {profile for _, profile, _, _ in notebooks_run} == {"smoke"}
    reports = notebooks_run[0][3]
    assert reports == pipeline.config.BUILD_DIR / "smoke-synthetic" / "reports"
    assert printed.startswith("no FER2013 copy found: every notebook runs on the synthetic stand-in")
    assert printed.rstrip().splitlines()[-1].startswith(f"These results ({reports}) come from the synthetic")
    assert "make all FER2013=path/to/fer2013.csv.gz" in printed.rstrip().splitlines()[-1]


def test_asking_for_the_stand_in_keeps_the_profile(notebooks_run, capsys):
    pipeline.main(["--profile", "cpu", "--data", "synthetic", "01"])
    assert [profile for _, profile, _, _ in notebooks_run] == ["cpu"]


def test_with_data_the_profile_is_kept(notebooks_run, csv_file, capsys):
    pipeline.main(["--profile", "cpu", "--data", str(csv_file), "--reports-dir", str(csv_file.parent / "r"), "01"])
    assert [profile for _, profile, _, _ in notebooks_run] == ["cpu"]
    assert "synthetic stand-in" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Faults during long runs: a failed or interrupted write leaves the previous file whole


def fail_replace_into(monkeypatch, suffix: str):
    """Make ``files.atomic_path``'s rename fail for targets ending in ``suffix``."""
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(suffix):
            raise KeyboardInterrupt  # as if stopped right before the rename
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)


def test_an_interrupted_metrics_write_keeps_the_old_file(tmp_path, monkeypatch):
    old = {"run": "r1", "metrics": {"version": 1}}
    path = evaluate.write_metrics(old, tmp_path)
    with monkeypatch.context() as patch:
        fail_replace_into(patch, ".json")
        with pytest.raises(KeyboardInterrupt):
            evaluate.write_metrics({"run": "r1", "metrics": {"version": 2}}, tmp_path)
    assert json.loads(path.read_text()) == old and leftovers(tmp_path) == []
    evaluate.write_metrics({"run": "r1", "metrics": {"version": 2}}, tmp_path)
    assert json.loads(path.read_text())["metrics"] == {"version": 2}


def test_an_interrupted_summary_or_release_leaves_no_temp_file(tmp_path, monkeypatch, model):
    evaluate.write_summary(tmp_path)
    before = (tmp_path / "summary.md").read_text()
    fail_replace_into(monkeypatch, "summary.md")
    with pytest.raises(KeyboardInterrupt):
        evaluate.write_summary(tmp_path)
    assert (tmp_path / "summary.md").read_text() == before and leftovers(tmp_path) == []
    fail_replace_into(monkeypatch, ".onnx")
    with pytest.raises(KeyboardInterrupt):
        export.release_model(model, {"run": "r"}, {}, tmp_path / "models")
    assert not (tmp_path / "models" / "fer_champion.onnx").exists() and leftovers(tmp_path) == []


def test_an_interrupted_cache_write_is_redone(csv_file, monkeypatch):
    with monkeypatch.context() as patch:  # (not monkeypatch.undo(): that would also undo the isolated cache folder)
        fail_replace_into(patch, ".npz")
        with pytest.raises(KeyboardInterrupt):
            data.load_fer2013(csv_file, progress=False)
    cache = data.config.cache_dir()
    assert leftovers(cache) == [] and not list(cache.glob("*.npz"))
    assert len(data.load_fer2013(csv_file, progress=False)) == len(data.load_csv(csv_file, progress=False))
    assert len(list(cache.glob("*.npz"))) == 1


def test_a_training_interrupted_then_its_metrics_write_interrupted_reruns_without_losing_epochs(tmp_path,
                                                                                                monkeypatch):
    from fer_utils.config import import_keras
    from fer_utils.notebook import start
    from fer_utils.train import TrainConfig, train_and_evaluate

    keras = import_keras()
    run = start("03_fault", "smoke", "synthetic", str(tmp_path / "reports"), seed=0, verbose=False)
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    history_end = keras.callbacks.History.on_epoch_end

    def stop_after_the_first_epoch(self, epoch, logs=None):  # Keras calls History last, after the backups
        history_end(self, epoch, logs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # 1. stopped during training, after epoch 1 of 2
        patch.setattr(keras.callbacks.History, "on_epoch_end", stop_after_the_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(run.store, run.dataset, "tiny", build_tiny, cfg)
    assert not list(run.metrics_dir.glob("*.json")) if run.metrics_dir.exists() else True
    with monkeypatch.context() as patch:  # 2. rerun, stopped while writing the metrics file
        fail_replace_into(patch, ".json")
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(run.store, run.dataset, "tiny", build_tiny, cfg)
    assert not list(run.metrics_dir.glob("*.json")) and leftovers(run.reports_dir.parent) == []
    record = train_and_evaluate(run.store, run.dataset, "tiny", build_tiny, cfg)  # 3. rerun: nothing lost
    assert record["train"]["epochs"] == 2 and record["train"]["resumed_from_epoch"] >= 1
    assert json.loads((run.metrics_dir / f"{record['run']}.json").read_text())["run"] == record["run"]
    assert leftovers(run.reports_dir.parent) == []
    assert {VAL, TEST} <= set(record["metrics"])

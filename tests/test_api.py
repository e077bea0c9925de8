"""The Python API (``fer_utils.api``): photos, batches and videos with the released model, and the
same answers as the CLI and the browser app. (The installed package: ``tests/test_install.py``.)"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_utils import ExpressionRecognizer, api, cli, plot_timeline, samples
from fer_utils.config import CLASS_NAMES
from fer_utils.media import SourceError
from fer_utils.model_file import RELEASED_MODEL
from fer_utils.recognizer import NO_FACE

pytestmark = pytest.mark.skipif(not RELEASED_MODEL.is_file(), reason=f"no released model at {RELEASED_MODEL}")
#: Where the astronaut's face lies in skimage.data.astronaut() (x0, y0, x1, y1), with room to spare.
ASTRONAUT_HEAD = (130, 20, 320, 230)


@pytest.fixture(scope="module")
def recognizer():
    return ExpressionRecognizer(threads=1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos as PNG files: the astronaut (one face), a sheet of four astronaut heads, the
    coffee cup (no face)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    astronaut = data.astronaut()
    head = astronaut[20:215, 140:310]
    sheet = np.full((460, 760, 3), 200, np.uint8)
    for i, (y, x) in enumerate([(20, 20), (20, 400), (245, 200), (245, 560)]):
        sheet[y:y + head.shape[0], x:x + head.shape[1]] = head if i % 2 == 0 else head[:, ::-1]
    for name, rgb in (("astronaut.png", astronaut), ("sheet.png", sheet), ("coffee.png", data.coffee())):
        Image.fromarray(rgb).save(folder / name)
    return folder


def inside(box, area) -> bool:
    x, y, w, h = box
    return area[0] <= x and area[1] <= y and x + w <= area[2] and y + h <= area[3]


def test_predict_a_photo_gives_box_label_probabilities_and_detector_score(recognizer, photos):
    (face,) = recognizer.predict(photos / "astronaut.png")
    assert recognizer.class_names[:7] == CLASS_NAMES, "FER2013's seven classes first, in their order"
    assert inside(face.box, ASTRONAUT_HEAD) and face.label in recognizer.class_names
    assert list(face.probabilities) == list(recognizer.class_names)
    assert sum(face.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert face.detector_score > 5 and face.detector_score == int(face.score), "Haar's: raw detections merged, > 5"
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    assert recognizer.predict(photos / "coffee.png") == []


def test_every_kind_of_image_input_gives_the_same_faces(recognizer, photos):
    path = photos / "astronaut.png"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    expected = recognizer.predict(path)[0]
    for image, options in [(str(path), {}), (path.read_bytes(), {}), (Image.open(path), {}), (rgb, {}),
                           (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), {"bgr": True})]:
        (face,) = recognizer.predict(image, **options)
        assert face.box == expected.box and np.array_equal(face.proba, expected.proba)
    with pytest.raises(SourceError, match="is a folder, not an image file"):
        recognizer.predict(photos)


def test_the_cli_the_app_and_the_api_give_the_same_answer(recognizer, photos, capsys):
    """The same photos through ``fer-predict predict``, the browser app's analysis and the API."""
    from fer_utils import app

    names = ["astronaut.png", "sheet.png"]
    assert cli.main(["predict", *[str(photos / n) for n in names]]) == cli.EXIT_OK
    from_cli = json.loads(capsys.readouterr().out)
    default = ExpressionRecognizer()  # the defaults, as the CLI's
    page = app.make_recognizer()
    for name, entry in zip(names, from_cli):
        from_api = default.predict(photos / name)
        from_app = app.analyse(app.decode_image((photos / name).read_bytes(), name), page, max_faces=50).faces
        assert len(entry["faces"]) == len(from_api) == len(from_app) >= (1 if name == "astronaut.png" else 4)
        for cli_face, api_face, app_face in zip(entry["faces"], from_api, from_app):
            assert cli_face["box"] == list(api_face.box) == list(app_face.box)
            assert cli_face["label"] == api_face.label == app_face.label
            assert cli_face["detector_score"] == api_face.detector_score == app_face.score
            np.testing.assert_allclose([cli_face["probabilities"][c] for c in default.class_names], api_face.proba, atol=1e-6)
            np.testing.assert_array_equal(api_face.proba, app_face.proba)
            np.testing.assert_array_equal(api_face.crop, app_face.crop)


def test_predict_many_goes_through_folders_recursively(recognizer, photos, tmp_path):
    batch = tmp_path / "batch"
    (batch / "sub" / "deeper").mkdir(parents=True)
    (batch / "empty").mkdir()
    for target in (batch / "a.png", batch / "sub" / "deeper" / "b.PNG"):
        target.write_bytes((photos / "astronaut.png").read_bytes())
    (batch / "sub" / "coffee.png").write_bytes((photos / "coffee.png").read_bytes())
    (batch / "sub" / "broken.jpg").write_text("not an image")
    (batch / "notes.txt").write_text("not an image, not listed")
    results = recognizer.predict_many([batch, photos / "sheet.png", tmp_path / "missing.jpg", batch / "empty"],
                                      progress=False)
    assert [r.image for r in results] == [
        str(batch / "a.png"), str(batch / "sub" / "broken.jpg"), str(batch / "sub" / "coffee.png"),
        str(batch / "sub" / "deeper" / "b.PNG"), str(photos / "sheet.png"), str(tmp_path / "missing.jpg"),
        str(batch / "empty")]
    assert [len(r.faces) for r in results][:4] == [1, 0, 0, 1] and len(results[4].faces) >= 4
    assert "broken.jpg: not an image" in results[1].error and "missing.jpg: no such image file" in results[5].error
    assert results[6].error.endswith(")") and "a folder without images" in results[6].error
    assert results[0].size == (512, 512) and results[0].as_dict()["faces"][0]["label"] in CLASS_NAMES
    faces = len(results[4].faces) + 2
    assert api.batch_summary(results) == f"7 images: 3 with a face ({faces} faces), 1 without a face, 3 failed"
    table = api.results_table(results)
    assert list(table.columns) == ["image", "face", "x", "y", "w", "h", "detector_score", "label", *CLASS_NAMES]
    assert len(table) == faces + 4 and list(table.label[1:3]) == ["error", "no face"]
    assert table.face.iloc[0] == 0 and table.x.isna().sum() == 4


def test_predict_many_takes_one_folder_or_one_image_as_a_single_str_or_path(recognizer, photos):
    """``predict_many("photos/")``: one path is one item (its images), never a string's characters."""
    expected = [str(photos / name) for name in ("astronaut.png", "coffee.png", "sheet.png")]
    for folder in (str(photos), photos):
        results = recognizer.predict_many(folder, progress=False)
        assert [r.image for r in results] == expected and all(r.error is None for r in results)
    (single,) = recognizer.predict_many(str(photos / "astronaut.png"), progress=False)
    assert single.image == str(photos / "astronaut.png") and len(single.faces) == 1
    (as_path,) = recognizer.predict_many(photos / "astronaut.png", progress=False)
    assert as_path.faces[0].box == single.faces[0].box


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames of 640x480 at 10 fps: 2 without a face, then the astronaut's face moving."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    samples.make_test_clip(12, no_face_frames=2, path=path, fps=10)
    return path


def test_analyze_video_gives_one_row_per_frame_and_face(recognizer, clip):
    table = recognizer.analyze_video(clip, progress=False)
    assert list(table.columns) == ["frame", "time_s", "face", "x", "y", "w", "h", "detector_score", "label",
                                   *recognizer.class_names]
    assert list(table.frame) == list(range(12)) and table.time_s.tolist() == pytest.approx(np.arange(12) / 10)
    assert list(table.label[:2]) == [NO_FACE] * 2 and table.face[:2].isna().all()
    faces = table[table.face.notna()]
    assert len(faces) >= 8 and set(faces.label) <= set(recognizer.class_names)
    assert faces[list(recognizer.class_names)].sum(axis=1).to_numpy() == pytest.approx(1, abs=1e-4)
    assert table.attrs["frames"] == 12 and table.attrs["stopped"] == "end of source"
    assert len(recognizer.analyze_video(clip, max_frames=5, progress=False)) == 5
    stopped = recognizer.analyze_video(clip, seconds=0.5, progress=False)
    assert stopped.frame.max() == 4 and stopped.attrs["stopped"] == "seconds (0.5)"
    ax = plot_timeline(table, smooth=3)
    assert [line.get_label() for line in ax.get_lines()] == list(recognizer.class_names)
    assert ax.get_xlim() == pytest.approx((0.0, 1.1))


def test_analyze_video_from_a_missing_camera_or_file_is_a_clear_error(recognizer, tmp_path):
    with pytest.raises(SourceError, match="no camera at index 97"):
        recognizer.analyze_video(97)
    with pytest.raises(SourceError, match="absent.mp4: no such file or folder"):
        recognizer.analyze_video(tmp_path / "absent.mp4")


def test_the_model_can_be_any_function_and_options_are_checked():
    uniform = ExpressionRecognizer(lambda faces: np.full((len(faces), 7), 1 / 7, np.float32))
    from skimage import data

    (face,) = uniform.predict(data.astronaut())
    assert face.label == CLASS_NAMES[0] and face.probabilities["neutral"] == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="margin=2"):
        ExpressionRecognizer(uniform.classifier, margin=2)
    with pytest.raises(ValueError, match="unknown detector 'dlib'"):
        ExpressionRecognizer(uniform.classifier, detector="dlib")

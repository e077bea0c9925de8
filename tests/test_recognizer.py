"""The recognizer (``detection``, ``media``, ``recognizer``) on a generated clip made from a real
face photo: real Haar and MTCNN detectors, a real ONNX Runtime classifier, real video files
written and read back with OpenCV."""

import cv2
import numpy as np
import pytest

from fer_utils import detection, media, samples
from fer_utils.model_file import OnnxClassifier
from fer_utils.recognizer import STAGES, Recognizer, crop_face, run_pipeline
from fer_utils.config import CLASS_NAMES
from onnx_helpers import tiny_onnx

ASTRONAUT_FACE = (177, 66, 95, 95)  # Haar's box on skimage.data.astronaut() at full size


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return OnnxClassifier(tiny_onnx(tmp_path_factory.mktemp("onnx")), threads=1)


@pytest.fixture(scope="module")
def clip():
    return samples.make_test_clip(20, no_face_frames=3, fps=10)


def _astronaut_bgr():
    return cv2.cvtColor(samples.astronaut(), cv2.COLOR_RGB2BGR)


def test_haar_finds_the_astronaut():
    faces = detection.HaarDetector(width=None).detect(_astronaut_bgr())
    assert len(faces) == 1 and detection.iou(faces[0].box, ASTRONAUT_FACE) > 0.7


def test_mtcnn_finds_the_astronaut_with_her_eyes():
    faces = detection.MTCNNDetector(width=320).detect(_astronaut_bgr())
    assert len(faces) == 1 and faces[0].score > 0.9
    assert detection.iou(faces[0].box, ASTRONAUT_FACE) > 0.4
    (lx, ly), (rx, ry) = faces[0].eyes
    x, y, w, h = faces[0].box
    assert x < lx < rx < x + w and y < ly < y + h / 2 and abs(ly - ry) < 0.2 * h


def test_crop_is_a_48x48_face_even_at_the_border():
    gray = cv2.cvtColor(_astronaut_bgr(), cv2.COLOR_BGR2GRAY)
    crop = crop_face(gray, ASTRONAUT_FACE)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8 and crop.std() > 20
    edge = crop_face(gray, (-20, 480, 60, 60))  # partly outside the image
    assert edge.shape == (48, 48)
    level = crop_face(gray, ASTRONAUT_FACE, eyes=((200, 100), (245, 100)))
    tilted = crop_face(gray, ASTRONAUT_FACE, eyes=((200, 100), (245, 120)))
    assert np.array_equal(level, crop) and not np.array_equal(tilted, crop)


def test_pipeline_end_to_end_writes_a_readable_annotated_video(classifier, clip, tmp_path):
    source = media.write_video(clip, tmp_path / "clip.mp4", fps=10)
    recognizer = Recognizer(classifier, "haar", detect_every=3)
    out = tmp_path / "annotated.mp4"
    result = run_pipeline(source, recognizer, out=out, keep=3, keep_every=5, progress=False)
    assert result.frames == 20 and result.stopped == "end of source" and result.video == out
    assert result.labels[:3] == [[], [], []], "the background-only frames have no face"
    assert result.frames_with_face >= 15 and all(len(l) <= 1 for l in result.labels)
    assert all(label in CLASS_NAMES for labels in result.labels for label in labels)
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    capture.release()
    frames = media.read_video(out)
    assert len(frames) == 20 and frames[0].shape == (480, 640, 3)
    assert not list(tmp_path.glob("*.tmp*"))
    table = result.stats.table()
    assert list(table.index) == [*STAGES, "total"] and (table["mean_ms"] >= 0).all()
    assert result.fps > 0 and len(result.kept) == 3 and [i for i, _ in result.kept] == [0, 5, 10]


def test_a_frame_without_a_face_is_labelled_not_an_error(classifier):
    blank = np.full((480, 640, 3), 90, np.uint8)
    result = Recognizer(classifier, "haar").process(blank)
    assert result.faces == [] and not np.array_equal(result.annotated, blank), "a 'no face' label is drawn"
    assert np.array_equal(blank, np.full((480, 640, 3), 90, np.uint8)), "the input frame is not modified"
    assert set(result.timings) == {"detect", "crop", "classify", "draw"}


def test_a_display_function_sees_every_annotated_frame(classifier, clip):
    shown = []
    result = run_pipeline(clip[:4], Recognizer(classifier), display=shown.append, progress=False)
    assert result.frames == 4 and len(shown) == 4 and all(f.shape == (480, 640, 3) for f in shown)
    assert not np.array_equal(shown[0], clip[0]), "the frames shown are annotated ('no face' drawn)"


def test_gray_frames_and_in_memory_sources(classifier, clip):
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip[:6]]
    result = run_pipeline(gray, Recognizer(classifier), max_frames=5, progress=False)
    assert result.frames == 5 and result.stopped == "max_frames (5)" and result.frames_with_face >= 2


@pytest.mark.parametrize("method", ["template", "hold", "mil"])
def test_tracking_between_detections_follows_the_face(classifier, clip, method):
    calls = []
    detector = detection.HaarDetector()
    original = detector.detect
    detector.detect = lambda frame: calls.append(1) or original(frame)
    recognizer = Recognizer(classifier, detector, detect_every=4, tracker=method)
    results = [recognizer.process(frame) for frame in clip]
    tracked = [r for r in results if r.faces and r.faces[0].tracked]
    assert tracked, "some frames were tracked, not detected"
    assert len(calls) <= 3 + (len(clip) - 3) // 2, "the detector did not run on every frame"
    if method == "template":  # the tracked box stays on the face: it overlaps a fresh detection
        for i, r in enumerate(results):
            if r.faces and r.faces[0].tracked:
                fresh = original(clip[i])
                if fresh:
                    assert detection.iou(fresh[0].box, r.faces[0].box) > 0.5


def test_missing_camera_is_a_clear_error():
    with pytest.raises(media.SourceError, match="no camera at index 97"):
        media.open_source(97)
    with pytest.raises(media.SourceError, match="no camera at index 98"):
        media.open_source("98")


def test_unreadable_or_missing_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(media.SourceError, match="broken.mp4: not a readable video"):
        media.open_source(bad)
    with pytest.raises(media.SourceError, match="absent.mp4: no such file or folder"):
        media.open_source(str(tmp_path / "absent.mp4"))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(media.SourceError, match="empty_dir: a folder without images"):
        media.open_source(empty)


def test_folder_source_skips_unreadable_images(classifier, clip, tmp_path):
    for i in (0, 5, 10):
        cv2.imwrite(str(tmp_path / f"frame{i:02d}.png"), clip[i])
    (tmp_path / "frame99.jpg").write_text("not an image")
    result = run_pipeline(tmp_path, Recognizer(classifier), progress=False)
    assert result.frames == 3 and result.labels[0] == [] and result.frames_with_face == 2


def test_predict_image_whole_face_and_detected_faces(classifier):
    recognizer = Recognizer(classifier, detection.HaarDetector(width=None))
    faces = recognizer.predict_image(_astronaut_bgr())
    assert len(faces) == 1 and faces[0]["label"] in CLASS_NAMES
    assert sum(faces[0]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    small = recognizer.predict_image(np.full((48, 48), 100, np.uint8))  # a FER2013-size crop: no detection
    assert len(small) == 1 and small[0]["box"] == [0, 0, 48, 48]


def test_faces_of_equal_size_come_in_reading_order_whatever_the_detector_returned():
    from fer_utils.detection import Face, largest_first

    boxes = [(400, 20, 97, 97), (20, 20, 97, 97), (300, 10, 120, 120), (560, 245, 97, 97), (200, 245, 97, 97)]
    expected = [(300, 10, 120, 120), (20, 20, 97, 97), (400, 20, 97, 97), (200, 245, 97, 97), (560, 245, 97, 97)]
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [3, 0, 4, 2, 1]):
        assert [f.box for f in largest_first([Face(boxes[i], 1.0) for i in order])] == expected

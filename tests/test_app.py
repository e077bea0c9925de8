"""The browser app (``fer_utils/app.py``): its pure helpers on a real face photo, the page driven
by Streamlit's ``AppTest`` (uploads, webcam snapshot, bad input, explanations), and the running
app opened in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_utils import app
from fer_utils.config import CLASS_NAMES, PROJECT_ROOT
from fer_utils.model_file import RELEASED_MODEL

APP = PROJECT_ROOT / "fer_utils" / "app.py"
#: Where the astronaut's face lies in skimage.data.astronaut() (x0, y0, x1, y1), with room to spare.
ASTRONAUT_HEAD = (130, 20, 320, 230)

pytestmark = pytest.mark.skipif(not RELEASED_MODEL.is_file(), reason=f"no released model at {RELEASED_MODEL}")


def encode(rgb: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def no_face() -> np.ndarray:
    """A real photo without a face: scikit-image's coffee cup (400x600)."""
    from skimage import data

    return data.coffee()


@pytest.fixture(scope="module")
def crowd(astronaut) -> np.ndarray:
    """Twelve copies of the astronaut's head on one 4x3 sheet (1000x780 pixels)."""
    head = astronaut[20:215, 140:310]
    sheet = np.full((780, 1000, 3), 200, np.uint8)
    for row in range(3):
        for col in range(4):
            y, x = 30 + row * 250, 20 + col * 245
            sheet[y:y + head.shape[0], x:x + head.shape[1]] = head
    return sheet


@pytest.fixture(scope="module")
def recognizer():
    return app.make_recognizer()


def inside(box, area) -> bool:
    x, y, w, h = box
    return area[0] <= x and area[1] <= y and x + w <= area[2] and y + h <= area[3]


# ---------------------------------------------------------------------------------------------
# Input


def test_decode_reads_common_formats_as_rgb(astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    for name, data in [("a.jpg", encode(astronaut)), ("a.png", encode(astronaut, "PNG")),
                       ("a.webp", encode(astronaut, "WEBP")), ("gray.png", encode(gray, "PNG")),
                       ("rgba.png", encode(rgba, "PNG")), ("a.bmp", encode(astronaut, "BMP")),
                       ("a.gif", encode(astronaut, "GIF"))]:
        photo = app.decode_image(data, name)
        assert photo.name == name and photo.rgb.shape == (512, 512, 3) and photo.rgb.dtype == np.uint8
        assert photo.original_size == (512, 512) and photo.notes == []
    png = app.decode_image(encode(astronaut, "PNG"), "a.png")
    np.testing.assert_array_equal(png.rgb, astronaut)


def test_decode_follows_the_exif_orientation(astronaut):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    wide = np.ascontiguousarray(astronaut[:, :400])
    photo = app.decode_image(encode(wide, exif=exif), "phone.jpg")
    assert photo.rgb.shape == (400, 512, 3) and "EXIF orientation" in photo.notes[0]


@pytest.mark.parametrize("data, message", [
    (b"", "notes.txt: the file is empty"),
    (b"just some text, not a picture", "notes.txt: not an image"),
    (b"%PDF-1.4 a document", "notes.txt: not an image"),
])
def test_decode_rejects_what_is_not_an_image(data, message):
    with pytest.raises(app.InputError, match=message):
        app.decode_image(data, "notes.txt")


def test_decode_rejects_a_truncated_image(astronaut):
    data = encode(astronaut, "PNG")
    with pytest.raises(app.InputError, match="broken.png: a damaged or truncated image"):
        app.decode_image(data[:len(data) // 2], "broken.png")


def test_decode_caps_file_size_and_pixels_and_shrinks_large_images():
    with pytest.raises(app.InputError, match=r"big.jpg: the file is 2\.0 MB; the limit is 1 MB"):
        app.decode_image(b"\xff" * 2**21, "big.jpg", max_bytes=2**20)
    huge = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(huge, "PNG")  # 60 megapixels in a few kB: refused from its header
    with pytest.raises(app.InputError, match=r"huge.png: the image is 10000x6000 \(60 megapixels\); the limit is 50"):
        app.decode_image(huge.getvalue(), "huge.png")
    large = encode(np.full((3000, 4000, 3), 90, np.uint8), "PNG")
    photo = app.decode_image(large, "large.png")
    assert photo.rgb.shape == (1200, 1600, 3) and photo.original_size == (4000, 3000)
    assert photo.notes == ["shrunk from 4000x3000 to 1600x1200 pixels for analysis"]


# ---------------------------------------------------------------------------------------------
# Analysis


def test_analyse_the_sample_photo(recognizer, astronaut):
    photo = app.sample_photo()
    np.testing.assert_array_equal(photo.rgb, astronaut)
    analysis = app.analyse(photo, recognizer)
    assert analysis.found == 1 and len(analysis.faces) == 1 and not analysis.whole
    face = analysis.faces[0]
    assert inside(face.box, ASTRONAUT_HEAD)
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    classes = recognizer.class_names  # the default model's (docs/release.md's default-model rule)
    assert face.proba.shape == (len(classes),) and face.proba.sum() == pytest.approx(1, abs=1e-4)
    assert face.label in classes and face.label == classes[int(np.argmax(face.proba))]
    assert app.summary(analysis) == f"1 face: face 1 {face.label} ({100 * face.confidence:.0f}%)"
    assert analysis.seconds < 10
    table = app.probability_table(face)
    assert list(table.expression) == list(classes)
    record = json.loads(json.dumps(analysis.as_dict()))
    assert record["image"] == app.SAMPLE_NAME and record["faces"][0]["label"] == face.label


def test_analyse_a_photo_without_a_face(recognizer, no_face):
    analysis = app.analyse(app.decode_image(encode(no_face), "coffee.jpg"), recognizer)
    assert analysis.found == 0 and analysis.faces == [] and app.summary(analysis) == "no face found"
    assert app.annotate(analysis).shape == (427, 640, 3)  # small photos are enlarged for legible labels


def test_many_faces_keep_the_largest(recognizer, crowd):
    photo = app.decode_image(encode(crowd, "PNG"), "crowd.png")
    everyone = app.analyse(photo, recognizer, max_faces=50)
    assert everyone.found >= 8 and everyone.dropped == 0
    some = app.analyse(photo, recognizer, max_faces=3)
    assert some.found == everyone.found and len(some.faces) == 3 and some.dropped == everyone.found - 3
    assert [f.index for f in some.faces] == [1, 2, 3]
    areas = [f.box[2] * f.box[3] for f in everyone.faces]
    assert areas == sorted(areas, reverse=True)
    assert app.summary(some).startswith(f"{everyone.found} faces (3 largest shown): face 1 ")
    assert app.annotate(some).shape == (749, 960, 3)


def test_a_tiny_image_is_one_face_crop(recognizer, astronaut):
    gray = cv2.resize(cv2.cvtColor(astronaut[25:215, 145:305], cv2.COLOR_RGB2GRAY), (48, 48))
    analysis = app.analyse(app.decode_image(encode(gray, "PNG"), "fer.png"), recognizer)
    assert analysis.whole and analysis.found == 1 and analysis.faces[0].box == (0, 0, 48, 48)
    np.testing.assert_array_equal(analysis.faces[0].crop, gray)
    assert app.annotate(analysis).shape == (640, 640, 3)


def test_annotate_draws_boxes_at_display_size(recognizer):
    analysis = app.analyse(app.sample_photo(), recognizer)
    picture = app.annotate(analysis)
    assert picture.shape == (640, 640, 3) and picture.dtype == np.uint8
    plain = cv2.resize(analysis.photo.rgb, (640, 640))
    assert np.abs(picture.astype(int) - plain).sum(axis=2).astype(bool).mean() > 0.01  # box, label, bars


# ---------------------------------------------------------------------------------------------
# Explanations


def test_the_model_accuracy_comes_from_the_model_card(tmp_path):
    onnx_file = tmp_path / "fer_champion.onnx"
    onnx_file.write_bytes(b"onnx")
    assert app.model_accuracy(onnx_file) == "see its model card"
    (tmp_path / "fer_champion.md").write_text("- PrivateTest accuracy 68.63%, balanced accuracy 67.15%")
    assert app.model_accuracy(onnx_file) == "68.6% accurate on FER2013's PrivateTest"


def test_lime_without_the_lime_package_says_why(recognizer, monkeypatch):
    face = app.analyse(app.sample_photo(), recognizer).faces[0]
    monkeypatch.setitem(sys.modules, "lime.lime_image", None)  # as if lime were not installed
    missing = r'LIME needs lime, which is not installed: pip install "fer_utils\[app\]"'
    with pytest.raises(app.ExplainUnavailable, match=missing):
        app.explain_face(face.crop, "LIME", recognizer.classifier)
    with pytest.raises(ValueError, match="unknown method"):
        app.explain_face(face.crop, "SHAP", recognizer.classifier)


def test_lime_and_the_occlusion_map_on_the_onnx_model(recognizer):
    face = app.analyse(app.sample_photo(), recognizer).faces[0]
    label = int(np.argmax(face.proba))
    lime = app.explain_face(face.crop, "LIME", recognizer.classifier, label, num_samples=200)
    assert lime["image"].shape == (192, 192, 3) and lime["label"] == label
    assert lime["caption"].startswith(f"LIME, 200 samples: green regions raise the probability of '{face.label}'")
    occlusion = app.explain_face(face.crop, "Occlusion", recognizer.classifier, label)
    assert occlusion["image"].shape == (192, 192, 3) and occlusion["label"] == label
    assert occlusion["caption"].startswith(f"Occlusion, 121 grey 8x8 patches: green regions, when hidden, lower the "
                                           f"probability of '{face.label}' (by up to ")
    plain = cv2.resize(np.repeat(face.crop[..., None], 3, axis=2), (192, 192), interpolation=cv2.INTER_NEAREST)
    assert np.abs(occlusion["image"].astype(int) - plain).max() > 40, "the map is drawn over the face"


# ---------------------------------------------------------------------------------------------
# The page, driven by Streamlit's AppTest


def run_page(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def page():
    from streamlit.testing.v1 import AppTest

    return run_page(AppTest.from_file(str(APP), default_timeout=180))


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_first_open_shows_the_sample_result(page, recognizer):
    expected = app.summary(app.analyse(app.sample_photo(), recognizer))
    assert texts(page.subheader)[0] == app.SAMPLE_NAME
    assert any("No photo yet" in text for text in texts(page.info))
    assert f"**Result:** {expected}" in texts(page.markdown)
    label = expected.split()[4]
    assert any(text.startswith(f"**Face 1: {label}**") for text in texts(page.markdown))
    assert not page.error and not page.warning
    assert page.get("arrow_vega_lite_chart") or page.get("vega_lite_chart")  # the probability bar chart


def test_uploads_are_labelled_and_bad_files_get_messages(page, recognizer, astronaut, no_face):
    huge = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(huge, "PNG")
    page.file_uploader(key="uploads").set_value([
        ("astronaut.jpg", encode(astronaut), "image/jpeg"),
        ("notes.txt", b"not a picture", "text/plain"),
        ("coffee.png", encode(no_face, "PNG"), "image/png"),
        ("huge.png", huge.getvalue(), "image/png"),
    ])
    run_page(page)
    assert texts(page.subheader)[:4] == ["astronaut.jpg", "notes.txt", "coffee.png", "huge.png"]
    expected = app.summary(app.analyse(app.decode_image(encode(astronaut), "astronaut.jpg"), recognizer))
    assert f"**Result:** {expected}" in texts(page.markdown)
    assert not page.info  # no sample once something is uploaded
    errors = texts(page.error)
    assert errors[0].startswith("notes.txt: not an image") and errors[1].startswith("huge.png: the image is 10000x6000")
    assert len(errors) == 2
    assert any(w.startswith("coffee.png: no face found") for w in texts(page.warning))


def test_many_faces_and_a_face_limit(page, crowd):
    page.number_input(key="max_faces").set_value(2)
    page.file_uploader(key="uploads").set_value(("crowd.png", encode(crowd, "PNG"), "image/png"))
    run_page(page)
    assert any("faces found: the 2 largest are analysed" in text for text in texts(page.info))
    assert sum(text.startswith("**Face ") for text in texts(page.markdown)) == 2


def test_a_webcam_snapshot_is_analysed(page, astronaut):
    page.toggle(key="camera_on").set_value(True)
    run_page(page)
    page.camera_input(key="camera").upload("snapshot.jpg", encode(astronaut))
    run_page(page)
    assert texts(page.subheader)[0] == "webcam snapshot"
    assert any(text.startswith("**Result:** 1 face: face 1 ") for text in texts(page.markdown))


def test_explanations_on_the_page(page):
    page.toggle(key="explain_on").set_value(True)
    run_page(page)
    assert any(text.startswith("LIME, 500 samples") for text in texts(page.caption))
    page.radio(key="explain_method").set_value("Occlusion")
    run_page(page)
    assert any(text.startswith("Occlusion, 121 grey 8x8 patches: green regions") for text in texts(page.caption))
    assert not page.error
    assert "Occlusion" in [caption for image in page.image for caption in image.captions], "the map is shown"


def test_the_mtcnn_detector_option(page):
    page.selectbox(key="detector").set_value("mtcnn")
    run_page(page)
    assert not page.error, texts(page.error)
    markdown = texts(page.markdown)
    assert any(text.startswith("**Result:** 1 face: face 1 ") for text in markdown), markdown


def test_a_missing_model_is_a_message(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(app.MODEL_ENV_VAR, str(tmp_path / "nothing.onnx"))
    at = run_page(AppTest.from_file(str(APP), default_timeout=120))
    assert texts(at.error)[0].startswith(f"The model cannot be loaded: no model at {tmp_path / 'nothing.onnx'}")
    assert not at.subheader


# ---------------------------------------------------------------------------------------------
# The live webcam


def test_the_live_feed_labels_each_frame_and_measures_the_frame_rate(recognizer):
    import av

    from fer_utils import detection, samples

    feed = app.LiveFeed(recognizer.video_recognizer())
    assert feed.status() == "Live: waiting for the first frame from the camera..."
    clip = samples.make_test_clip(8, no_face_frames=2)
    assert app.LiveFeed(recognizer.video_recognizer()).process(clip[0]).shape == (480, 640, 3)
    for frame in clip:
        shown = feed(av.VideoFrame.from_ndarray(frame, format="bgr24")).to_ndarray(format="bgr24")
        assert shown.shape == frame.shape and not np.array_equal(shown, frame)  # labels and the frame rate drawn
    expected = recognizer.predict(clip[-1], bgr=True)[0]  # the photos' answer on the last frame
    status = feed.status()
    assert status.startswith(f"Live: face 1 {feed.faces[0].label} (") and " FPS | 8 frames" in status
    assert detection.iou(feed.faces[0].box, expected.box) > 0.5 and feed.faces[0].label == expected.label


@pytest.mark.slow
def test_the_live_webcam_survives_tensorflow_in_the_same_process():
    """The app's server loads TensorFlow for the MTCNN detector; the libsrtp that aiortc loads
    segfaults when first imported after it, so the app imports streamlit-webrtc first. In a fresh
    interpreter, as the server does: the app, then TensorFlow, then an SRTP round trip."""
    script = """
import os
from fer_utils import app
from fer_utils.config import import_keras
import_keras()
import pylibsrtp
key = os.urandom(30)
send = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
receive = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
packet = bytes([0x80, 8, 0, 1, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]) + b"frame" * 20
print(receive.unprotect(send.protect(packet)) == packet)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), (done.returncode, done.stderr[-2000:])


def test_webrtc_addresses_are_only_those_a_datagram_reaches(monkeypatch):
    """An address that is listed but carries nothing (not this machine's, or filtered) is left out,
    so the page says the live webcam cannot start instead of waiting for a camera that never connects."""
    monkeypatch.setattr("aioice.ice.get_host_addresses", lambda **_: ["127.0.0.1", "203.0.113.7", "::1"])
    assert app._udp_reaches_itself("127.0.0.1") and not app._udp_reaches_itself("203.0.113.7")
    assert app.webrtc_addresses() == ["127.0.0.1"] + (["::1"] if app._udp_reaches_itself("::1") else [])


def test_the_live_mode_on_the_page(page, monkeypatch):
    """The page's live section, with streamlit-webrtc's component replaced by a stand-in (it needs
    a browser: the Chromium test below runs the real one)."""
    import types

    import streamlit_webrtc

    calls = []

    def fake_streamer(**options):
        calls.append(options)
        return types.SimpleNamespace(state=types.SimpleNamespace(playing=len(calls) > 1))

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer)
    # one address that a datagram always reaches, whatever this machine's network (loopback, which the
    # real aioice leaves out): the page goes on to the stream
    monkeypatch.setattr("aioice.ice.get_host_addresses", lambda **_: ["127.0.0.1"])
    page.toggle(key="live_on").set_value(True)
    run_page(page)
    assert not page.error and not page.subheader, "photos are not analysed in live mode"
    assert any(text.startswith("Each frame goes through the same recognizer as the photos (haar)")
               for text in texts(page.caption))
    assert any(text.startswith("Starting the camera") for text in texts(page.info))
    assert calls[0]["rtc_configuration"] == {"iceServers": []}, "no STUN server: it works offline"
    assert calls[0]["media_stream_constraints"] == {"video": True, "audio": False}
    assert type(calls[0]["video_frame_callback"]).__name__ == "LiveFeed"  # (the page runs app.py as __main__)
    run_page(page)  # now playing: the latest result is shown as text
    assert "**Live: waiting for the first frame from the camera...**" in texts(page.markdown)
    assert calls[1]["video_frame_callback"] is calls[0]["video_frame_callback"], "one feed per session"
    page.toggle(key="live_on").set_value(False)
    run_page(page)
    assert texts(page.subheader)[0] == app.SAMPLE_NAME and len(calls) == 2


def test_the_live_mode_says_why_it_cannot_connect_without_a_network(page, monkeypatch):
    """Where loopback is the only network (a sandbox), WebRTC cannot connect: the page says so
    instead of waiting for the camera forever, and never starts the component."""
    import streamlit_webrtc

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **_: pytest.fail("component started"))
    monkeypatch.setattr("aioice.ice.get_host_addresses", lambda **_: [])
    page.toggle(key="live_on").set_value(True)
    run_page(page)
    assert any("needs a network address other than loopback" in text for text in texts(page.error))


# ---------------------------------------------------------------------------------------------
# End to end: the running app in headless Chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, seconds: float, process: subprocess.Popen | None = None) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with status {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {seconds:.0f} s") from None
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page (``websockets``, a Streamlit dependency)."""

    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self.ws = connect(websocket_url, max_size=None, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.ws.close()


#: True once the script run has finished (no running-status widget) and the annotated photo and
#: the probability chart have been drawn.
RENDERED = """(() => {
  const images = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
  const charts = document.querySelectorAll(
    '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg');
  return !document.querySelector('[data-testid="stStatusWidget"]') && images.length > 0
    && images.every(i => i.complete && i.naturalWidth > 0) && charts.length > 0;
})()"""


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def running_app(tmp_path) -> Iterator[int]:
    """``streamlit run fer_utils/app.py`` on a free port, in a subprocess; yields the port."""
    port = free_port()
    with (tmp_path / "streamlit.log").open("w") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port",
             str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"],
            cwd=PROJECT_ROOT, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", 180, server)
            yield port
        finally:
            stop(server)


@contextlib.contextmanager
def chromium_page(tmp_path, *flags: str) -> Iterator[DevTools]:
    """Headless Chromium with a DevTools port (and extra command-line ``flags``); yields its page."""
    devtools_port = free_port()
    browser = subprocess.Popen(
        [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
         # no background connections: this machine's closed network refuses them, many at a time
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--remote-debugging-port={devtools_port}", "--window-size=1280,2000", *flags, "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        targets = json.loads(wait_for_http(f"http://127.0.0.1:{devtools_port}/json/list", 60, browser))
        page = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        try:
            yield page
        finally:
            page.close()
    finally:
        stop(browser)


def screenshot(page: DevTools) -> np.ndarray:
    """The page as a BGR image."""
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    return cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)


needs_chromium = pytest.mark.skipif(chromium_binary() is None,
                                    reason="no chromium on PATH (Debian's `chromium` package; .ci/run installs it)")
needs_network = pytest.mark.skipif(
    importlib.util.find_spec("aioice") is not None and not app.webrtc_addresses(),
    reason="WebRTC needs a network address other than loopback (aiortc and Chromium skip 127.0.0.1); "
           "this machine has only loopback")


@needs_chromium
@pytest.mark.slow
def test_the_running_app_renders_the_sample_result_in_chromium(tmp_path, recognizer):
    """``streamlit run fer_utils/app.py`` in a subprocess, opened in headless Chromium.

    Streamlit renders the page from messages on a websocket after the page has loaded, which
    Chromium's one-shot ``--dump-dom`` / ``--screenshot`` (with ``--virtual-time-budget``) do not
    wait for: they return the empty page skeleton. So Chromium runs with a DevTools port, and the
    test polls the rendered text until the result appears, then takes the screenshot.
    """
    pytest.importorskip("websockets.sync.client", reason="websockets (a Streamlit dependency) is needed")
    expected = app.summary(app.analyse(app.sample_photo(), recognizer))
    with running_app(tmp_path) as port, chromium_page(tmp_path) as page:
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        deadline, text, done = time.monotonic() + 300, "", False
        while time.monotonic() < deadline and not done:
            time.sleep(1)
            text = page.evaluate("document.body ? document.body.innerText : ''") or ""
            done = f"Result: {expected}" in text and "Why this label?" in text and page.evaluate(RENDERED)
        time.sleep(1)
        picture = screenshot(page)
        dom = page.evaluate("document.documentElement.outerHTML")
    cv2.imwrite(str(tmp_path / "app.png"), picture)
    (tmp_path / "app.html").write_text(dom)
    assert done, f"the page was not fully rendered after 300 s; its text:\n{text[:2000]}"
    assert "Facial expression recognition" in text and app.SAMPLE_NAME in text
    label = expected.split()[4]
    assert f"Face 1: {label}" in text and "Traceback" not in text
    assert picture is not None and picture.shape[1] == 1280 and picture.std() > 10


#: How long the live webcam may take from switching it on to a label on the page, in seconds
#: (measured: about 5 s on the 2-core machine, most of it the WebRTC connection).
LIVE_LABEL_SECONDS = 45
#: The video shown by streamlit-webrtc's component (in its iframe) as a PNG data URL, once playing.
LIVE_VIDEO_FRAME = """(() => {
  for (const frame of document.querySelectorAll('iframe')) {
    const doc = frame.contentDocument;
    const video = doc && doc.querySelector('video');
    if (!video || video.readyState < 2 || !video.videoWidth) continue;
    const canvas = doc.createElement('canvas');
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    return canvas.toDataURL('image/png');
  }
  return null;
})()"""


def switch_live_webcam_on(page: DevTools) -> None:
    """Wait for the page's Live webcam switch (up to 300 s) and click it, as a user does."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not page.evaluate(
            "Array.from(document.querySelectorAll('label')).some(l => l.innerText.includes('Live webcam'))"):
        time.sleep(0.5)
    x, y = page.evaluate("(() => { const r = document.querySelector('input[aria-label=\"Live webcam\"]')"
                         ".closest('label').getBoundingClientRect(); return [r.x + 12, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):  # a real click: the switch listens to pointer events
        page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


@needs_chromium
@needs_network
@pytest.mark.slow
def test_the_live_webcam_labels_the_face_in_chromium(tmp_path, recognizer):
    """The live webcam end to end: Chromium's fake camera plays a .y4m clip of the astronaut's
    face (``samples.make_test_clip``), streamlit-webrtc sends it to the app over WebRTC with no
    ICE server (localhost only), the app labels each frame, and the page shows the label and the
    frame rate within :data:`LIVE_LABEL_SECONDS`; the video coming back has the label drawn."""
    pytest.importorskip("streamlit_webrtc", reason="streamlit-webrtc (requirements.txt) is needed")
    from fer_utils import samples
    from fer_utils.recognizer import CLASS_COLORS

    clip = tmp_path / "astronaut.y4m"
    frames = samples.make_test_clip(30, no_face_frames=0, path=clip, fps=15)
    expected = recognizer.predict(frames[0], bgr=True)[0].label
    status = re.compile(r"Live: face 1 (\w+) \((\d+)%\) \| ([\d.]+) FPS \| (\d+) frames")
    with running_app(tmp_path) as port, chromium_page(
            tmp_path, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}", "--autoplay-policy=no-user-gesture-required") as page:
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        found, seconds, tries = None, 0.0, 0
        while found is None and tries < 2:  # a user whose camera does not start reloads and switches it on again
            if tries:
                print(f"\nlive webcam: no label {LIVE_LABEL_SECONDS} s after switching it on; reloading the page once")
                page.evaluate("window.beforeReload = true")
                page.call("Page.reload")
                while page.evaluate("window.beforeReload === true"):
                    time.sleep(0.2)
            tries += 1
            switch_live_webcam_on(page)
            start, text = time.monotonic(), ""
            while time.monotonic() < start + LIVE_LABEL_SECONDS and found is None:
                time.sleep(0.5)
                text = page.evaluate("document.body ? document.body.innerText : ''") or ""
                found = status.search(text)
            seconds = time.monotonic() - start
        time.sleep(2)  # a few more frames, for the frame rate and the picture
        text = page.evaluate("document.body.innerText") or ""
        shown = page.evaluate(LIVE_VIDEO_FRAME)
        cv2.imwrite(str(tmp_path / "live.png"), screenshot(page))
    server_log = (tmp_path / "streamlit.log").read_text(errors="replace").splitlines()[-40:]
    assert found, (f"no label on the page {LIVE_LABEL_SECONDS} s after switching the live webcam on, twice; "
                   f"video playing in the page: {shown is not None}; its text:\n{text}\n"
                   "the server's log, last lines:\n" + "\n".join(server_log))
    print(f"\nlive webcam: first label {seconds:.1f} s after switching it on; then: {status.search(text).group(0)}")
    label, _, fps, count = status.search(text).groups()
    assert label == expected and float(fps) > 1 and int(count) > 5 and "Traceback" not in text
    assert shown and shown.startswith("data:image/png;base64,"), "the annotated video plays in the page"
    video = cv2.imdecode(np.frombuffer(base64.b64decode(shown.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    cv2.imwrite(str(tmp_path / "live_video.png"), video)
    colour = np.array(CLASS_COLORS[label])
    box_pixels = (np.abs(video.astype(int) - colour).max(axis=2) < 40).mean()
    assert video.shape == (480, 640, 3) and box_pixels > 0.002, "the box and label are drawn in the label's colour"

"""The browser app: upload photos, take a webcam snapshot or run the live webcam, see every face's expression.

    make app                         (= streamlit run fer_utils/app.py, then open http://localhost:8501)

The page runs the project's own pipeline on each image through the Python API
(:class:`api.ExpressionRecognizer`, as the CLI does): :class:`detection.HaarDetector` (or
:class:`detection.MTCNNDetector`) finds the faces, :func:`recognizer.crop_face` cuts the 48x48
gray crops FER2013 is made of, and a released ONNX model (:func:`model_file.find_model`, run by
:class:`model_file.OnnxClassifier`) classifies them: the sidebar chooses between the released models
present (trained on FER2013's labels, seven classes, or on FER+'s votes, eight with contempt; the
default-model rule's choice first), and ``FER_APP_MODEL=path.onnx`` runs another. The class names
come from the model file.
Every face is boxed and labelled on the photo and gets a probability bar chart; one chosen face
can be explained with LIME or an occlusion map (:mod:`fer_utils.saliency`), both asked of the
ONNX model alone, so the app needs no TensorFlow (only its MTCNN detector loads it). Without any
input the page shows a sample photo (``skimage.data.astronaut()``).

The app is runtime code: it imports nothing of the lab (training, Keras models, notebooks). Its
optional dependencies come with the ``app`` extra (``pip install "fer_utils[app]"``: Streamlit,
streamlit-webrtc and aiortc, scikit-image for the sample photo, lime for LIME).

**Live webcam** (streamlit-webrtc over aiortc): the browser sends the camera's frames to the
app, which runs :meth:`api.ExpressionRecognizer.video_recognizer` on each (:class:`LiveFeed`)
and sends them back with boxes, labels, probability bars and the frame rate drawn; the page
also writes the latest result and frame rate as text. No STUN or TURN server is used (an empty
ICE server list), so it works offline, with the browser and the app on the same machine or
network (``localhost``, or https elsewhere: browsers give the camera to secure pages only).

Bad input never shows a traceback: a file that is not an image or is damaged, an image over
:data:`MAX_UPLOAD_MB` or :data:`MAX_PIXELS` or under ``media.MIN_FACE_SIDE`` pixels a side, an
image without faces or with more than the chosen number of faces each gets a message naming the
file (the same rules as the CLI's), and a model file that is not a FER probability model a
message naming the model. Large images are shrunk to
:data:`ANALYSIS_MAX_SIDE` pixels before detection.

The pure functions (:func:`decode_image`, :func:`sample_photo`, :func:`analyse`,
:func:`annotate`, :func:`summary`, :func:`explain_face`, ...) take and return numpy arrays and
dataclasses and do not need Streamlit; :func:`main` is the page.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # `streamlit run fer_utils/app.py` runs this file as a script:
    _package_dir = Path(__file__).resolve().parent  # import fer_utils as a package, and keep its
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _package_dir]  # modules
    if str(_package_dir.parent) not in sys.path:  # (config, data, models, ...) from shadowing
        sys.path.insert(0, str(_package_dir.parent))  # top-level names of other packages

try:  # the live webcam (optional, the `app` extra). First, before anything loads TensorFlow (MTCNN): the libsrtp
    import streamlit_webrtc  # that aiortc loads crashes the process (segfault) when first imported after TensorFlow.
except ImportError:  # (the page says so when the live webcam is switched on)
    streamlit_webrtc = None
import cv2
import numpy as np
import pandas as pd

from fer_utils import detection, model_file, samples, saliency
from fer_utils.api import ExpressionRecognizer, released_model
from fer_utils.config import CLASS_NAMES, IMAGE_SIZE
from fer_utils.detection import Face
from fer_utils.extras import MissingExtra, install_hint, require
from fer_utils.media import MAX_PIXELS, SourceError, decode_photo
from fer_utils.model_file import RELEASED_MODELS, ModelFileError, OnnxClassifier, find_model, read_model_card
from fer_utils.recognizer import WHOLE_FACE_MAX_SIDE, Recognizer, class_color, classifier_classes, draw_faces

st = require("streamlit", "app", "the browser app")  # the `app` extra: the page itself

MAX_UPLOAD_MB = 20  #: largest accepted file, in MB (the upload widget refuses larger ones itself)
ANALYSIS_MAX_SIDE = 1600  #: images are shrunk to at most this many pixels per side before detection
MAX_FACES = 10  #: faces analysed per image by default (the largest ones)
MAX_FILES = 10  #: images analysed per page run
MODEL_ENV_VAR = "FER_APP_MODEL"  #: names an ONNX model to use instead of the released ones
#: The released models (``model_file.RELEASED_MODELS``) as the sidebar names them.
MODEL_LABELS = {"fer2013": "FER2013 labels (7 classes)", "ferplus": "FER+ labels (8 classes, with contempt)"}
SAMPLE_NAME = "sample photo (skimage.data.astronaut)"
EXPLAIN_METHODS = ("LIME", "Occlusion")
#: How to get a model when there is none, as the page says it.
APP_MODEL_HINT = (f"export one with notebook 09 (`make 09`, which writes models/fer_champion.onnx), or set "
                  f"{MODEL_ENV_VAR} to an .onnx file exported by fer_utils.export.export_onnx")
#: No STUN/TURN servers: the live webcam works offline, between a browser and the app that reach each other.
RTC_CONFIGURATION = {"iceServers": []}


class InputError(ValueError):
    """An image the app cannot analyse; the message says which and why, fit for the page."""


class ExplainUnavailable(RuntimeError):
    """An explanation method cannot run here (e.g. LIME without the lime package); says why."""


@dataclass
class Photo:
    """One input image: its name, RGB pixels ``(H, W, 3)`` uint8 (after any shrinking), its size
    as given ``(width, height)``, and notes for the page (e.g. that it was shrunk)."""

    name: str
    rgb: np.ndarray
    original_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


@dataclass
class FaceResult:
    """One classified face: ``index`` (1 = largest), ``box`` ``(x, y, w, h)`` in ``Photo.rgb``
    pixels, the 48x48 gray ``crop`` the model saw, its probabilities ``(classes,)`` over the
    model's ``classes`` and label."""

    index: int
    box: tuple[int, int, int, int]
    crop: np.ndarray
    proba: np.ndarray
    score: float = 1.0
    classes: tuple[str, ...] = CLASS_NAMES

    @property
    def label(self) -> str:
        return self.classes[int(np.argmax(self.proba))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.proba))

    def as_dict(self) -> dict:
        return {"face": self.index, "box": [int(v) for v in self.box], "label": self.label,
                "probabilities": {c: round(float(p), 4) for c, p in zip(self.classes, self.proba)}}


@dataclass
class Analysis:
    """What :func:`analyse` found in a photo: the faces kept (largest first, at most
    ``max_faces``), how many were detected in all, whether the whole image was taken as one
    face, and the time it took (seconds: detection, cropping, classification)."""

    photo: Photo
    faces: list[FaceResult]
    found: int
    whole: bool
    seconds: float

    @property
    def dropped(self) -> int:
        """Faces detected but not analysed (beyond ``max_faces``)."""
        return self.found - len(self.faces)

    def as_dict(self) -> dict:
        width, height = self.photo.original_size
        return {"image": self.photo.name, "width": width, "height": height, "faces_found": self.found,
                "faces": [f.as_dict() for f in self.faces]}


# ---------------------------------------------------------------------------------------------
# Input


def decode_image(data: bytes, name: str = "image", max_bytes: int = MAX_UPLOAD_MB * 2**20,
                 max_pixels: int = MAX_PIXELS, max_side: int = ANALYSIS_MAX_SIDE) -> Photo:
    """An uploaded file's bytes as a :class:`Photo` (RGB uint8), or :class:`InputError` naming
    ``name`` and the reason: over ``max_bytes``, or any of :func:`media.decode_photo`'s
    (the CLI's) reasons: empty, not an image, damaged or truncated, over ``max_pixels``
    (checked from the header, before decoding), too small to hold a face.

    The EXIF orientation is applied (phone photos), any mode becomes RGB, and an image larger
    than ``max_side`` on either side is shrunk to it (noted in ``Photo.notes``).
    """
    if len(data) > max_bytes:
        raise InputError(f"{name}: the file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    try:
        rgb, (width, height), notes = decode_photo(data, name, max_pixels)
    except SourceError as exc:
        raise InputError(str(exc)) from None
    longest = max(rgb.shape[:2])
    if longest > max_side:
        scale = max_side / longest
        new = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        notes.append(f"shrunk from {rgb.shape[1]}x{rgb.shape[0]} to {new[0]}x{new[1]} pixels for analysis")
        rgb = cv2.resize(rgb, new, interpolation=cv2.INTER_AREA)
    return Photo(name, np.ascontiguousarray(rgb), (width, height), notes)


def sample_photo() -> Photo:
    """The sample shown before anything is uploaded: ``skimage.data.astronaut()`` (Eileen
    Collins, NASA, public domain; 512x512), one smiling frontal face (:func:`samples.astronaut`)."""
    rgb = samples.astronaut()
    return Photo(SAMPLE_NAME, rgb, (rgb.shape[1], rgb.shape[0]))


# ---------------------------------------------------------------------------------------------
# Analysis


def model_choices() -> list[str]:
    """The models the sidebar offers: ``$FER_APP_MODEL`` alone when set, else the released models
    present (:data:`model_file.RELEASED_MODELS` by name), the default one (:data:`model_file.DEFAULT_MODEL`)
    first; the default alone when none is present (:func:`find_app_model` then says how to get it)."""
    if os.environ.get(MODEL_ENV_VAR):
        return [os.environ[MODEL_ENV_VAR]]
    present = [name for name in RELEASED_MODELS if released_model(name).is_file()]
    default = model_file.DEFAULT_MODEL
    return sorted(present, key=lambda name: name != default) or [default]


def model_label(choice: str) -> str:
    """A choice of :func:`model_choices` in words, for the sidebar."""
    return MODEL_LABELS.get(choice, f"{Path(choice).name} (from ${MODEL_ENV_VAR})")


def model_path(choice: str | None = None) -> Path:
    """The ONNX model the app uses: ``$FER_APP_MODEL`` if set, else the released model ``choice``
    (default: the default one; the path, whether or not the file is there: :func:`find_app_model` checks)."""
    return Path(os.environ.get(MODEL_ENV_VAR) or released_model(choice))


def find_app_model(choice: str | None = None) -> Path:
    """:func:`model_path`, checked by :func:`model_file.find_model`: :class:`ModelFileError`
    naming the path and how to get a model when it is missing."""
    return find_model(os.environ.get(MODEL_ENV_VAR) or choice, hint=APP_MODEL_HINT)


def make_detector(name: str = "haar", min_face: float = 0.05):
    """A face detector for still photos (``detection.DETECTOR_SETTINGS``, as the CLI and the API
    use): ``haar`` (the Haar cascade on the photo shrunk to 800 pixels wide; ``min_face`` is the
    smallest face as a share of the width) or ``mtcnn`` (slower, loads TensorFlow, finds turned
    faces and levels the eyes)."""
    return detection.make_detector(name, "still", **({"min_face": min_face} if name == "haar" else {}))


def make_recognizer(classifier=None, detector="haar", margin: float = 0.1) -> ExpressionRecognizer:
    """The :class:`api.ExpressionRecognizer` the page uses. ``classifier`` defaults to an
    :class:`model_file.OnnxClassifier` of :func:`find_app_model` (:class:`ModelFileError` if it is
    missing or not a FER model); ``detector``: a name (see :func:`make_detector`) or a detector."""
    if classifier is None:
        classifier = OnnxClassifier(find_app_model())
    detector = make_detector(detector) if isinstance(detector, str) else detector
    return ExpressionRecognizer(classifier, detector, margin=margin)


def analyse(photo: Photo, recognizer: ExpressionRecognizer, max_faces: int = MAX_FACES) -> Analysis:
    """Detect, crop and classify every face of ``photo`` with ``recognizer``
    (:meth:`api.ExpressionRecognizer.predict`, a fresh detection: nothing is tracked from an
    earlier photo). The ``max_faces`` largest faces are kept (``Analysis.found`` says how many
    there were). An image at most :data:`WHOLE_FACE_MAX_SIDE` pixels on each side is taken as
    one face crop."""
    start = time.perf_counter()
    detected = recognizer.predict(photo.rgb)  # largest first
    faces = [FaceResult(i, tuple(int(v) for v in face.box), face.crop, np.asarray(face.proba, dtype=np.float32),
                        float(face.score), face.classes) for i, face in enumerate(detected[:max(0, int(max_faces))], start=1)]
    whole = max(photo.rgb.shape[:2]) <= WHOLE_FACE_MAX_SIDE
    return Analysis(photo, faces, len(detected), whole, time.perf_counter() - start)


def model_accuracy(path: str | os.PathLike) -> str:
    """What the model card beside the ONNX file (``<name>.md``, :func:`model_file.read_model_card`)
    says of its PrivateTest accuracy and labels, e.g. ``64.2% accurate on FER2013's PrivateTest`` or
    ``85.1% accurate on PrivateTest against FER+ majority labels``; ``see its model card`` without one."""
    card = read_model_card(path)
    accuracy = card.private_test_accuracy if card else None
    if accuracy is None:
        return "see its model card"
    labels = card.labels
    where = "FER2013's PrivateTest" if labels == "FER2013" else f"PrivateTest against {labels} labels"
    return f"{100 * accuracy:.1f}% accurate on {where}"


def summary(analysis: Analysis) -> str:
    """One line for the page, e.g. ``1 face: face 1 happy (92%)`` or ``no face found``."""
    if not analysis.faces:
        return "no face found"
    found = f"{analysis.found} face{'s' * (analysis.found != 1)}"
    if analysis.dropped:
        found += f" ({len(analysis.faces)} largest shown)"
    parts = [f"face {f.index} {f.label} ({100 * f.confidence:.0f}%)" for f in analysis.faces]
    return f"{found}: " + ", ".join(parts)


def _display_scale(height: int, width: int, max_side: int, min_side: int) -> float:
    longest = max(height, width)
    if longest > max_side:
        return max_side / longest
    if longest < min_side:
        return min_side / longest
    return 1.0


def annotate(analysis: Analysis, max_side: int = 960, min_side: int = 640) -> np.ndarray:
    """The photo with each face boxed, numbered and labelled (``recognizer.draw_faces``; with
    probability bars when there are at most 3 faces), resized so its longest side lies between
    ``min_side`` and ``max_side`` (so the labels stay legible): RGB uint8 ``(H, W, 3)``."""
    rgb = analysis.photo.rgb
    scale = _display_scale(*rgb.shape[:2], max_side, min_side)
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else (cv2.INTER_NEAREST if analysis.whole else cv2.INTER_LINEAR)
    frame = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size, interpolation=interpolation)
    faces = [Face(tuple(round(v * scale) for v in f.box), f.score, proba=f.proba, classes=f.classes)
             for f in analysis.faces]
    draw_faces(frame, faces, bars=len(faces) <= 3)
    for face, result in zip(faces, analysis.faces):  # the face number, inside the box's lower left corner
        x, y, _, h = face.box
        text = f"#{result.index}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
        bottom = min(y + h, frame.shape[0]) - 4
        colour = class_color(result.label)
        cv2.rectangle(frame, (x + 2, bottom - th - 6), (x + tw + 8, bottom), colour, -1)
        cv2.putText(frame, text, (x + 5, bottom - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2, cv2.LINE_AA)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def probability_table(face: FaceResult):
    """The face's probabilities as a DataFrame (index: expression, column ``probability``), in the
    model's class order: what the bar chart shows."""
    return pd.DataFrame({"expression": list(face.classes), "probability": np.asarray(face.proba, dtype=float)})


# ---------------------------------------------------------------------------------------------
# Explanations


def _overlay(crop: np.ndarray, heat: np.ndarray, size: int = 192) -> np.ndarray:
    """A gray face ``(48, 48)`` with a signed heat map blended over it, enlarged to ``size``: RGB
    uint8; green for positive values (they speak for the class), red for negative ones, each
    scaled by the map's largest magnitude."""
    gray = np.repeat(np.asarray(crop, np.float32)[..., None] / 255.0, 3, axis=2)
    heat = np.asarray(heat, np.float32)
    h = heat / max(float(np.abs(heat).max()), 1e-9)
    colour = np.zeros((*h.shape, 3), np.float32)
    colour[..., 1] = np.clip(h, 0, 1)  # green: speaks for the class
    colour[..., 0] = np.clip(-h, 0, 1)  # red: speaks against it
    alpha = 0.6 * np.abs(h)[..., None]
    blended = np.clip((1 - alpha) * gray + alpha * colour, 0, 1)
    return cv2.resize((255 * blended).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def explain_face(crop: np.ndarray, method: str, classifier, label: int | None = None, num_samples: int = 500,
                 seed: int = 0) -> dict:
    """Explain one 48x48 face crop for ``classifier`` (any function faces -> probabilities, e.g.
    the ONNX model): ``method`` ``LIME`` (:func:`saliency.lime_explain`, ``num_samples`` perturbed
    faces) or ``Occlusion`` (:func:`saliency.occlusion_map`: grey patches, the drop of the class's
    probability). ``label``: the class to explain (default: the predicted one).

    Returns ``{"image": RGB overlay (192, 192, 3), "caption": str, "label": int}``. Raises
    :class:`ExplainUnavailable` saying why when the method cannot run here (LIME without lime or
    scikit-image installed: the message names the extra to install).
    """
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {EXPLAIN_METHODS}")
    crop = np.asarray(crop, dtype=np.uint8)
    if method == "Occlusion":
        result = saliency.occlusion_map(classifier, crop, label)
        name, peak = classifier_classes(classifier)[result.label], float(result.heatmap.max())
        caption = (f"Occlusion, {result.patches} grey {result.patch}x{result.patch} patches: green regions, when "
                   f"hidden, lower the probability of '{name}' (by up to {100 * peak:.0f} points), red ones raise it"
                   + (" (none: hiding any patch changes nothing)." if not np.abs(result.heatmap).max() else "."))
        return {"image": _overlay(crop, result.heatmap), "caption": caption, "label": result.label}
    try:
        result = saliency.lime_explain(classifier, crop, label, num_samples=num_samples, seed=seed)
    except MissingExtra as exc:
        raise ExplainUnavailable(f"{exc}. The occlusion map needs nothing more.") from None
    caption = (f"LIME, {num_samples} samples: green regions raise the probability of '{classifier_classes(classifier)[result.label]}', "
               f"red ones lower it (local linear fit R² {result.score:.2f}).")
    return {"image": _overlay(crop, result.heatmap), "caption": caption, "label": result.label}


# ---------------------------------------------------------------------------------------------
# Live webcam


class LiveFeed:
    """The live webcam's frame handler: ``recognizer`` (a video :class:`recognizer.Recognizer`,
    with its own detector and tracking) on each frame, which comes back annotated (boxes,
    labels, probability bars, frame rate). Called in streamlit-webrtc's worker thread; keeps the
    latest faces and frame rate for the page (:meth:`status`), behind a lock."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        self._lock = threading.Lock()
        self.frames, self.faces, self.frame_rate = 0, [], float("nan")

    def process(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR frame in, the annotated BGR frame out."""
        result = self.recognizer.process(bgr)
        with self._lock:
            self.frames, self.faces, self.frame_rate = self.frames + 1, result.faces, self.recognizer.frame_rate
        return result.annotated

    def __call__(self, frame):
        """streamlit-webrtc's ``video_frame_callback``: ``av.VideoFrame`` in and out."""
        import av  # PyAV comes with streamlit-webrtc (optional, the live webcam's): imported where a frame arrives

        return av.VideoFrame.from_ndarray(self.process(frame.to_ndarray(format="bgr24")), format="bgr24")

    def status(self) -> str:
        """One line for the page, e.g. ``Live: face 1 happy (91%) | 14.8 FPS | 352 frames``."""
        with self._lock:
            frames, faces, rate = self.frames, list(self.faces), self.frame_rate
        if not frames:
            return "Live: waiting for the first frame from the camera..."
        found = ", ".join(f"face {i} {f.label} ({100 * float(np.max(f.proba)):.0f}%)" for i, f in enumerate(faces, 1))
        fps = "" if np.isnan(rate) else f" | {rate:.1f} FPS"
        return f"Live: {found or 'no face'}{fps} | {frames} frames"


def webrtc_addresses() -> list[str]:
    """The local addresses WebRTC can connect over: not loopback (aiortc's ICE skips it, as
    browsers do), and only those a UDP datagram sent to itself reaches (an interface that is down
    or filtered keeps its address but carries nothing). Empty in a sandbox with no such address,
    where the live webcam cannot connect."""
    from aioice.ice import get_host_addresses  # aioice comes with aiortc (optional, the live webcam's)

    return [address for address in get_host_addresses(use_ipv4=True, use_ipv6=True) if _udp_reaches_itself(address)]


def _udp_reaches_itself(address: str, timeout: float = 0.5) -> bool:
    """Whether a UDP datagram sent from ``address`` to ``address`` arrives (ICE's connectivity check, in small)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as receiver, socket.socket(family, socket.SOCK_DGRAM) as sender:
            receiver.bind((address, 0))
            receiver.settimeout(timeout)
            sender.sendto(b"fer-webrtc-probe", receiver.getsockname()[:2])
            return receiver.recv(64) == b"fer-webrtc-probe"
    except OSError:  # no route, the address cannot be bound, or nothing arrived in time
        return False


@st.fragment(run_every=1.0)
def _live_status(feed: LiveFeed, playing: bool) -> None:
    """The live result as text, refreshed every second from the feed itself: it appears as soon
    as frames arrive, even if the component's "playing" state reaches the page later."""
    if playing or feed.frames:
        st.markdown(f"**{feed.status()}**")
    else:
        st.info("Starting the camera: allow it when the browser asks (it works on localhost or over https).")


def _live(classifier, detector: str, model_key: str) -> None:
    """The live webcam section: the stream, annotated by a :class:`LiveFeed` made once per
    session, model and detector, and its latest result as text (updated every second)."""
    if streamlit_webrtc is None:
        st.error("The live webcam needs streamlit-webrtc and aiortc, which are not installed here: "
                 f"`{install_hint('app')}` installs them.")
        return
    if not webrtc_addresses():
        st.error("The live webcam cannot start here: WebRTC needs a network address other than loopback "
                 "(127.0.0.1), and this machine has none. Photos and webcam snapshots still work.")
        return
    if st.session_state.get("live_feed_key") != (model_key, detector):
        video = ExpressionRecognizer(classifier, detector).video_recognizer()
        st.session_state.live_feed, st.session_state.live_feed_key = LiveFeed(video), (model_key, detector)
    feed = st.session_state.live_feed
    st.caption(f"Each frame goes through the same recognizer as the photos ({feed.recognizer.description}); "
               "boxes, labels and the frame rate are drawn on the video. Switch off **Live webcam** to stop.")
    try:
        context = streamlit_webrtc.webrtc_streamer(
            key="live", mode=streamlit_webrtc.WebRtcMode.SENDRECV, rtc_configuration=RTC_CONFIGURATION,
            media_stream_constraints={"video": True, "audio": False}, video_frame_callback=feed,
            desired_playing_state=True)
    except Exception as exc:  # noqa: BLE001  (the page shows a message, never a traceback)
        st.error(f"The live webcam cannot start here ({type(exc).__name__}: {exc}).")
        return
    _live_status(feed, context.state.playing)


# ---------------------------------------------------------------------------------------------
# The page

_LOCK = threading.Lock()  # the shared detector and classifier serve one page run at a time


@st.cache_resource(show_spinner="Loading the model...")
def _classifier(path: str, mtime: float) -> OnnxClassifier:
    classifier = OnnxClassifier(path)
    classifier.predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8))  # ONNX Runtime's first run is slow
    return classifier


@st.cache_resource(show_spinner="Loading the face detector...")
def _detector(name: str, min_face: float):
    return make_detector(name, min_face)


@st.cache_data(show_spinner="Analysing...", max_entries=32)
def _analysis(data: bytes | None, name: str, model: str, detector: str, min_face: float, max_faces: int,
              _onnx, _face_detector) -> Analysis:
    """:func:`decode_image` (or :func:`sample_photo` for ``data=None``) and :func:`analyse`, cached
    by content and settings, so that reruns (any widget change) do not analyse the photos again."""
    photo = sample_photo() if data is None else decode_image(data, name)
    with _LOCK:
        return analyse(photo, make_recognizer(_onnx, _face_detector), max_faces)


@st.cache_data(show_spinner=False, max_entries=64)
def _explanation(crop: np.ndarray, method: str, label: int, model: str, _onnx) -> dict:
    """:func:`explain_face`, cached by face, method, class and model file."""
    with _LOCK:
        return explain_face(crop, method, _onnx, label)


def _model(choice: str) -> OnnxClassifier:
    path = find_app_model(choice)
    return _classifier(str(path), path.stat().st_mtime)


def _inputs() -> tuple[list[tuple[str, bytes | None]], list[str]]:
    """The images to analyse as (name, bytes; None for the sample) and warnings."""
    uploads = st.file_uploader(
        "Upload one or more photos", accept_multiple_files=True, key="uploads", max_upload_size=MAX_UPLOAD_MB,
        help=f"JPEG, PNG, WebP, BMP, TIFF or GIF, up to {MAX_UPLOAD_MB} MB and {MAX_PIXELS // 1_000_000} megapixels "
             f"each; the first {MAX_FILES} are analysed.") or []
    shot = None
    if st.toggle("Take a webcam snapshot", key="camera_on",
                 help="The browser asks for the camera; it works on localhost or https."):
        shot = st.camera_input("Webcam snapshot", key="camera")
    warnings = []
    if len(uploads) > MAX_FILES:
        warnings.append(f"{len(uploads)} files uploaded: only the first {MAX_FILES} are analysed.")
    items = [(u.name, u.getvalue()) for u in uploads[:MAX_FILES]]
    if shot is not None:
        items.append(("webcam snapshot", shot.getvalue()))
    if not items:
        items = [(SAMPLE_NAME, None)]
    return items, warnings


def _show_analysis(analysis: Analysis) -> None:
    photo = analysis.photo
    st.subheader(photo.name)
    for note in photo.notes:
        st.caption(f"Note: {note}.")
    if analysis.whole:
        st.caption(f"The image is at most {WHOLE_FACE_MAX_SIDE} pixels on each side: taken as one face crop, "
                   "without face detection.")
    left, right = st.columns([3, 2])
    left.image(annotate(analysis), width="stretch",
               caption=f"{photo.original_size[0]}x{photo.original_size[1]} pixels; analysed in "
                       f"{1000 * analysis.seconds:.0f} ms")
    if not analysis.faces:
        right.warning(f"{photo.name}: no face found. The detector looks for frontal, upright faces at least "
                      "a few percent of the image wide: try a closer, frontal, well-lit photo, a smaller "
                      "'smallest face' setting, or the MTCNN detector (sidebar).")
        return
    right.markdown(f"**Result:** {summary(analysis)}")
    if analysis.dropped:
        right.info(f"{analysis.found} faces found: the {len(analysis.faces)} largest are analysed "
                   "(raise 'faces per photo' in the sidebar to see more).")
    for face in analysis.faces:
        right.markdown(f"**Face {face.index}: {face.label}** ({100 * face.confidence:.0f}%)")
        right.bar_chart(probability_table(face), x="expression", y="probability", horizontal=True, sort=False,
                        height=260, x_label="", y_label="probability")


def main() -> None:
    """The Streamlit page."""
    st.set_page_config(page_title="Facial expressions (FER2013)", page_icon=":slightly_smiling_face:", layout="wide")
    st.title("Facial expression recognition")
    with st.sidebar:
        st.header("Settings")
        choice = st.selectbox("Model", model_choices(), key="model", format_func=model_label,
                              help="The released models: trained on FER2013's labels (one annotator per face) or on "
                                   "FER+'s (ten annotators per face, and an eighth class, contempt).")
        detector = st.selectbox("Face detector", ("haar", "mtcnn"), key="detector", format_func={
            "haar": "Haar cascade (fast, frontal faces)", "mtcnn": "MTCNN (slower, turned faces, levels the eyes)"}.get)
        min_face = st.slider("Smallest face (% of the image width)", 2, 30, 5, key="min_face",
                             disabled=detector != "haar") / 100
        max_faces = int(st.number_input("Faces per photo", 1, 50, MAX_FACES, key="max_faces",
                                        help="the largest ones are analysed"))
        path = model_path(choice)
        st.caption(f"Model: {path.name}" + (f" (from ${MODEL_ENV_VAR})" if os.environ.get(MODEL_ENV_VAR) else
                                            f"; model card: models/{path.with_suffix('.md').name}"))

    try:
        classifier = _model(choice)
    except Exception as exc:  # noqa: BLE001  (ModelFileError, or whatever ONNX Runtime raises)
        st.error(f"The model cannot be loaded: {exc}" if isinstance(exc, ModelFileError) else
                 f"The model cannot be loaded: {path} ({type(exc).__name__}: {exc})")
        st.stop()
    st.markdown(
        f"Upload photos, take a webcam snapshot or run the live webcam: every face is found, boxed and labelled with "
        f"one of the model's {len(classifier.class_names)} expressions ({', '.join(classifier.class_names)}). The model "
        f"is this project's released ONNX model ({model_accuracy(path)}; people agree with FER2013's labels about 65% "
        "of the time). An expression is what a face shows, not what a person feels. Images stay in this app's memory only.")
    try:
        face_detector = _detector(detector, min_face)
    except Exception as exc:  # noqa: BLE001  (MTCNN/TensorFlow set-up failures)
        st.error(f"The {detector} face detector cannot be started here ({type(exc).__name__}: {exc}); "
                 "choose the Haar cascade.")
        st.stop()

    model_key = f"{path}@{path.stat().st_mtime}"  # a new model file: new results
    if st.toggle("Live webcam", key="live_on", help="Labels every frame of your webcam as it runs (the browser asks "
                 "for the camera). Switch it off for photos and snapshots."):
        _live(classifier, detector, model_key)
        return
    items, warnings = _inputs()
    for warning in warnings:
        st.warning(warning)
    if items[0][1] is None:
        st.info("No photo yet: here is a sample photo (NASA's portrait of Eileen Collins, from scikit-image). "
                "Upload your own above.")

    analyses = []
    for name, data in items:
        try:
            analysis = _analysis(data, name, model_key, detector, min_face, max_faces, classifier, face_detector)
        except InputError as exc:
            st.subheader(name)
            st.error(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001  (the page shows a message, never a traceback)
            st.subheader(name)
            st.error(f"{name}: could not be analysed ({type(exc).__name__}: {exc})")
            continue
        analyses.append(analysis)
        _show_analysis(analysis)

    faces = [(a, f) for a in analyses for f in a.faces]
    if analyses:
        st.download_button("Download the results (JSON)", json.dumps([a.as_dict() for a in analyses], indent=2),
                           file_name="expressions.json", mime="application/json")
    if not faces:
        return
    st.divider()
    st.subheader("Why this label? Explain one face")
    choice = st.selectbox("Face", range(len(faces)), key="explain_face", format_func=lambda i: (
        f"{faces[i][0].photo.name}, face {faces[i][1].index} ({faces[i][1].label})"))
    method = st.radio("Method", EXPLAIN_METHODS, horizontal=True, key="explain_method", help=(
        "LIME hides groups of pixels and fits which ones move the probability; Occlusion greys out one square "
        "patch at a time and measures how much the label's probability drops. Both ask the ONNX model only."))
    if not st.toggle("Show the explanation", key="explain_on",
                     help="LIME takes about 2 s per face, occlusion a fraction of a second."):
        return
    analysis, face = faces[choice]
    try:
        with st.spinner(f"{method} on face {face.index}..."):
            result = _explanation(face.crop, method, int(np.argmax(face.proba)), model_key, classifier)
    except ExplainUnavailable as exc:
        st.info(str(exc))
        return
    except Exception as exc:  # noqa: BLE001
        st.error(f"The explanation failed ({type(exc).__name__}: {exc})")
        return
    one, two, _ = st.columns([1, 1, 2])
    one.image(cv2.resize(face.crop, (192, 192), interpolation=cv2.INTER_NEAREST),
              caption=f"What the model sees: 48x48 gray, {face.label} {100 * face.confidence:.0f}%")
    two.image(result["image"], caption=method)
    st.caption(result["caption"])


if __name__ == "__main__":
    main()

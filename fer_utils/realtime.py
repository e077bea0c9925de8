"""The real-time recognizer: frame -> face detection -> aligned square crop -> 48x48 gray face
-> ONNX classifier -> label and probability bars drawn on the frame, with FPS and per-stage
latency statistics.

Frames are OpenCV BGR uint8 ``(H, W, 3)`` arrays throughout; boxes are ``(x, y, w, h)`` in
frame pixels. Detectors: :class:`HaarDetector` (OpenCV Haar cascade, fast) and
:class:`MTCNNDetector` (accurate, with eye landmarks for alignment, slow: run it on a
downscaled frame and every few frames). :class:`FaceTracker` detects every N frames and follows
the faces in between (template matching, OpenCV's MIL tracker, or holding the last boxes).

Sources (:func:`open_source`): a webcam index, a video file, a folder of images, one image, or
an in-memory list of frames. Sinks: an OpenCV window (where a display exists), an annotated
video file (mp4v, written atomically), frames kept in memory or updated inline in a notebook,
and any function called with each frame's faces (``run_pipeline(on_frame=...)``, what
``fer_utils.api`` builds its per-frame table with). Still images go through
:meth:`Recognizer.faces_in_image`, which the CLI, the browser app and ``fer_utils.api`` share.
Bad input raises :class:`SourceError` (or ``export.ModelFileError``) with a message naming
what is wrong; a frame without a face is drawn with a "no face" label.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import pandas as pd
from .progress import tqdm

from .config import CLASS_NAMES, IMAGE_SIZE, quiet_native_stderr

Box = tuple[int, int, int, int]  #: x, y, width, height in frame pixels
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
#: what :class:`VideoSink` writes: mp4v, MJPG, and uncompressed YUV 4:2:0 (.y4m, what Chromium's
#: ``--use-file-for-fake-video-capture`` plays as a fake camera)
VIDEO_SUFFIXES = (".mp4", ".avi", ".y4m")
FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".y4m": "I420"}
MAX_PIXELS = 50_000_000  #: largest image read, in pixels (checked from the header, before decoding)
MIN_FACE_SIDE = 24  #: smallest image taken as a face, in pixels per side (FER2013 faces are 48)
WHOLE_FACE_MAX_SIDE = 64  #: an image this small is taken as one face crop, without detection
STAGES = ("read", "detect", "crop", "classify", "draw", "output")  #: timed per frame (ms)
#: One BGR colour per class, in CLASS_NAMES order.
CLASS_COLORS = ((40, 40, 220), (40, 140, 40), (160, 60, 160), (40, 200, 240), (200, 120, 40), (0, 140, 255),
                (170, 170, 170))
NO_FACE = "no face"
#: Face detector settings by detector and use: still photos (the CLI's ``predict``, the app's
#: photos, ``ExpressionRecognizer.predict``) and video frames (``run``, the live webcam,
#: ``analyze_video``): a photo is searched at a higher resolution for smaller faces.
DETECTOR_SETTINGS = {
    ("haar", "still"): {"width": 800, "min_face": 0.05},
    ("haar", "video"): {"width": 240},
    ("mtcnn", "still"): {"width": 640},
    ("mtcnn", "video"): {"width": 320},
}


class SourceError(RuntimeError):
    """A frame source or sink cannot be used (no camera, unreadable video, ...); says which."""


@dataclass
class Face:
    """One face in a frame: its box, detector score, optional eye landmarks, and once
    classified its probabilities ``(7,)`` and the 48x48 gray ``crop`` the model saw.
    ``tracked`` is True when the box was followed from an earlier detection rather than
    detected in this frame.

    ``score`` is the face detector's confidence that the box holds a face, not anything about
    the expression: MTCNN's face probability (0-1; faces under 0.9 are dropped); for the Haar
    cascade, the number of raw detections merged into the box (a whole number, above 5 with the
    default settings, with no fixed maximum: higher is surer); 1 for an image taken whole as one
    face. Outputs (and :attr:`detector_score`) name it ``detector_score``.
    """

    box: Box
    score: float = 1.0
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  #: (left, right) eye centres
    tracked: bool = False
    proba: np.ndarray | None = None
    crop: np.ndarray | None = field(default=None, repr=False)  #: uint8 (48, 48), once classified

    @property
    def label(self) -> str:
        return CLASS_NAMES[int(np.argmax(self.proba))] if self.proba is not None else "?"

    @property
    def detector_score(self) -> float:
        """``score``, by the name the CLI's JSON and CSV and the API's tables give it."""
        return float(self.score)

    @property
    def probabilities(self) -> dict[str, float]:
        """The seven probabilities by class name, in ``CLASS_NAMES`` order (empty before classification)."""
        return {} if self.proba is None else {c: float(p) for c, p in zip(CLASS_NAMES, self.proba)}

    def as_dict(self) -> dict:
        """Plain data: box, detector score, label, probabilities by class."""
        out = {"box": [int(v) for v in self.box], "detector_score": round(self.detector_score, 4), "label": self.label}
        if self.proba is not None:
            out["probabilities"] = {c: round(p, 6) for c, p in self.probabilities.items()}
        return out


# ---------------------------------------------------------------------------------------------
# Detection


def _resize_to_width(image: np.ndarray, width: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk to at most ``width`` pixels wide, and the factor (small / original)."""
    if not width or image.shape[1] <= width:
        return image, 1.0
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise SourceError(f"a frame must be (H, W), (H, W, 3) or (H, W, 4) pixels, got shape {frame.shape}")


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on a grayscale frame shrunk to ``width`` pixels.

    ``min_face`` is the smallest face as a share of the (shrunk) frame width (at 240 pixels:
    faces from about 50 pixels wide in a 640x480 frame). A few ms per frame; frontal faces only;
    no landmarks.
    """

    name = "haar"

    def __init__(self, width: int | None = 240, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face: float = 0.08):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise SourceError(f"{path}: OpenCV could not load its Haar cascade")
        self.width, self.scale_factor, self.min_neighbors, self.min_face = width, scale_factor, min_neighbors, min_face

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in a BGR (or gray) frame, boxes in frame pixels, largest first."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small, scale = _resize_to_width(gray, self.width)  # (histogram equalisation: slower, fewer hits)
        side = max(12, int(self.min_face * small.shape[1]))
        boxes, neighbours = self.cascade.detectMultiScale2(small, scaleFactor=self.scale_factor,
                                                           minNeighbors=self.min_neighbors, minSize=(side, side))
        faces = [Face(tuple(int(round(v / scale)) for v in box), float(n)) for box, n in zip(boxes, neighbours)]
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


class MTCNNDetector:
    """MTCNN (the ``mtcnn`` package, TensorFlow) on an RGB frame shrunk to ``width`` pixels.

    Accurate and gives eye landmarks (used to level the eyes), but slow on a CPU (about
    0.2 s per 320-pixel frame on 2 cores): use it with ``FaceTracker(every=N)``. It finds
    faces from 20 pixels wide in the shrunk frame.
    """

    name = "mtcnn"

    def __init__(self, width: int | None = 320, min_confidence: float = 0.9):
        from .config import import_keras

        import_keras()  # TensorFlow first, quietly: mtcnn imports it
        from mtcnn import MTCNN

        with quiet_native_stderr():  # TensorFlow's native device-probing lines
            self.model = MTCNN(device="CPU:0")
        self.width, self.min_confidence = width, min_confidence

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in a BGR frame with their eye centres, boxes in frame pixels, largest first."""
        rgb = cv2.cvtColor(_to_bgr(frame), cv2.COLOR_BGR2RGB)
        small, scale = _resize_to_width(rgb, self.width)
        found = self.model.detect_faces(small)  # (mtcnn 1.0 finds nothing with min_face_size != 20)
        faces = []
        for item in found:
            if float(item["confidence"]) < self.min_confidence:
                continue
            box = tuple(int(round(v / scale)) for v in item["box"])
            points = item.get("keypoints") or {}
            eyes = None
            if "left_eye" in points and "right_eye" in points:
                eyes = tuple((float(points[k][0]) / scale, float(points[k][1]) / scale)
                             for k in ("left_eye", "right_eye"))
            faces.append(Face(box, float(item["confidence"]), eyes))
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def make_detector(name: str, use: str | None = None, **kwargs):
    """A detector by name: ``haar`` or ``mtcnn``. ``use``: ``still`` or ``video`` applies
    :data:`DETECTOR_SETTINGS`; keyword arguments go to its constructor and override them."""
    if name not in ("haar", "mtcnn"):
        raise ValueError(f"unknown detector {name!r}; choose 'haar' or 'mtcnn'")
    if use is not None and use not in ("still", "video"):
        raise ValueError(f"use={use!r}: choose 'still' or 'video'")
    settings = {**DETECTOR_SETTINGS.get((name, use), {}), **kwargs}
    return HaarDetector(**settings) if name == "haar" else MTCNNDetector(**settings)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0-1)."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w, h = min(ax2, bx2) - max(a[0], b[0]), min(ay2, by2) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _half_gray(frame: np.ndarray) -> np.ndarray:
    """A BGR frame as gray at half size (what template tracking matches on)."""
    return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)


class FaceTracker:
    """Runs ``detector`` every ``every`` frames and follows the faces in between.

    ``method``: ``template`` (normalised cross-correlation of each face's patch in a window
    around its last position, on a half-size gray frame: about 1 ms), ``mil`` (OpenCV's MIL
    tracker, slower, more robust to appearance change) or ``hold`` (keep the last boxes).
    A face whose match falls below ``min_match`` is dropped and the next frame is detected.
    ``smooth`` (0-1) blends a re-detected box with its previous position to reduce jitter.
    """

    def __init__(self, detector, every: int = 1, method: str = "template", smooth: float = 0.3,
                 min_match: float = 0.5):
        if method not in ("template", "mil", "hold"):
            raise ValueError(f"tracker method {method!r}: choose 'template', 'mil' or 'hold'")
        if method == "mil" and not hasattr(cv2, "TrackerMIL_create"):
            raise ValueError("this OpenCV build has no TrackerMIL; use method='template'")
        self.detector, self.every, self.method = detector, max(1, int(every)), method
        self.smooth, self.min_match = smooth, min_match
        self.faces: list[Face] = []
        self._state: list = []
        self._since_detection = 0
        self._force = True

    def reset(self) -> None:
        """Forget the faces: the next frame is detected."""
        self.faces, self._state, self._force = [], [], True

    def update(self, frame: np.ndarray) -> list[Face]:
        """The faces of the next frame (BGR), detected or tracked."""
        if self._force or self._since_detection >= self.every - 1 or not self.faces and self.every > 1:
            return self._detect(frame)
        self._since_detection += 1
        return self._track(frame)

    def _detect(self, frame):
        faces = self.detector.detect(frame)
        if self.smooth and self.faces:
            for face in faces:
                best = max(self.faces, key=lambda old: iou(old.box, face.box))
                if iou(best.box, face.box) > 0.3:
                    face.box = tuple(int(round(self.smooth * o + (1 - self.smooth) * n))
                                     for o, n in zip(best.box, face.box))
        self.faces, self._since_detection, self._force = faces, 0, False
        if self.every > 1 and self.method != "hold":
            self._start_tracking(frame)
        return faces

    def _start_tracking(self, frame):
        self._state = []
        if self.method == "template":
            small = _half_gray(frame)
            for face in self.faces:
                x, y, w, h = (max(0, v // 2) for v in face.box)
                self._state.append(small[y:y + h, x:x + w].copy())
        else:
            for face in self.faces:
                tracker = cv2.TrackerMIL_create()
                tracker.init(frame, tuple(int(v) for v in face.box))
                self._state.append(tracker)

    def _track(self, frame):
        if self.method == "hold":
            tracked = [Face(f.box, f.score, f.eyes, tracked=True) for f in self.faces]
        elif self.method == "mil":
            tracked = []
            for face, tracker in zip(self.faces, self._state):
                ok, box = tracker.update(frame)
                if ok:
                    tracked.append(Face(tuple(int(v) for v in box), face.score, None, tracked=True))
        else:
            tracked = self._track_template(frame)
        if len(tracked) < len(self.faces):
            self._force = True  # a face was lost: detect on the next frame
        if self.method == "hold":
            return tracked
        self.faces = tracked if self.method == "template" else self.faces
        return tracked

    def _track_template(self, frame):
        small = _half_gray(frame)
        kept, patches = [], []
        for face, patch in zip(self.faces, self._state):
            h, w = patch.shape
            if h < 4 or w < 4:
                continue
            x, y = face.box[0] // 2, face.box[1] // 2
            pad_x, pad_y = max(4, w // 2), max(4, h // 2)
            x0, y0 = max(0, x - pad_x), max(0, y - pad_y)
            window = small[y0:y + h + pad_y, x0:x + w + pad_x]
            if window.shape[0] < h or window.shape[1] < w:
                continue
            scores = cv2.matchTemplate(window, patch, cv2.TM_CCOEFF_NORMED)
            _, best, _, (dx, dy) = cv2.minMaxLoc(scores)
            if best < self.min_match:
                continue
            nx, ny = x0 + dx, y0 + dy
            # move the eyes with the box, keep the detector's box size
            shift = (2 * (nx - x), 2 * (ny - y))
            eyes = None if face.eyes is None else tuple((ex + shift[0], ey + shift[1]) for ex, ey in face.eyes)
            kept.append(Face((2 * nx, 2 * ny, face.box[2], face.box[3]), face.score, eyes, tracked=True))
            patches.append(patch)
        self._state = patches
        return kept


# ---------------------------------------------------------------------------------------------
# Cropping and drawing


def crop_face(gray: np.ndarray, box: Box, margin: float = 0.1, eyes=None, size: int = IMAGE_SIZE) -> np.ndarray:
    """The square face crop as FER2013 shows faces: uint8 ``(size, size)``.

    The square is centred on ``box``, its side ``max(w, h) * (1 + margin)``; with ``eyes``
    ((left, right) eye centres) the crop is rotated so the eyes are level. Parts outside the
    frame repeat the border pixels.
    """
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side = max(2, int(round(max(w, h) * (1 + margin))))
    angle = 0.0
    if eyes is not None:
        (lx, ly), (rx, ry) = eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (side / 2 - cx, side / 2 - cy)
    patch = cv2.warpAffine(gray, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


def _text(frame, text, org, scale=0.5, color=(255, 255, 255), thickness=1, background=(0, 0, 0)):
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = int(org[0]), int(org[1])
    if background is not None:
        cv2.rectangle(frame, (x - 2, y - th - 3), (x + tw + 2, y + base), background, -1)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def draw_faces(frame: np.ndarray, faces: list[Face], bars: bool = True, status: str | None = None) -> np.ndarray:
    """Draw each face's box, label and probability bars on ``frame`` (BGR, in place; returned).

    A frame without faces gets a "no face" label; ``status`` (e.g. FPS) is written at the bottom left.
    """
    height, width = frame.shape[:2]
    if not faces:
        _text(frame, NO_FACE, (10, 28), 0.8, (255, 255, 255), 2, (0, 0, 160))
    for face in faces:
        x, y, w, h = face.box
        if face.proba is None:
            cv2.rectangle(frame, (x, y), (x + w, y + h), (200, 200, 200), 2)
            continue
        k = int(np.argmax(face.proba))
        color = CLASS_COLORS[k]
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, 2)
        _text(frame, f"{CLASS_NAMES[k]} {100 * face.proba[k]:.0f}%", (x, max(16, y - 6)), 0.6, (0, 0, 0), 2, color)
        if bars:
            panel_w, row = 120, 13
            panel_h = row * len(CLASS_NAMES) + 2
            if x + w + 6 + panel_w <= width:  # right of the box, else below, else left
                px, py = x + w + 6, y
            elif y + h + 6 + panel_h <= height:
                px, py = max(0, min(x, width - panel_w)), y + h + 6
            else:
                px, py = max(0, x - panel_w - 6), y
            py = min(max(0, py), max(0, height - panel_h))
            overlay = frame[py:py + panel_h, px:px + panel_w]
            overlay[:] = (overlay * 0.4).astype(np.uint8)  # darken behind the bars
            for i, (name, p) in enumerate(zip(CLASS_NAMES, face.proba)):
                top = py + i * row + 2
                cv2.rectangle(frame, (px + 58, top), (px + 58 + int(58 * float(p)), top + row - 3), CLASS_COLORS[i], -1)
                cv2.putText(frame, name, (px + 2, top + row - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                            cv2.LINE_AA)
    if status:
        _text(frame, status, (8, height - 8), 0.45, (255, 255, 255), 1, (0, 0, 0))
    return frame


# ---------------------------------------------------------------------------------------------
# The recognizer


@dataclass
class FrameResult:
    """One processed frame: the annotated copy (BGR), its faces, and stage timings in ms."""

    annotated: np.ndarray
    faces: list[Face]
    timings: dict[str, float]


class Recognizer:
    """Frame in, annotated frame and classified faces out.

    ``classifier``: a function uint8 faces ``(N, 48, 48)`` -> probabilities ``(N, 7)`` (an
    ``export.OnnxClassifier``, or a Keras model's ``predict``). ``detector``: ``haar``,
    ``mtcnn`` or a detector object; ``detect_every``/``tracker``: see :class:`FaceTracker`.
    ``margin``: extra border around the detected box (share of its side); ``align``: level the
    eyes when the detector gives them.
    """

    def __init__(self, classifier: Callable[[np.ndarray], np.ndarray], detector="haar", detect_every: int = 1,
                 tracker: str = "template", margin: float = 0.1, align: bool = True, bars: bool = True,
                 show_fps: bool = True):
        if not 0 <= margin <= 1:
            raise ValueError(f"margin={margin}: the border around a face is a share of its side, 0-1")
        self.classifier = classifier
        self.detector = make_detector(detector) if isinstance(detector, str) else detector
        self.tracker = FaceTracker(self.detector, detect_every, tracker)
        self.margin, self.align, self.bars, self.show_fps = margin, align, bars, show_fps
        self._recent = deque(maxlen=30)  #: processing ms of the last frames
        self._arrivals = deque(maxlen=30)  #: perf_counter() at the start of the last frames

    @property
    def description(self) -> str:
        every = self.tracker.every
        tracking = f", detect every {every} ({self.tracker.method} tracking)" if every > 1 else ""
        return self.detector.name + tracking

    def reset(self) -> None:
        """Forget tracked faces (call between unrelated clips)."""
        self.tracker.reset()
        self._recent.clear()
        self._arrivals.clear()

    @property
    def frame_rate(self) -> float:
        """Frames processed per second over the last (up to 30) frames, wall clock: the rate a
        viewer sees, which a camera, a browser or the reading of a file may hold below what
        processing alone allows (NaN before two frames)."""
        if len(self._arrivals) < 2 or self._arrivals[-1] <= self._arrivals[0]:
            return float("nan")
        return (len(self._arrivals) - 1) / (self._arrivals[-1] - self._arrivals[0])

    def status(self) -> str | None:
        """The line drawn on annotated frames: frame rate, processing ms per frame, detector."""
        if not self._recent:
            return None
        rate = self.frame_rate
        rate_text = "" if math.isnan(rate) else f"{rate:.0f} FPS, "
        return f"{rate_text}{np.mean(self._recent):.0f} ms/frame | {self.description}"

    def process(self, frame: np.ndarray, annotate: bool = True) -> FrameResult:
        """Detect, crop, classify and (if ``annotate``) draw one BGR frame (the input is not modified)."""
        t0 = time.perf_counter()
        self._arrivals.append(t0)
        frame = _to_bgr(frame)
        faces = self.tracker.update(frame)
        t1 = time.perf_counter()
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        crops = np.stack([crop_face(gray, f.box, self.margin, f.eyes if self.align else None) for f in faces]) \
            if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        t2 = time.perf_counter()
        if faces:
            for face, crop, p in zip(faces, crops, np.asarray(self.classifier(crops))):
                face.crop, face.proba = crop, p
        t3 = time.perf_counter()
        annotated = frame.copy()
        if annotate:
            draw_faces(annotated, faces, self.bars, self.status() if self.show_fps else None)
        t4 = time.perf_counter()
        timings = {"detect": 1000 * (t1 - t0), "crop": 1000 * (t2 - t1), "classify": 1000 * (t3 - t2),
                   "draw": 1000 * (t4 - t3)}
        self._recent.append(sum(timings.values()))
        return FrameResult(annotated, faces, timings)

    def faces_in_image(self, image: np.ndarray, whole: bool | None = None) -> list[Face]:
        """The classified faces of one still image (BGR or gray), largest first, each with its
        crop: a fresh detection (nothing is tracked from an earlier image). What the CLI's
        ``predict``, the browser app and ``ExpressionRecognizer.predict`` all run.

        ``whole=True`` treats the whole image as one face (e.g. a FER2013 48x48 image); None
        does so for images at most :data:`WHOLE_FACE_MAX_SIDE` pixels on each side. An image
        under :data:`MIN_FACE_SIDE` pixels on a side raises :class:`SourceError`: too small to be a face.
        """
        image = _to_bgr(image)
        check_face_size(image.shape[1], image.shape[0])
        if whole is None:
            whole = max(image.shape[:2]) <= WHOLE_FACE_MAX_SIDE
        if not whole:
            self.tracker.reset()
            return self.process(image, annotate=False).faces
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        crop = cv2.resize(gray, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        return [Face((0, 0, w, h), proba=np.asarray(self.classifier(crop[None]))[0], crop=crop)]

    def predict_image(self, image: np.ndarray, whole: bool | None = None) -> list[dict]:
        """:meth:`faces_in_image` as plain dicts (box, detector_score, label, probabilities)."""
        return [f.as_dict() for f in self.faces_in_image(image, whole)]


# ---------------------------------------------------------------------------------------------
# Sources


class FrameSource:
    """Frames from a camera, a video file, images or memory: iterate for BGR frames.

    ``fps`` is the source's frame rate where known (else 15), ``length`` the frame count where
    known (else None), ``name`` says what it is. Use as a context manager (releases cameras).
    """

    def __init__(self, frames: Iterator[np.ndarray], name: str, fps: float = 15.0, length: int | None = None,
                 release: Callable[[], None] | None = None, live: bool = False):
        self._frames, self.name, self.fps, self.length, self._release = frames, name, fps, length, release
        self.live = live  #: a camera: no natural end, so stopping it by hand is how a run ends
        self.skipped: list[str] = []  #: "path: reason" of each image that could not be read

    def __iter__(self):
        return self._frames

    def close(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _quiet_opencv():
    """Lower OpenCV's own log level (camera probing prints warnings) and return the old one."""
    try:
        old = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        return old
    except AttributeError:
        return None




def _restore_opencv(level) -> None:
    if level is not None:
        cv2.utils.logging.setLogLevel(level)


def _capture_frames(capture: cv2.VideoCapture, first: np.ndarray) -> Iterator[np.ndarray]:
    yield first
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield frame


def _open_capture(target: int | str):
    """``cv2.VideoCapture(target)`` and its first frame, with OpenCV's and FFmpeg's native log
    lines silenced; the frame is None (and the capture released) when nothing could be read."""
    level = _quiet_opencv()
    try:
        with quiet_native_stderr():  # FFmpeg writes its complaints about broken files straight to stderr
            capture = cv2.VideoCapture(target)
            ok, first = capture.read() if capture.isOpened() else (False, None)
    finally:
        _restore_opencv(level)
    if not ok or first is None:
        capture.release()
        return capture, None
    return capture, first


def open_camera(index: int) -> FrameSource:
    """Webcam ``index`` as a source; :class:`SourceError` if there is none or it gives no frame."""
    capture, first = _open_capture(int(index))
    if first is None:
        raise SourceError(
            f"no camera at index {index}: OpenCV could not open it or read a frame (is a webcam connected, "
            "allowed and not used by another program? Without a camera, give a video file or an image folder)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    return FrameSource(_capture_frames(capture, first), f"camera {index}", fps if fps > 1 else 30.0, None,
                       capture.release, live=True)


def open_video(path: str | os.PathLike) -> FrameSource:
    """A video file as a source; :class:`SourceError` if missing or not decodable."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such video file")
    capture, first = _open_capture(str(path))
    if first is None:
        raise SourceError(f"{path}: not a readable video (OpenCV could not decode a frame from it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 15.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    return FrameSource(_capture_frames(capture, first), str(path), fps if fps > 1 else 15.0, count, capture.release)


def check_face_size(width: int, height: int, name: str = "the image") -> None:
    """:class:`SourceError` when an image is too small to hold a face (under :data:`MIN_FACE_SIDE`
    pixels on a side): such an image is never labelled."""
    if min(width, height) < MIN_FACE_SIDE:
        raise SourceError(f"{name}: the image is {width}x{height} pixels, too small to hold a face "
                          f"(at least {MIN_FACE_SIDE}x{MIN_FACE_SIDE}; FER2013 faces are 48x48)")


def decode_photo(data: bytes | str | os.PathLike, name: str | None = None,
                 max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int], list[str]]:
    """An image (encoded bytes, or a file path) as RGB uint8 ``(H, W, 3)``, its size as stored
    ``(width, height)`` and notes; what the CLI and the app both read photos with.

    Raises :class:`SourceError` naming ``name`` (default: the path) and the reason: empty, not an
    image Pillow can read, over ``max_pixels`` (checked from the header, before decoding), under
    :data:`MIN_FACE_SIDE` pixels on a side, damaged or truncated. The EXIF orientation is applied
    (phone photos), any mode (gray, palette, RGBA, CMYK, 16-bit) becomes RGB (an animation gives
    its first frame).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    is_bytes = isinstance(data, (bytes, bytearray))
    name = name or ("image" if is_bytes else str(data))
    if (len(data) if is_bytes else Path(data).stat().st_size) == 0:
        raise SourceError(f"{name}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data) if is_bytes else data)
    except UnidentifiedImageError:
        raise SourceError(f"{name}: not an image (JPEG, PNG, WebP, BMP, TIFF or GIF) that Pillow can read") from None
    except Exception as exc:  # noqa: BLE001  (Pillow's plugins raise many kinds)
        raise SourceError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise SourceError(f"{name}: the image is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
                              f"the limit is {max_pixels / 1e6:.0f} megapixels: shrink it first")
        check_face_size(width, height, name)
        try:
            image = ImageOps.exif_transpose(image)  # loads the pixels too
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit gray: scale to 8 bits
                values = np.asarray(image, dtype=np.float64)
                span = max(float(values.max() - values.min()), 1e-9)
                image = Image.fromarray(((values - values.min()) * (255.0 / span)).astype(np.uint8))
            rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except Exception as exc:  # noqa: BLE001  (truncated or damaged files)
            raise SourceError(f"{name}: a damaged or truncated image ({type(exc).__name__}: {exc})") from None
    notes = []
    if (rgb.shape[1], rgb.shape[0]) != (width, height):
        notes.append(f"rotated as its EXIF orientation says ({width}x{height} -> {rgb.shape[1]}x{rgb.shape[0]})")
    return rgb, (width, height), notes


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A BGR image from disk (see :func:`decode_photo`); :class:`SourceError` naming the file if
    missing, a folder, unreadable, damaged, too large or too small."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise SourceError(f"{path}: no such image file")
    rgb, _, _ = decode_photo(path, str(path), max_pixels)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`) in ``folder`` (and its subfolders if
    ``recursive``), sorted by path; hidden files (names starting with a dot) are left out."""
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                  and p.is_file())


def open_images(paths: list[Path], name: str) -> FrameSource:
    """Image files as a source (read with :func:`read_image`); unreadable ones are skipped and
    listed in ``source.skipped`` (``"path: reason"``)."""
    source = FrameSource(iter(()), name, 5.0, len(paths))

    def frames():
        for path in paths:
            try:
                yield read_image(path)
            except SourceError as exc:
                source.skipped.append(str(exc))

    source._frames = frames()
    return source


def open_source(source) -> FrameSource:
    """A frame source from a webcam index (``0`` or ``"0"``), a video file, an image file, a
    folder of images, or a list/array of frames (BGR or gray uint8)."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.strip().isdigit()):
        return open_camera(int(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            images = image_files(path)
            if not images:
                raise SourceError(f"{path}: a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            return open_images(images, f"{path} ({len(images)} images)")
        if not path.exists():
            raise SourceError(f"{path}: no such file or folder "
                              "(a source is a camera index, a video, an image or a folder)")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return open_images([path], str(path))
        return open_video(path)
    if isinstance(source, np.ndarray) and source.ndim in (2, 3) and source.dtype == np.uint8 and \
            (source.ndim == 2 or source.shape[-1] in (3, 4)) and source.shape[0] > 8:
        source = [source]  # one frame
    frames = list(source)
    if not frames:
        raise SourceError("an empty list of frames")
    return FrameSource(iter(frames), f"{len(frames)} frames in memory", 15.0, len(frames))


# ---------------------------------------------------------------------------------------------
# Sinks


def has_display() -> bool:
    """Whether an OpenCV window can open (a desktop session on Windows/macOS, $DISPLAY or
    $WAYLAND_DISPLAY on Linux)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...], what: str, example: str) -> Path:
    """``path`` if a ``what`` file (e.g. "video") can be written there, else :class:`SourceError`
    saying why: a name not ending in one of ``suffixes``, an existing folder (the message suggests
    ``path/example``), a folder on the way that is a file, or a folder without write permission.
    Checked before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path}: is a folder; name the {what} file to write, e.g. {path / example}")
    if path.suffix.lower() not in suffixes:
        raise SourceError(f"{path}: a {what} file name must end in {' or '.join(suffixes)}")
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise SourceError(f"{path}: cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise SourceError(f"{path}: cannot be written: no permission to write in {existing}")
    return path


def check_video_path(path: str | os.PathLike) -> Path:
    """:func:`check_output_path` for an annotated video (:data:`VIDEO_SUFFIXES`)."""
    return check_output_path(path, VIDEO_SUFFIXES, "video", "annotated.mp4")


class VideoSink:
    """Writes BGR frames to an mp4 (mp4v), avi (MJPG) or y4m (raw YUV 4:2:0) file, atomically (temp file, renamed on
    close; :meth:`abort` or a failed close removes it). The path is checked on creation
    (:func:`check_video_path`)."""

    def __init__(self, path: str | os.PathLike, fps: float = 15.0):
        self.path, self.fps = check_video_path(path), float(fps)
        self.tmp = self.path.with_name(self.path.stem + ".tmp" + self.path.suffix)
        self.writer, self.frames, self.size = None, 0, None

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (frame.shape[1], frame.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            with quiet_native_stderr():  # FFmpeg notes that y4m has no codec tag (it writes raw I420 all the same)
                self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise SourceError(f"{self.path}: OpenCV cannot write a video there (use {' or '.join(VIDEO_SUFFIXES)})")
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(_to_bgr(frame))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path (None if no frame was written)."""
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def write_video(frames, path: str | os.PathLike, fps: float = 15.0) -> Path:
    """Write BGR frames to a video file (mp4v), atomically; returns the path."""
    sink = VideoSink(path, fps)
    try:
        for frame in frames:
            sink.write(frame)
    except BaseException:
        sink.abort()
        raise
    out = sink.close()
    if out is None:
        raise SourceError(f"{path}: no frames to write")
    return out


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> list[np.ndarray]:
    """All (or the first ``max_frames``) BGR frames of a video file."""
    with open_video(path) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if max_frames and len(frames) >= max_frames:
                break
    return frames


class InlineDisplay:
    """Shows the latest annotated frame in a notebook cell, updated in place (for live sources)."""

    def __init__(self, every: int = 1, width: int = 480):
        from IPython.display import Image, display

        self._image, self.every, self.width, self.count = Image, max(1, every), width, 0
        self.handle = display(Image(data=self._encode(np.zeros((10, 10, 3), np.uint8))), display_id=True)

    def _encode(self, frame):
        small, _ = _resize_to_width(frame, self.width)
        return cv2.imencode(".jpg", small)[1].tobytes()

    def show(self, frame: np.ndarray) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.handle.update(self._image(data=self._encode(frame)))


# ---------------------------------------------------------------------------------------------
# Running the pipeline


@dataclass
class LatencyStats:
    """Per-frame stage timings (ms) of a run; ``table()`` summarises them."""

    rows: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0

    def add(self, timings: dict[str, float]) -> None:
        row = {stage: float(timings.get(stage, 0.0)) for stage in STAGES}
        row["total"] = sum(row.values())
        self.rows.append(row)

    @property
    def frames(self) -> int:
        return len(self.rows)

    @property
    def fps(self) -> float:
        """Frames per second over the whole loop (wall clock: reading, processing, writing)."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def table(self) -> pd.DataFrame:
        """Per stage (rows, plus ``total``): mean, median and 95th percentile in ms per frame."""
        frame = pd.DataFrame(self.rows, columns=[*STAGES, "total"])
        return pd.DataFrame({"mean_ms": frame.mean(), "median_ms": frame.median(),
                             "p95_ms": frame.quantile(0.95)}).rename_axis("stage")

    def summary(self) -> dict:
        """Frames, FPS (wall clock) and mean ms per stage, flat (one row of a comparison table)."""
        means = pd.DataFrame(self.rows, columns=[*STAGES, "total"]).mean() if self.rows else pd.Series(dtype=float)
        out = {"frames": self.frames, "fps": round(self.fps, 1)}
        out.update({f"{stage}_ms": round(float(means.get(stage, np.nan)), 2) for stage in (*STAGES, "total")})
        return out


@dataclass
class RunResult:
    """What :func:`run_pipeline` did: frames processed, faces found, timings, kept frames
    (``(index, annotated BGR frame)``), the annotated video's path, and why it stopped."""

    stats: LatencyStats
    frames: int
    frames_with_face: int
    faces: int
    kept: list[tuple[int, np.ndarray]]
    video: Path | None
    source: str
    stopped: str
    labels: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  #: "path: reason" of images that could not be read
    detector: str = ""  #: the recognizer's description: detector, and tracking between detections

    @property
    def fps(self) -> float:
        return self.stats.fps


def run_pipeline(source, recognizer: Recognizer, out: str | os.PathLike | None = None, show: bool = False,
                 inline: bool = False, max_frames: int | None = None, keep: int = 0, keep_every: int = 1,
                 progress: bool = True, seconds: float | None = None, annotate: bool = True,
                 on_frame: Callable[[int, float, list[Face]], None] | None = None) -> RunResult:
    """Run ``recognizer`` over every frame of ``source`` (see :func:`open_source`).

    ``out``: write the annotated frames to this video file; ``show``: an OpenCV window (only
    where a display exists; q or Esc stops); ``inline``: update an image in the notebook cell;
    ``keep``: keep up to that many annotated frames (every ``keep_every``-th) in memory;
    ``on_frame(index, seconds, faces)``: called with each frame's classified faces and its time
    (a file's or folder's frame index over its frame rate; a camera's wall clock since the start);
    ``max_frames``: stop after that many frames, ``seconds``: at that time (a camera otherwise
    runs until stopped; Ctrl+C / interrupting the kernel stops cleanly, ``stopped ==
    "interrupted"``: a camera's video is kept, a file's or folder's partial video is not written);
    ``annotate=False`` skips drawing when nothing shows or keeps the frames. Raises
    :class:`SourceError` for a source or sink that cannot be used, before any frame is processed
    for the sink.
    """
    recognizer.reset()
    stats, kept, labels = LatencyStats(), [], []
    frames_with_face = faces_total = 0
    window = show and has_display()
    if show and not window:
        print("no display here: not opening a window (write a video with out=... instead)", file=sys.stderr)
    annotate = annotate or bool(out or window or inline or keep)
    stopped = "end of source"
    if out:
        check_video_path(out)
    with open_source(source) as frames:
        sink = VideoSink(out, frames.fps) if out else None
        display = InlineDisplay() if inline else None
        total = min(x for x in (frames.length, max_frames) if x) if (frames.length or max_frames) else None
        if seconds and not frames.live:
            total = min(x for x in (total, math.ceil(seconds * frames.fps)) if x)
        bar = tqdm(total=total, desc=f"frames ({recognizer.description})", disable=not progress, leave=False)
        iterator = iter(frames)
        start = time.perf_counter()
        try:
            while max_frames is None or stats.frames < max_frames:
                t0 = time.perf_counter()
                at = t0 - start if frames.live else stats.frames / frames.fps
                if seconds is not None and at >= seconds:
                    stopped = f"seconds ({seconds:g})"
                    break
                frame = next(iterator, None)
                if frame is None:
                    break
                t1 = time.perf_counter()
                result = recognizer.process(frame, annotate)
                t2 = time.perf_counter()
                if on_frame is not None:
                    on_frame(stats.frames, at, result.faces)
                if sink is not None:
                    sink.write(result.annotated)
                if display is not None:
                    display.show(result.annotated)
                if keep and len(kept) < keep and stats.frames % keep_every == 0:
                    kept.append((stats.frames, result.annotated))
                if window:
                    cv2.imshow("FER (q or Esc to stop)", result.annotated)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        stopped = "stopped by the user"
                        break
                t3 = time.perf_counter()
                stats.add({**result.timings, "read": 1000 * (t1 - t0), "output": 1000 * (t3 - t2)})
                labels.append([f.label for f in result.faces])
                frames_with_face += bool(result.faces)
                faces_total += len(result.faces)
                bar.update()
            else:
                stopped = f"max_frames ({max_frames})"
        except KeyboardInterrupt:
            stopped = "interrupted"
            if sink is not None and not frames.live:
                sink.abort()
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        finally:
            stats.wall_seconds = time.perf_counter() - start
            bar.close()
            if window:
                cv2.destroyAllWindows()
        video = sink.close() if sink is not None else None
    return RunResult(stats, stats.frames, frames_with_face, faces_total, kept, video, frames.name, stopped, labels,
                     list(frames.skipped), recognizer.description)


def latency_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """One row per named run: frames, FPS (wall clock), frames with a face, and mean ms per stage."""
    rows = []
    for name, result in results.items():
        row = {"option": name, **result.stats.summary(), "frames_with_face": result.frames_with_face}
        rows.append(row)
    return pd.DataFrame(rows).set_index("option")



def fer_package_fps(frames: list[np.ndarray], warmup: int = 3) -> dict | None:
    """End-to-end frame rate of the ``fer`` package (``FER().detect_emotions``, its default Haar
    detector and bundled model) on BGR ``frames``, or None when ``fer`` cannot be imported (it is
    not a dependency: ``pip install fer``, which brings PyTorch)."""
    try:
        from fer import FER
    except Exception:  # noqa: BLE001  (not installed, or its own dependencies missing)
        return None
    detector = FER()
    for frame in frames[:warmup]:
        detector.detect_emotions(frame)
    start, with_face = time.perf_counter(), 0
    for frame in frames:
        with_face += bool(detector.detect_emotions(frame))
    seconds = time.perf_counter() - start
    return {"frames": len(frames), "fps": len(frames) / seconds, "ms_per_frame": 1000 * seconds / len(frames),
            "frames_with_face": with_face}

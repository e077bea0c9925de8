"""Face detection and tracking: where the faces are in a frame, and following them between detections.

Boxes are ``(x, y, w, h)`` in frame pixels. Detectors: :class:`HaarDetector` (OpenCV's Haar
cascade, fast) and :class:`MTCNNDetector` (accurate, with eye landmarks for alignment, slow: run
it on a downscaled frame and every few frames; it needs the optional ``mtcnn`` and TensorFlow,
the ``mtcnn`` extra). :class:`FaceTracker` detects every N frames and follows the faces in
between (template matching, OpenCV's MIL tracker, or holding the last boxes). A :class:`Face`
carries a box, the detector's score, optional eye centres and, once classified
(``recognizer.Recognizer``), its probabilities and crop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import CLASS_NAMES, import_keras, quiet_native_stderr
from .extras import needs_extra
from .media import SourceError, resize_to_width, to_bgr_frame

Box = tuple[int, int, int, int]  #: x, y, width, height in frame pixels
#: Face detector settings by detector and use: still photos (the CLI's ``predict``, the app's
#: photos, ``ExpressionRecognizer.predict``) and video frames (``run``, the live webcam,
#: ``analyze_video``): a photo is searched at a higher resolution for smaller faces.
DETECTOR_SETTINGS = {
    ("haar", "still"): {"width": 800, "min_face": 0.05},
    ("haar", "video"): {"width": 240},
    ("mtcnn", "still"): {"width": 640},
    ("mtcnn", "video"): {"width": 320},
}


@dataclass
class Face:
    """One face in a frame: its box, detector score, optional eye landmarks, and once
    classified its probabilities ``(classes,)`` over the model's ``classes`` (FER2013's seven,
    or the FER+ model's eight) and the 48x48 gray ``crop`` the model saw.
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
    classes: tuple[str, ...] = field(default=CLASS_NAMES, repr=False)  #: the model's classes, in ``proba`` order

    @property
    def label(self) -> str:
        return self.classes[int(np.argmax(self.proba))] if self.proba is not None else "?"

    @property
    def detector_score(self) -> float:
        """``score``, by the name the CLI's JSON and CSV and the API's tables give it."""
        return float(self.score)

    @property
    def probabilities(self) -> dict[str, float]:
        """The probabilities by class name, in the model's order (empty before classification)."""
        return {} if self.proba is None else {c: float(p) for c, p in zip(self.classes, self.proba)}

    def as_dict(self) -> dict:
        """Plain data: box, detector score, label, probabilities by class."""
        out = {"box": [int(v) for v in self.box], "detector_score": round(self.detector_score, 4), "label": self.label}
        if self.proba is not None:
            out["probabilities"] = {c: round(p, 6) for c, p in self.probabilities.items()}
        return out


def largest_first(faces: list[Face]) -> list[Face]:
    """``faces`` largest first; faces of equal size top to bottom, then left to right, so the order
    never depends on the order a detector (multi-threaded in OpenCV) happened to return them."""
    return sorted(faces, key=lambda f: (-f.box[2] * f.box[3], f.box[1], f.box[0]))


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
        small, scale = resize_to_width(gray, self.width)  # (histogram equalisation: slower, fewer hits)
        side = max(12, int(self.min_face * small.shape[1]))
        boxes, neighbours = self.cascade.detectMultiScale2(small, scaleFactor=self.scale_factor,
                                                           minNeighbors=self.min_neighbors, minSize=(side, side))
        faces = [Face(tuple(int(round(v / scale)) for v in box), float(n)) for box, n in zip(boxes, neighbours)]
        return largest_first(faces)


class MTCNNDetector:
    """MTCNN (the ``mtcnn`` package, TensorFlow) on an RGB frame shrunk to ``width`` pixels.

    Accurate and gives eye landmarks (used to level the eyes), but slow on a CPU (about
    0.2 s per 320-pixel frame on 2 cores): use it with ``FaceTracker(every=N)``. It finds
    faces from 20 pixels wide in the shrunk frame.
    """

    name = "mtcnn"

    def __init__(self, width: int | None = 320, min_confidence: float = 0.9):
        with needs_extra("mtcnn", "the MTCNN face detector"):  # optional (mtcnn, TensorFlow): imported here
            import_keras()  # TensorFlow first, quietly: mtcnn imports it
            from mtcnn import MTCNN

        with quiet_native_stderr():  # TensorFlow's native device-probing lines
            self.model = MTCNN(device="CPU:0")
        self.width, self.min_confidence = width, min_confidence

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in a BGR frame with their eye centres, boxes in frame pixels, largest first."""
        rgb = cv2.cvtColor(to_bgr_frame(frame), cv2.COLOR_BGR2RGB)
        small, scale = resize_to_width(rgb, self.width)
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
        return largest_first(faces)


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



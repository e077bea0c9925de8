"""The recognizer: frame in, faces found, cropped to 48x48 gray, classified, and drawn on the frame.

:class:`Recognizer` runs one frame (detection or tracking, :func:`crop_face`, the classifier,
:func:`draw_faces`) with per-stage timings; :meth:`Recognizer.faces_in_image` runs one still
image, what the CLI's ``predict``, the browser app and ``fer_utils.api`` all share.
:func:`run_pipeline` runs a recognizer over every frame of a source (see
``media.open_source``) into an annotated video, an OpenCV window, any display function and any
function called with each frame's faces (``on_frame``, what ``fer_utils.api`` builds its
per-frame table with), with FPS and per-stage latency statistics (:class:`LatencyStats`).
A frame without a face is drawn with a "no face" label.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from .config import CLASS_NAMES, IMAGE_SIZE
from .detection import Box, Face, FaceTracker, make_detector
from .media import VideoSink, check_face_size, check_video_path, has_display, open_source, to_bgr_frame
from .progress import tqdm

WHOLE_FACE_MAX_SIDE = 64  #: an image this small is taken as one face crop, without detection
STAGES = ("read", "detect", "crop", "classify", "draw", "output")  #: timed per frame (ms)
#: One BGR colour per class name (FER2013's seven and FER+'s contempt); ``class_color`` for any name.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (40, 200, 240),
    "sad": (200, 120, 40), "surprise": (0, 140, 255), "neutral": (170, 170, 170), "contempt": (150, 150, 0)}
OTHER_COLOR = (120, 120, 120)  #: a class no colour is chosen for (a model with other classes)


def class_color(name: str) -> tuple[int, int, int]:
    """The BGR colour drawn for class ``name``."""
    return CLASS_COLORS.get(name, OTHER_COLOR)
NO_FACE = "no face"


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
        color = class_color(face.label)
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, 2)
        _text(frame, f"{face.label} {100 * face.proba[k]:.0f}%", (x, max(16, y - 6)), 0.6, (0, 0, 0), 2, color)
        if bars:
            panel_w, row = 120, 13
            panel_h = row * len(face.classes) + 2
            if x + w + 6 + panel_w <= width:  # right of the box, else below, else left
                px, py = x + w + 6, y
            elif y + h + 6 + panel_h <= height:
                px, py = max(0, min(x, width - panel_w)), y + h + 6
            else:
                px, py = max(0, x - panel_w - 6), y
            py = min(max(0, py), max(0, height - panel_h))
            overlay = frame[py:py + panel_h, px:px + panel_w]
            overlay[:] = (overlay * 0.4).astype(np.uint8)  # darken behind the bars
            for i, (name, p) in enumerate(zip(face.classes, face.proba)):
                top = py + i * row + 2
                cv2.rectangle(frame, (px + 58, top), (px + 58 + int(58 * float(p)), top + row - 3), class_color(name), -1)
                cv2.putText(frame, name, (px + 2, top + row - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                            cv2.LINE_AA)
    if status:
        _text(frame, status, (8, height - 8), 0.45, (255, 255, 255), 1, (0, 0, 0))
    return frame


# ---------------------------------------------------------------------------------------------
# The recognizer


def classifier_classes(classifier, class_names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The classes a classifier answers: ``class_names`` if given, else its own ``class_names``
    (an ``OnnxClassifier`` reads them from its file), else FER2013's seven."""
    return tuple(class_names or getattr(classifier, "class_names", None) or CLASS_NAMES)


@dataclass
class FrameResult:
    """One processed frame: the annotated copy (BGR), its faces, and stage timings in ms."""

    annotated: np.ndarray
    faces: list[Face]
    timings: dict[str, float]


class Recognizer:
    """Frame in, annotated frame and classified faces out.

    ``classifier``: a function uint8 faces ``(N, 48, 48)`` -> probabilities ``(N, classes)`` (a
    ``model_file.OnnxClassifier``, or a Keras model's ``predict``); ``class_names``: its classes
    (default: the classifier's own ``class_names``, as an ``OnnxClassifier`` reads them from its
    file, else FER2013's seven). ``detector``: ``haar``,
    ``mtcnn`` or a detector object; ``detect_every``/``tracker``: see :class:`FaceTracker`.
    ``margin``: extra border around the detected box (share of its side); ``align``: level the
    eyes when the detector gives them.
    """

    def __init__(self, classifier: Callable[[np.ndarray], np.ndarray], detector="haar", detect_every: int = 1,
                 tracker: str = "template", margin: float = 0.1, align: bool = True, bars: bool = True,
                 show_fps: bool = True, class_names: tuple[str, ...] | None = None):
        if not 0 <= margin <= 1:
            raise ValueError(f"margin={margin}: the border around a face is a share of its side, 0-1")
        self.classifier = classifier
        self.class_names = classifier_classes(classifier, class_names)
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
        frame = to_bgr_frame(frame)
        faces = self.tracker.update(frame)
        t1 = time.perf_counter()
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        crops = np.stack([crop_face(gray, f.box, self.margin, f.eyes if self.align else None) for f in faces]) \
            if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        t2 = time.perf_counter()
        if faces:
            for face, crop, p in zip(faces, crops, self.classify(crops)):
                face.crop, face.proba, face.classes = crop, p, self.class_names
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
        under ``media.MIN_FACE_SIDE`` pixels on a side raises ``media.SourceError``: too small to be a face.
        """
        image = to_bgr_frame(image)
        check_face_size(image.shape[1], image.shape[0])
        if whole is None:
            whole = max(image.shape[:2]) <= WHOLE_FACE_MAX_SIDE
        if not whole:
            self.tracker.reset()
            return self.process(image, annotate=False).faces
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        crop = cv2.resize(gray, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        return [Face((0, 0, w, h), proba=self.classify(crop[None])[0], crop=crop, classes=self.class_names)]

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """The classifier's probabilities ``(N, classes)`` for face crops ``(N, 48, 48)``; ValueError
        when they are not one per class name (a classifier given the wrong ``class_names``)."""
        proba = np.asarray(self.classifier(crops))
        if proba.ndim != 2 or proba.shape[1] != len(self.class_names):
            raise ValueError(f"the classifier gives probabilities of shape {proba.shape} for {len(crops)} faces, not "
                             f"one per class ({len(self.class_names)}: {', '.join(self.class_names)}); "
                             "pass its class_names")
        return proba

    def predict_image(self, image: np.ndarray, whole: bool | None = None) -> list[dict]:
        """:meth:`faces_in_image` as plain dicts (box, detector_score, label, probabilities)."""
        return [f.as_dict() for f in self.faces_in_image(image, whole)]


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
                 display: Callable[[np.ndarray], None] | None = None, max_frames: int | None = None, keep: int = 0,
                 keep_every: int = 1, progress: bool = True, seconds: float | None = None, annotate: bool = True,
                 on_frame: Callable[[int, float, list[Face]], None] | None = None) -> RunResult:
    """Run ``recognizer`` over every frame of ``source`` (see :func:`media.open_source`).

    ``out``: write the annotated frames to this video file; ``show``: an OpenCV window (only
    where a display exists; q or Esc stops); ``display``: called with each annotated frame (e.g.
    ``webcam.InlineDisplay()``, an image updated in place in a notebook cell);
    ``keep``: keep up to that many annotated frames (every ``keep_every``-th) in memory;
    ``on_frame(index, seconds, faces)``: called with each frame's classified faces and its time
    (a file's or folder's frame index over its frame rate; a camera's wall clock since the start);
    ``max_frames``: stop after that many frames, ``seconds``: at that time (a camera otherwise
    runs until stopped; Ctrl+C / interrupting the kernel stops cleanly, ``stopped ==
    "interrupted"``: a camera's video is kept, a file's or folder's partial video is not written);
    ``annotate=False`` skips drawing when nothing shows or keeps the frames. Raises
    :class:`media.SourceError` for a source or sink that cannot be used, before any frame is
    processed for the sink.
    """
    recognizer.reset()
    stats, kept, labels = LatencyStats(), [], []
    frames_with_face = faces_total = 0
    window = show and has_display()
    if show and not window:
        print("no display here: not opening a window (write a video with out=... instead)", file=sys.stderr)
    annotate = annotate or bool(out or window or display is not None or keep)
    stopped = "end of source"
    if out:
        check_video_path(out)
    with open_source(source) as frames:
        sink = VideoSink(out, frames.fps) if out else None
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
                    display(result.annotated)
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


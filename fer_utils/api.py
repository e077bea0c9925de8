"""The Python API: facial expressions in a photo, a batch of photos or a video, in a few lines.

    from fer_utils import ExpressionRecognizer, plot_timeline

    recognizer = ExpressionRecognizer()                       # the default released model, Haar detector
    ferplus = ExpressionRecognizer(model="ferplus")           # or one by name (fer2013, ferplus), or a file
    for face in recognizer.predict("photo.jpg"):              # largest face first
        print(face.box, face.label, face.probabilities, face.detector_score)
    table = recognizer.analyze_video("clip.mp4", seconds=10)  # pandas: one row per frame and face
    plot_timeline(table)

It is a thin layer over the recognizer (:mod:`fer_utils.detection` finds the faces,
:mod:`fer_utils.recognizer` crops them to 48x48 gray and classifies them with the ONNX model of
:mod:`fer_utils.model_file`, :mod:`fer_utils.media` reads and writes images and videos), and the
command line (``fer_utils.cli``) and the browser app (``fer_utils.app``) run through it, so all
three give the same answer for the same image. The released model ships inside the package
(``fer_utils/released/``), so ``pip install .`` is enough: nothing is downloaded at run time,
and nothing of the lab (TensorFlow, Keras, scikit-learn) is needed.

Photos are read with :func:`media.decode_photo` (EXIF orientation applied; at most 50
megapixels; at least 24 pixels a side). An image of at most 64 pixels a side is taken as one face
crop, like a FER2013 image. Problems raise :class:`media.SourceError` (a bad image or video)
or :class:`model_file.ModelFileError` (a bad model), each naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pandas as pd

from .config import CLASS_NAMES
from .detection import Face, make_detector
from .extras import require
from .media import IMAGE_SUFFIXES, SourceError, decode_photo, image_files, read_image, to_bgr_frame
from .model_file import OnnxClassifier, find_model, released_model
from .progress import tqdm
from .recognizer import NO_FACE, Recognizer, RunResult, class_color, classifier_classes, run_pipeline

#: Detect every N frames in live video by default (tracking in between): MTCNN is too slow for every frame.
LIVE_DETECT_EVERY = {"haar": 1, "mtcnn": 10}
BOX_COLUMNS = ["x", "y", "w", "h"]


def load_classifier(model: str | os.PathLike | None = None, threads: int | None = None) -> OnnxClassifier:
    """An :class:`model_file.OnnxClassifier` for ``model`` (:func:`model_file.find_model`: a path,
    or a released model's name, ``fer2013`` or ``ferplus``; default: the default released model),
    with ``threads`` ONNX Runtime threads (None: one per core).
    :class:`model_file.ModelFileError` for a missing file (saying how to get one), a Keras file,
    or a file that is not a FER model."""
    return OnnxClassifier(find_model(model), threads=threads)


def to_bgr(image, bgr: bool = False) -> np.ndarray:
    """An image as a BGR uint8 array: a file path (read with :func:`media.read_image`),
    encoded bytes, a PIL image, or an array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` in RGB(A)
    order (``bgr=True``: already BGR, as OpenCV reads it)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, (bytes, bytearray)):
        return cv2.cvtColor(decode_photo(bytes(image))[0], cv2.COLOR_RGB2BGR)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if bgr or image.ndim == 2:
        return to_bgr_frame(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGR)
    raise SourceError(f"an image must be (H, W), (H, W, 3) or (H, W, 4) pixels, got shape {image.shape}")


@dataclass
class ImageResult:
    """One image of a batch: its path, its faces (largest first), its size ``(width, height)``
    as read, or why it could not be read (``error``; then no size and no faces)."""

    image: str
    faces: list[Face] = field(default_factory=list)
    size: tuple[int, int] | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        """The CLI's JSON entry: image, width, height, faces (or image, error, faces=[])."""
        if self.error is not None:
            return {"image": self.image, "error": self.error, "faces": []}
        width, height = self.size
        return {"image": self.image, "width": width, "height": height, "faces": [f.as_dict() for f in self.faces]}


def face_row(index: int | None, face: Face | None, class_names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """One table row's face columns: face number, box, detector score, label and one probability
    per class (missing values over ``class_names`` and the label ``no face`` for ``face=None``)."""
    if face is None:
        return {"face": pd.NA, **dict.fromkeys(BOX_COLUMNS, pd.NA), "detector_score": np.nan, "label": NO_FACE,
                **dict.fromkeys(class_names, np.nan)}
    return {"face": index, **dict(zip(BOX_COLUMNS, (int(v) for v in face.box))), "detector_score": face.detector_score,
            "label": face.label, **{c: round(p, 6) for c, p in face.probabilities.items()}}


def _table(rows: list[dict], leading: dict[str, str], class_names: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a DataFrame: ``leading`` columns (name: dtype) first, then the face columns (one
    probability per class of ``class_names``), with nullable integers for face numbers and boxes
    (so a CSV says ``177``, not ``177.0``)."""
    columns = [*leading, "face", *BOX_COLUMNS, "detector_score", "label", *class_names]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({**leading, "face": "Int64", **dict.fromkeys(BOX_COLUMNS, "Int64"),
                         "detector_score": "float64", **dict.fromkeys(class_names, "float64")})


def results_table(results: Iterable[ImageResult], class_names: tuple[str, ...] = CLASS_NAMES) -> pd.DataFrame:
    """A batch's results as a DataFrame, one row per face (``face`` 0 = the largest); an image
    without a face gets one row labelled ``no face``, an unreadable one a row labelled ``error``.
    Columns: image, face, x, y, w, h, detector_score, label and one probability per class of the
    model (``class_names``: :attr:`ExpressionRecognizer.class_names`)."""
    rows = []
    for result in results:
        if not result.faces:
            rows.append({"image": result.image, **face_row(None, None, class_names)})
            rows[-1]["label"] = "error" if result.error is not None else NO_FACE
        rows.extend({"image": result.image, **face_row(i, f, class_names)} for i, f in enumerate(result.faces))
    return _table(rows, {"image": "string"}, class_names)


def _count(n: int, noun: str) -> str:
    """``1 face``, ``2 faces``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def batch_summary(results: list[ImageResult]) -> str:
    """One line, e.g. ``12 images: 10 with a face (14 faces), 1 without a face, 1 failed``."""
    failed = sum(r.error is not None for r in results)
    with_face = sum(bool(r.faces) for r in results)
    faces = sum(len(r.faces) for r in results)
    return (f"{_count(len(results), 'image')}: {with_face} with a face ({_count(faces, 'face')}), "
            f"{len(results) - with_face - failed} without a face, {failed} failed")


class FrameTable:
    """Collects the faces of each frame (``run_pipeline(on_frame=...)``) into the per-frame table
    that :meth:`ExpressionRecognizer.analyze_video` returns, one probability column per class of
    the model (``class_names``)."""

    def __init__(self, class_names: tuple[str, ...] = CLASS_NAMES):
        self.rows: list[dict] = []
        self.class_names = tuple(class_names)

    def __call__(self, index: int, seconds: float, faces: list[Face]) -> None:
        start = {"frame": index, "time_s": round(seconds, 4)}
        if not faces:
            self.rows.append({**start, **face_row(None, None, self.class_names)})
        self.rows.extend({**start, **face_row(i, f, self.class_names)} for i, f in enumerate(faces))

    def to_frame(self) -> pd.DataFrame:
        """Columns: frame, time_s, face (0 = the largest; missing in a frame without a face,
        labelled ``no face``), x, y, w, h, detector_score, label and one probability per class."""
        return _table(self.rows, {"frame": "int64", "time_s": "float64"}, self.class_names)


class ExpressionRecognizer:
    """Facial expressions in photos and videos: face detection, 48x48 gray crops, the ONNX model.

    ``model``: an ``.onnx`` file, a released model's name (``fer2013``: trained on FER2013's labels,
    7 classes; ``ferplus``: on FER+'s ten-annotator votes, 8 classes with contempt; default: the
    default released model, :func:`released_model`) or any function uint8 faces ``(N, 48, 48)`` ->
    probabilities ``(N, classes)`` (e.g. an :class:`model_file.OnnxClassifier`, which knows its
    classes from its file; for another function ``class_names`` names them, default FER2013's
    seven); ``detector``: ``haar`` (OpenCV's Haar cascade: fast,
    frontal faces), ``mtcnn`` (slower, finds turned faces, levels the eyes; loads TensorFlow: the ``mtcnn`` extra) or
    a detector object; ``threads``: ONNX Runtime threads (None: one per core); ``margin``: the
    border added around a detected face, a share of its side (0-1); ``min_face``: the smallest
    face in a photo for the Haar cascade, a share of the image width (default 0.05).

    Not thread-safe: use one recognizer per thread (the model itself may be shared).
    """

    def __init__(self, model=None, detector="haar", threads: int | None = None, margin: float = 0.1,
                 min_face: float | None = None, class_names: tuple[str, ...] | None = None):
        if model is None or isinstance(model, (str, os.PathLike)):
            model = load_classifier(model, threads)
        if not callable(model):
            raise TypeError(f"model must be an .onnx path, a released model's name or a function faces -> "
                            f"probabilities, not {type(model)}")
        self.classifier = model
        self.class_names = classifier_classes(model, class_names)  #: the model's classes, in output order
        self.model_path: Path | None = getattr(model, "path", None)
        self.detector = detector
        self.margin, self.min_face = margin, min_face
        self._still_recognizer: Recognizer | None = None
        if not 0 <= margin <= 1:
            raise ValueError(f"margin={margin}: the border around a face is a share of its side, 0-1")
        if isinstance(detector, str) and detector not in ("haar", "mtcnn"):
            raise ValueError(f"unknown detector {detector!r}; choose 'haar' or 'mtcnn'")

    def __repr__(self) -> str:
        name = self.detector if isinstance(self.detector, str) else type(self.detector).__name__
        return f"ExpressionRecognizer(model={str(self.model_path or self.classifier)!r}, detector={name!r})"

    def _detector(self, use: str):
        if not isinstance(self.detector, str):
            return self.detector
        options = {"min_face": self.min_face} if use == "still" and self.min_face and self.detector == "haar" else {}
        return make_detector(self.detector, use, **options)

    @property
    def still_recognizer(self) -> Recognizer:
        """The :class:`recognizer.Recognizer` that photos go through (made on first use)."""
        if self._still_recognizer is None:
            self._still_recognizer = Recognizer(self.classifier, self._detector("still"), margin=self.margin,
                                                show_fps=False, class_names=self.class_names)
        return self._still_recognizer

    def video_recognizer(self, detect_every: int | None = None, tracker: str = "template") -> Recognizer:
        """A new :class:`recognizer.Recognizer` for a stream of frames (its own detector and
        tracking state): detection every ``detect_every`` frames (default: 1 for Haar, 10 for
        MTCNN), ``tracker`` in between; ``process(frame)`` draws labels and the frame rate."""
        every = detect_every or LIVE_DETECT_EVERY.get(self.detector if isinstance(self.detector, str) else "", 1)
        return Recognizer(self.classifier, self._detector("video"), every, tracker, margin=self.margin,
                          class_names=self.class_names)

    # -- photos --------------------------------------------------------------------------------

    def predict(self, image, whole: bool | None = None, bgr: bool = False) -> list[Face]:
        """The faces in one image, largest first: each has ``box`` (x, y, width, height in
        pixels), ``label``, ``probabilities`` (dict by class), ``proba`` (array ``(classes,)``),
        ``detector_score`` (the detector's confidence, see :class:`detection.Face`) and ``crop`` (the 48x48
        gray face the model saw). ``image``: a path, encoded bytes, a PIL image or an RGB array
        (``bgr=True`` for OpenCV's order); ``whole=True`` takes the whole image as one face.
        An empty list when no face is found."""
        return self.still_recognizer.faces_in_image(to_bgr(image, bgr), whole)

    def predict_many(self, images: str | os.PathLike | Iterable[str | os.PathLike], whole: bool | None = None,
                     recursive: bool = True, progress: bool = True) -> list[ImageResult]:
        """:meth:`predict` on many image files, with a progress bar. ``images``: paths of image
        files and folders, or one path (``predict_many("photos/")``: a single ``str`` or
        ``PathLike`` is one item, never a sequence of characters). A folder stands for the
        images in it (and, with ``recursive``, in its subfolders), sorted by path. An image that
        cannot be read does not stop the batch: its result has ``error`` set. See
        :func:`results_table` for a DataFrame and :func:`batch_summary` for one line."""
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        paths: list[str | Path] = []
        results: dict[int, ImageResult] = {}  # position -> result, for folders without images
        for item in images:
            if Path(item).is_dir():
                found = image_files(item, recursive)
                if not found:
                    results[len(paths)] = ImageResult(str(item), error=(
                        f"{item}: a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})"))
                    paths.append(item)
                paths.extend(found)
            else:
                paths.append(item)
        for i, path in enumerate(tqdm(paths, desc="images", unit="image", disable=not progress, leave=False)):
            if i in results:
                continue
            try:
                image = read_image(path)
                results[i] = ImageResult(str(path), self.predict(image, whole, bgr=True),
                                         (int(image.shape[1]), int(image.shape[0])))
            except SourceError as exc:
                results[i] = ImageResult(str(path), error=str(exc))
        return [results[i] for i in range(len(paths))]

    # -- videos --------------------------------------------------------------------------------

    def run_video(self, source, detect_every: int | None = None, tracker: str = "template", **options) -> RunResult:
        """:func:`recognizer.run_pipeline` on ``source`` (a video file, a camera index, a folder
        of images or a list of frames) with a fresh :meth:`video_recognizer`; ``options``:
        ``out``, ``show``, ``max_frames``, ``seconds``, ``on_frame``, ``progress``, ... """
        return run_pipeline(source, self.video_recognizer(detect_every, tracker), **options)

    def analyze_video(self, source, max_frames: int | None = None, seconds: float | None = None,
                      detect_every: int | None = None, tracker: str = "template", out: str | os.PathLike | None = None,
                      progress: bool = True) -> pd.DataFrame:
        """Every frame of a video file or camera (index ``0``, ...) as a table: one row per frame
        and face (see :meth:`FrameTable.to_frame`), until the end, ``max_frames`` frames or
        ``seconds`` seconds of video (a camera runs until one of these or Ctrl+C). ``out``: also
        write the annotated video. ``table.attrs`` holds the source, frames, FPS and why it stopped.
        :class:`media.SourceError` if no frame could be read."""
        table = FrameTable(self.class_names)
        result = self.run_video(source, detect_every, tracker, out=out, max_frames=max_frames, seconds=seconds,
                                on_frame=table, annotate=False, progress=progress)
        if result.frames == 0 and result.stopped != "interrupted":
            raise SourceError(f"{result.source}: no frame could be read")
        frame = table.to_frame()
        frame.attrs.update(source=result.source, frames=result.frames, fps=round(result.fps, 2), stopped=result.stopped)
        return frame


def plot_timeline(table: pd.DataFrame, face: int = 0, smooth: int = 1, ax=None):
    """The expression timeline of a video: each expression's probability over time for face
    number ``face`` (0: the largest face of each frame), from :meth:`ExpressionRecognizer.analyze_video`'s
    table (its class columns, those after ``label``: the model's classes); ``smooth``: a centred
    rolling mean over that many frames. Frames without that face leave gaps. Returns the matplotlib Axes. Needs matplotlib (the ``plot`` extra; without it,
    ``extras.MissingExtra`` says so in one line)."""
    plt = require("matplotlib.pyplot", "plot", "the timeline plot")  # optional (`plot` extra): imported here

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.5))
    times = table.groupby("frame")["time_s"].first()
    class_names = list(table.columns[table.columns.get_loc("label") + 1:])
    shown = table[table["face"] == face].set_index("frame")[class_names].reindex(times.index)
    if smooth > 1:
        shown = shown.rolling(smooth, center=True, min_periods=1).mean().where(shown.notna())
    for name in class_names:
        b, g, r = class_color(name)
        ax.plot(times.to_numpy(), shown[name].to_numpy(), label=name, color=(r / 255, g / 255, b / 255), lw=1.5)
    if len(times) > 1:
        ax.set_xlim(times.iloc[0], times.iloc[-1])
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1),
           title=f"Expressions over time ({'the largest face' if face == 0 else f'face {face}'} of each frame)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return ax


__all__ = ["ExpressionRecognizer", "ImageResult", "FrameTable", "plot_timeline", "results_table", "batch_summary",
           "released_model", "load_classifier", "Face"]

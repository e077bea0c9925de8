"""Face alignment with MTCNN (write-up 000): find the face and its eyes, rotate so the eye line is
level, crop the face box with a margin and resize.

MTCNN (the ``mtcnn`` package, weights inside it, works offline) returns a face box, a confidence
and five keypoints (eyes, nose, mouth corners). :func:`align_face` aligns one image of any size and
returns an :class:`AlignResult`: "no face" is a result (``found=False``, the original kept), not an
exception. :func:`align_batch` does many images with batched detection, :func:`align_dataset` a
whole :class:`~fer_utils.data.FERDataset` (cached on disk), and :func:`detection_rates` reports
how often a face was found per class and split.

FER2013 faces are 48x48 and fill the frame, where MTCNN's first stage finds little. Small images
are therefore upscaled (``detect_size``) and given a border (``pad``) before detection. Measured on
400 FER2013 faces, detection rate and eye angles barely change between 48, 64, 96 and 160 px
(91-92% found; angles within 1 degree), while the time grows with the area, so
:data:`FER_SETTINGS` detects at 64 px with slightly lower stage thresholds. Detection runs on
batches (mtcnn 1.0 takes a list of same-sized images), about ten times faster than one by one.
Raising mtcnn's ``min_face_size`` to skip small scales does not help in mtcnn 1.0: its image
pyramid keeps its length, the last levels shrink below 12 px and the whole batch comes back empty.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from .progress import tqdm

from . import config
from .config import CLASS_NAMES, IMAGE_SIZE, USAGES
from .data import FERDataset
from .evaluate import mcnemar_p

#: Bumped when the alignment code changes what it produces (part of the cache key).
ALIGN_VERSION = 1

#: Keypoint names in MTCNN's order (``left_eye`` is the one on the image's left).
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class AlignSettings:
    """How to detect and crop.

    ``size``: output side in pixels; ``gray``: output ``(size, size)`` uint8 gray, else
    ``(size, size, 3)`` RGB. ``margin``: added on each side of the MTCNN box, as a fraction of its
    side (0 = the box itself). ``detect_size``: images whose shorter side is below it are upscaled
    to it (px) before detection (0 = never); ``pad``: border added around such upscaled images,
    as a fraction of ``detect_size``, so faces that fill the frame are still found.
    ``thresholds``: MTCNN's P-, R- and O-net confidence thresholds. ``min_face``: boxes whose side
    is below this fraction of the image's shorter side are ignored. ``border``: how pixels outside
    the image are filled after rotation (``replicate``, ``reflect`` or ``constant``, black).
    """

    size: int = 160
    gray: bool = False
    margin: float = 0.2
    detect_size: int = 0
    pad: float = 0.25
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    min_face: float = 0.0
    border: str = "replicate"

    def params(self) -> dict:
        """The settings as JSON-normal data (metrics files store them)."""
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        """Short hash of the settings, the alignment code version and mtcnn's version."""
        import mtcnn

        text = json.dumps({**self.params(), "v": ALIGN_VERSION, "mtcnn": getattr(mtcnn, "__version__", "?")},
                          sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


#: Alignment of FER2013 faces for the project's models: 48x48 gray, detected at 64 px with a 25%
#: border. Margin 0: the MTCNN box of a FER2013 face is about as large as the frame (median side
#: 50 px of 48), so the aligned faces keep the scale the models know.
FER_SETTINGS = AlignSettings(size=IMAGE_SIZE, gray=True, margin=0.0, detect_size=64, pad=0.25,
                             thresholds=(0.5, 0.6, 0.7), min_face=0.35)

_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


@dataclass
class AlignResult:
    """The alignment of one image.

    ``image``: the aligned face, ``(size, size)`` uint8 (gray) or ``(size, size, 3)`` (RGB); when
    no face was found, the whole original resized. ``found``: whether MTCNN found a face;
    ``n_faces``: how many it found (the largest is used). ``box``: ``(x, y, w, h)`` in input
    pixels; ``keypoints``: name -> ``(x, y)`` in input pixels; ``confidence``: MTCNN's, 0-1;
    ``angle``: the eye line's angle before alignment, degrees (positive: the right-hand eye is
    lower), which is the rotation applied. ``matrix``: the ``(2, 3)`` affine map from input to
    output pixels.
    """

    image: np.ndarray
    found: bool
    n_faces: int = 0
    box: tuple[float, float, float, float] | None = None
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float = float("nan")
    angle: float = float("nan")
    matrix: np.ndarray | None = None

    def transform(self, points) -> np.ndarray:
        """Map ``(K, 2)`` input-pixel points ``(x, y)`` into the aligned image's pixels."""
        if self.matrix is None:
            raise ValueError("no face was found: there is no alignment transform")
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return points @ self.matrix[:, :2].T + self.matrix[:, 2]

    @property
    def aligned_keypoints(self) -> dict[str, tuple[float, float]]:
        """The keypoints in the aligned image's pixels (empty when no face was found)."""
        if not self.found:
            return {}
        moved = self.transform([self.keypoints[k] for k in KEYPOINTS])
        return {k: (float(x), float(y)) for k, (x, y) in zip(KEYPOINTS, moved)}


@functools.lru_cache(maxsize=1)
def get_detector():
    """The MTCNN detector (built once per process; about 1 s)."""
    config.import_keras()  # quiet TensorFlow import first
    from mtcnn import MTCNN

    return MTCNN()


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    raise ValueError(f"expected an (H, W) gray or (H, W, 3) RGB image, got shape {image.shape}")


def _detection_canvas(rgb: np.ndarray, settings: AlignSettings) -> tuple[np.ndarray, float, int]:
    """The image MTCNN sees, and how to map its pixels back: ``input = (canvas - pad) / scale``."""
    h, w = rgb.shape[:2]
    if not settings.detect_size or min(h, w) >= settings.detect_size:
        return rgb, 1.0, 0
    scale = settings.detect_size / min(h, w)
    big = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    pad = round(settings.pad * settings.detect_size)
    fill = [int(v) for v in rgb.reshape(-1, 3).mean(axis=0)]
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill)
    return big, scale, pad


def _detect(canvases: list[np.ndarray], settings: AlignSettings, detector=None) -> list[np.ndarray]:
    """MTCNN on same-sized canvases at once; per canvas the rows ``(K, 15)``: box x1, y1, x2, y2,
    confidence, the 5 keypoints' x, then their y (canvas pixels)."""
    detector = detector or get_detector()
    p, r, o = settings.thresholds
    rows = detector.detect_faces(list(canvases), output_type="numpy", box_format="xyxy",
                                 threshold_pnet=p, threshold_rnet=r, threshold_onet=o)
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 16)
    return [rows[rows[:, 0] == i, 1:] for i in range(len(canvases))]


def _align_from_rows(rgb: np.ndarray, rows: np.ndarray, scale: float, pad: int,
                     settings: AlignSettings) -> AlignResult:
    """Pick the largest face in ``rows`` (canvas pixels), rotate, crop and resize ``rgb``."""
    h, w = rgb.shape[:2]
    size = settings.size
    if len(rows):
        rows = rows.copy()
        rows[:, [0, 1, 2, 3]] = (rows[:, [0, 1, 2, 3]] - pad) / scale
        rows[:, 5:15] = (rows[:, 5:15] - pad) / scale
        sides = np.maximum(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1])
        rows = rows[sides >= settings.min_face * min(h, w)]
    if not len(rows):
        image = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR)
        if settings.gray:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return AlignResult(image, False, 0)
    areas = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])
    best = rows[int(np.argmax(areas))]
    x1, y1, x2, y2, conf = best[:5]
    xs, ys = best[5:10], best[10:15]
    keypoints = {k: (float(x), float(y)) for k, x, y in zip(KEYPOINTS, xs, ys)}
    (lx, ly), (rx, ry) = keypoints["left_eye"], keypoints["right_eye"]
    angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * settings.margin)
    # Rotate about the box centre by the eye angle (OpenCV: positive = counter-clockwise on
    # screen, which levels a line whose right end is lower), scale the crop to the output size,
    # then move the box centre to the output's centre.
    matrix = cv2.getRotationMatrix2D(centre, angle, size / side)
    matrix[:, 2] += np.array([size / 2, size / 2]) - matrix @ np.array([*centre, 1.0])
    source = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if settings.gray else rgb
    image = cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=_BORDERS[settings.border], borderValue=0)
    return AlignResult(image, True, len(rows), (float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                       keypoints, float(conf), angle, matrix)


def align_face(image: np.ndarray, settings: AlignSettings = AlignSettings(), detector=None) -> AlignResult:
    """Align one face: ``image`` is ``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8 0-255.

    Returns an :class:`AlignResult`; with no face found, ``found`` is False and ``image`` is the
    original resized to ``settings.size`` (never an exception). ``detector``: an ``mtcnn.MTCNN``
    (default: :func:`get_detector`).
    """
    rgb = _as_rgb_uint8(image)
    canvas, scale, pad = _detection_canvas(rgb, settings)
    rows = _detect([canvas], settings, detector)[0]
    return _align_from_rows(rgb, rows, scale, pad, settings)


@dataclass
class BatchAlignment:
    """The alignment of many images, as arrays.

    ``images``: ``(N, size, size)`` uint8 (gray) or ``(N, size, size, 3)``; ``found``: ``(N,)``
    bool; ``confidence`` and ``angle`` (degrees): ``(N,)`` float32, NaN where no face was found;
    ``boxes``: ``(N, 4)`` float32 ``(x, y, w, h)`` in input pixels, NaN where no face was found;
    ``seconds``: wall time of the alignment (0 when read from the cache).
    """

    images: np.ndarray
    found: np.ndarray
    confidence: np.ndarray
    angle: np.ndarray
    boxes: np.ndarray
    seconds: float = 0.0

    @property
    def detection_rate(self) -> float:
        return float(self.found.mean()) if len(self.found) else float("nan")

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(len(self.found), 1)


def align_batch(images, settings: AlignSettings = FER_SETTINGS, batch_size: int = 128, detector=None,
                progress: bool = True) -> BatchAlignment:
    """Align many images: ``(N, H, W)`` gray or ``(N, H, W, 3)`` RGB uint8 (or a list of such
    images of one size). MTCNN runs on ``batch_size`` images at once (about 5x faster than one by
    one on a CPU). Images without a face keep the original, resized."""
    n = len(images)
    out_shape = (settings.size, settings.size) if settings.gray else (settings.size, settings.size, 3)
    result = BatchAlignment(np.zeros((n, *out_shape), np.uint8), np.zeros(n, bool), np.full(n, np.nan, np.float32),
                            np.full(n, np.nan, np.float32), np.full((n, 4), np.nan, np.float32))
    t0 = time.perf_counter()
    with tqdm(total=n, desc="MTCNN alignment", unit="face", disable=not progress, mininterval=2) as bar:
        for start in range(0, n, batch_size):
            rgbs = [_as_rgb_uint8(img) for img in images[start:start + batch_size]]
            prepared = [_detection_canvas(rgb, settings) for rgb in rgbs]
            rows = _detect([c for c, _, _ in prepared], settings, detector)
            for j, (rgb, (_, scale, pad), face_rows) in enumerate(zip(rgbs, prepared, rows)):
                res = _align_from_rows(rgb, face_rows, scale, pad, settings)
                i = start + j
                result.images[i] = res.image
                if res.found:
                    result.found[i] = True
                    result.confidence[i], result.angle[i] = res.confidence, res.angle
                    result.boxes[i] = res.box
            bar.update(len(rgbs))
            bar.set_postfix(found=f"{result.found[:start + len(rgbs)].mean():.1%}")
    result.seconds = time.perf_counter() - t0
    return result


@dataclass
class AlignedDataset:
    """An aligned copy of a FER dataset and, per image, what the alignment did.

    ``dataset``: the :class:`FERDataset` with aligned 48x48 faces (originals where no face was
    found); ``alignment``: the :class:`BatchAlignment` (flags, angles, boxes; ``images`` is
    ``dataset.pixels``); ``settings``; ``cache_file`` (None when not cached).
    """

    dataset: FERDataset
    alignment: BatchAlignment
    settings: AlignSettings
    cache_file: Path | None = None

    @property
    def found(self) -> np.ndarray:
        """``(N,)`` bool: a face was found (and the image aligned)."""
        return self.alignment.found


def align_cache_path(ds: FERDataset, settings: AlignSettings) -> Path:
    """``<cache_dir>/aligned-<fingerprint>-<settings key>.npz``."""
    return config.cache_dir() / f"aligned-{ds.fingerprint}-{settings.key()}.npz"


def align_dataset(ds: FERDataset, settings: AlignSettings = FER_SETTINGS, cache: bool = True,
                  batch_size: int = 128, progress: bool = True, detector=None) -> AlignedDataset:
    """Align every face of ``ds`` (48x48 gray output, which ``FERDataset`` requires).

    The result is cached in ``config.cache_dir()`` keyed by the dataset fingerprint and the
    settings, so it is computed once (11-14 ms per face with batched detection on a busy 2-core CPU with
    :data:`FER_SETTINGS`). The aligned dataset keeps labels, usage and notes, and adds a note.
    """
    if settings.size != IMAGE_SIZE or not settings.gray:
        raise ValueError(f"align_dataset makes a FERDataset: settings need size={IMAGE_SIZE}, gray=True "
                         "(use align_batch for other sizes)")
    path = align_cache_path(ds, settings) if cache else None
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            result = BatchAlignment(z["images"], z["found"], z["confidence"], z["angle"], z["boxes"],
                                    float(z["seconds"]))
        if len(result.found) != len(ds):
            raise ValueError(f"{path}: cached alignment has {len(result.found)} images, the dataset {len(ds)}")
        print(f"aligned faces read from {path.name} (computed once in {result.seconds / 60:.1f} min)")
    else:
        result = align_batch(ds.pixels, settings, batch_size=batch_size, detector=detector, progress=progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez_compressed(tmp, images=result.images, found=result.found, confidence=result.confidence,
                                angle=result.angle, boxes=result.boxes, seconds=result.seconds,
                                settings=json.dumps(settings.params()))
            os.replace(tmp, path)
    note = (f"aligned with MTCNN (rotated to level eyes, cropped, {settings.size}x{settings.size}): face found in "
            f"{result.found.sum():,} of {len(ds):,} images ({result.detection_rate:.1%}); the others kept as they were")
    aligned = FERDataset(result.images, ds.labels, ds.usage, f"{ds.name}-aligned", ds.source, ds.synthetic,
                         [*ds.notes, note], ds.class_names, ds.label_source, ds.ferplus)
    result.images = aligned.pixels
    return AlignedDataset(aligned, result, settings, path)


def detection_rates(ds: FERDataset, found: np.ndarray) -> pd.DataFrame:
    """Share of images with a face found, per class (rows, plus ``all``) and split (columns, plus
    ``all``), as fractions 0-1."""
    found = np.asarray(found, dtype=bool)
    frame = pd.DataFrame({"class": pd.Categorical([CLASS_NAMES[y] for y in ds.labels], categories=CLASS_NAMES),
                          "split": pd.Categorical(ds.usage, categories=USAGES), "found": found})
    table = frame.pivot_table(index="class", columns="split", values="found", aggfunc="mean",
                               observed=False, dropna=False)
    table["all"] = frame.groupby("class", observed=False)["found"].mean()
    table.loc["all"] = [*(frame.groupby("split", observed=False)["found"].mean()[list(USAGES)]), found.mean()]
    table.index.name, table.columns.name = "class", "split"
    return table.astype(float)


def compare_predictions(y_true: np.ndarray, pred_before: np.ndarray, pred_after: np.ndarray, found: np.ndarray,
                        names: tuple[str, str] = ("original", "aligned")) -> tuple[pd.DataFrame, float]:
    """Accuracy (%) of two models' predictions ``(N,)`` on the same ``N`` images, on all of them
    and split by whether a face was found (``found``, ``(N,)`` bool), and the two-sided exact
    McNemar p-value of the difference on all images (``evaluate.mcnemar_p``)."""
    y_true, found = np.asarray(y_true), np.asarray(found, dtype=bool)
    right_a, right_b = np.asarray(pred_before) == y_true, np.asarray(pred_after) == y_true
    rows = {}
    for subset, mask in (("all", np.ones_like(found)), ("face found", found), ("no face found", ~found)):
        rows[subset] = {"images": int(mask.sum()),
                        names[0]: 100 * right_a[mask].mean() if mask.any() else np.nan,
                        names[1]: 100 * right_b[mask].mean() if mask.any() else np.nan}
    table = pd.DataFrame(rows).T
    table["difference"] = table[names[1]] - table[names[0]]
    table["images"] = table["images"].astype(int)
    return table, mcnemar_p(y_true, pred_before, pred_after)

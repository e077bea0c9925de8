"""A procedurally generated stand-in for FER2013, for tests and for runs without the real data.

Each image is a 48x48 grayscale cartoon face whose eyebrows, eyes and mouth follow the
expression (a smile for happy, raised brows and an open mouth for surprise, ...), with random
pose, size, lighting, noise and cue strength, and a small share of flipped labels, so a model
can learn it but not trivially. Classes follow FER2013's imbalance and the official 80/10/10
Usage proportions.

Also the demo and test clip (:func:`make_test_clip`): a real face photo that ships with
scikit-image moving over a background, with FER2013 faces pasted beside it, for the real-time
recognizer without a camera.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from .config import CLASS_NAMES, IMAGE_SIZE, TEST, TRAIN, VAL
from .data import FERDataset, sample_per_class

#: FER2013's images per class (all splits), used for the stand-in's class shares.
FER2013_CLASS_COUNTS = np.array([4953, 547, 5121, 8989, 6077, 4002, 6198])
SYNTHETIC_NOTE = (
    "SYNTHETIC STAND-IN: procedurally generated cartoon faces, not FER2013. "
    "Numbers measure the pipeline, not facial expression recognition."
)

# Per class: brow tilt (inner end down > 0), brow lift, eye height, mouth curve (smile > 0),
# mouth opening, mouth width.
_CUES = {
    "angry": dict(tilt=4, lift=0, eye=2, curve=-1, open=0, width=6),
    "disgust": dict(tilt=2, lift=-1, eye=1, curve=-2, open=1, width=5, wrinkle=True),
    "fear": dict(tilt=-3, lift=2, eye=4, curve=-1, open=3, width=8),
    "happy": dict(tilt=0, lift=0, eye=2, curve=4, open=1, width=9),
    "sad": dict(tilt=-3, lift=0, eye=2, curve=-4, open=0, width=7),
    "surprise": dict(tilt=0, lift=4, eye=4, curve=0, open=6, width=5),
    "neutral": dict(tilt=0, lift=0, eye=2, curve=0, open=0, width=7),
}


def synthetic_face(label: int, rng: np.random.Generator, scale: int = 4) -> np.ndarray:
    """One 48x48 uint8 face showing expression ``label`` (drawn at ``scale``x, then shrunk)."""
    cue = _CUES[CLASS_NAMES[label]]
    s = scale
    size = IMAGE_SIZE * s
    strength = rng.uniform(0.5, 1.2)  # how pronounced the expression is
    background = rng.uniform(20, 120)
    img = np.full((size, size), background, np.float32)
    img += np.linspace(0, rng.uniform(-40, 40), size)[None, :]  # side lighting
    cx, cy = size / 2 + rng.normal(0, 2 * s), size / 2 + rng.normal(0, 2 * s)
    face_w, face_h = rng.uniform(15, 19) * s, rng.uniform(19, 23) * s
    skin = rng.uniform(120, 210)
    dark = skin - rng.uniform(70, 110)

    def pt(x, y):  # face coordinates (units of the 48 grid, origin at the face centre) -> pixels
        return int(cx + x * face_w / 17), int(cy + y * face_h / 21)

    cv2.ellipse(img, pt(0, 0), (int(face_w), int(face_h)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    for side in (-1, 1):
        ex, ey = pt(7 * side, -5)
        eye_h = max(1, cue["eye"] * strength + rng.normal(0, 0.4))
        cv2.ellipse(img, (ex, ey), (int(3 * s), int(eye_h * s * 0.7)), 0, 0, 360, dark, -1)
        lift = cue["lift"] * strength
        inner, outer = pt(3 * side, -9 - lift + cue["tilt"] * strength * 0.6), pt(11 * side, -9 - lift)
        cv2.line(img, inner, outer, dark, int(1.5 * s), cv2.LINE_AA)
    if cue.get("wrinkle"):
        for dx in (-2, 2):
            cv2.line(img, pt(dx, -2), pt(dx * 0.5, 2), dark + 30, max(1, s // 2), cv2.LINE_AA)
    cv2.line(img, pt(0, -2), pt(0, 4), skin - 30, max(1, s // 2), cv2.LINE_AA)  # nose
    width = cue["width"] * (0.8 + 0.3 * strength)
    curve, opening = cue["curve"] * strength, cue["open"] * strength
    xs = np.linspace(-width, width, 24)
    upper = 11 - curve * (xs / width) ** 2 - opening / 2
    lower = 11 - curve * (xs / width) ** 2 + opening / 2 + 0.6
    polygon = np.array([pt(x, y) for x, y in zip(xs, upper)] + [pt(x, y) for x, y in zip(xs[::-1], lower[::-1])])
    cv2.fillPoly(img, [polygon.astype(np.int32)], dark, cv2.LINE_AA)
    rotation = cv2.getRotationMatrix2D((cx, cy), rng.normal(0, 8), rng.uniform(0.9, 1.1))
    img = cv2.warpAffine(img, rotation, (size, size), borderMode=cv2.BORDER_REFLECT)
    img = cv2.resize(img, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    img = img * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(3, 12), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_synthetic_fer(n: int = 3500, seed: int = 0, label_noise: float = 0.05) -> FERDataset:
    """A FER2013-shaped stand-in of ``n`` faces: FER2013 class shares, 80/10/10 official splits.

    Every split holds every class (for ``n`` >= 70). ``label_noise`` is the share of labels
    replaced by a random class, so accuracy cannot reach 100%.
    """
    if n < 70:
        raise ValueError(f"n={n}: need at least 70 images so every split holds every class")
    rng = np.random.default_rng(seed)
    shares = FER2013_CLASS_COUNTS / FER2013_CLASS_COUNTS.sum()
    per_class = np.maximum(np.round(shares * n).astype(int), 10)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    usage = np.empty(len(labels), dtype=object)
    for idx in sample_per_class(labels, seed=rng):  # at least one val and test image per class
        n_eval = max(1, int(round(0.1 * len(idx))))
        usage[idx[:n_eval]], usage[idx[n_eval:2 * n_eval]], usage[idx[2 * n_eval:]] = VAL, TEST, TRAIN
    order = rng.permutation(len(labels))
    labels, usage = labels[order], usage[order].astype(str)
    pixels = np.stack([synthetic_face(int(y), rng) for y in labels])
    noisy = rng.random(len(labels)) < label_noise
    labels = np.where(noisy, rng.integers(0, len(CLASS_NAMES), len(labels)), labels)
    return FERDataset(pixels, labels, usage, name="synthetic", source=f"make_synthetic_fer(n={n}, seed={seed})",
                      synthetic=True, notes=[SYNTHETIC_NOTE])


# ---------------------------------------------------------------------------------------------
# A test clip from real face photos


def astronaut_face() -> np.ndarray:
    """The head of ``skimage.data.astronaut()`` (Eileen Collins, public domain) as a BGR crop
    ``(190, 160, 3)``: a real frontal face photo that ships with scikit-image."""
    from skimage import data

    rgb = data.astronaut()[25:215, 145:305]
    return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _paste(frame: np.ndarray, patch: np.ndarray, cx: float, cy: float) -> None:
    """Blend ``patch`` (BGR) into ``frame`` centred at (cx, cy) through a soft elliptical mask."""
    ph, pw = patch.shape[:2]
    mask = np.zeros((ph, pw), np.float32)
    cv2.ellipse(mask, (pw // 2, ph // 2), (int(pw * 0.47), int(ph * 0.49)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, pw * 0.04))[..., None]
    x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(frame.shape[1], x0 + pw), min(frame.shape[0], y0 + ph)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    sub_patch = patch[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
    sub_mask = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    frame[fy0:fy1, fx0:fx1] = (sub_mask * sub_patch + (1 - sub_mask) * region).astype(np.uint8)


def clip_schedule(n_frames: int, n_fer_faces: int, no_face_frames: int = 4) -> np.ndarray:
    """Which of the ``n_fer_faces`` pasted faces each frame of :func:`make_test_clip` shows
    (int ``(n_frames,)``, -1 where none): equal runs of frames, in order, after the
    background-only frames."""
    out = np.full(n_frames, -1)
    if n_fer_faces:
        shown = np.arange(max(0, n_frames - no_face_frames))
        out[no_face_frames:] = shown * n_fer_faces // max(1, n_frames - no_face_frames)
    return out


def make_test_clip(n_frames: int = 60, size: tuple[int, int] = (640, 480), fer_faces: np.ndarray | None = None,
                   no_face_frames: int = 4, seed: int = 0, path: str | os.PathLike | None = None,
                   fps: float = 15.0) -> list[np.ndarray]:
    """A clip of BGR frames ``(H, W, 3)`` (``size`` = (W, H)) for demos and tests without a camera.

    The astronaut's face photo (:func:`astronaut_face`) moves slowly over a textured
    background, a little larger and smaller over time; the first ``no_face_frames`` frames show
    the background only (the "no face" case). ``fer_faces`` (uint8 ``(K, 48, 48)``, e.g.
    FER2013 PrivateTest faces) are pasted enlarged beside it, one after another
    (:func:`clip_schedule` says which face each frame shows). With ``path``
    the clip is also written there as a video (mp4v). Returns the frames.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([90 + 60 * yy / height, 110 + 40 * xx / width, 140 - 50 * yy / height], axis=-1)
    background += rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    background = np.clip(background, 0, 255).astype(np.uint8)
    head = astronaut_face()
    head_scale = 1.25 * height / 480
    frames, schedule = [], clip_schedule(n_frames, 0 if fer_faces is None else len(fer_faces), no_face_frames)
    for i in range(n_frames):
        frame = background.copy()
        if i >= no_face_frames:
            t = (i - no_face_frames) / max(1, fps)
            scale = head_scale * (1 + 0.08 * math.sin(0.9 * t))
            patch = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            cx = width * (0.28 if fer_faces is not None else 0.5) + 0.06 * width * math.sin(0.7 * t)
            cy = height * 0.5 + 0.04 * height * math.sin(1.3 * t)
            _paste(frame, patch, cx, cy)
            if schedule[i] >= 0:
                face = np.asarray(fer_faces[schedule[i]])
                side = int(0.3 * height)
                big = cv2.cvtColor(cv2.resize(face.astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC),
                                  cv2.COLOR_GRAY2BGR)
                top, left = int(0.5 * height - side / 2), int(0.8 * width - side / 2)
                frame[top:top + side, left:left + side] = big
        frames.append(frame)
    if path is not None:
        from .realtime import write_video  # the video writer of the recognizer's own outputs

        write_video(frames, path, fps)
    return frames

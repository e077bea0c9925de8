"""A procedurally generated stand-in for FER2013, for tests and for runs without the real data.

Each image is a 48x48 grayscale cartoon face whose eyebrows, eyes and mouth follow the
expression (a smile for happy, raised brows and an open mouth for surprise, ...), with random
pose, size, lighting, noise and cue strength, and a small share of flipped labels, so a model
can learn it but not trivially. Classes follow FER2013's imbalance and the official 80/10/10
Usage proportions. Every face also gets ten generated FER+ votes (``FERDataset.ferplus``) around
its drawn expression, so the FER+ path runs on the stand-in too.

(The demo and test clip made from a real face photo, ``make_test_clip``, is the recognizer's:
it lives in :mod:`fer_utils.samples`.)
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import CLASS_NAMES, FERPLUS_EMOTIONS, FERPLUS_TO_CLASS, IMAGE_SIZE, TEST, TRAIN, VAL
from .data import FERPLUS_COLUMNS, FERDataset, FerPlusVotes, sample_per_class

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
    votes = synthetic_votes(labels, seed)
    noisy = rng.random(len(labels)) < label_noise
    labels = np.where(noisy, rng.integers(0, len(CLASS_NAMES), len(labels)), labels)
    return FERDataset(pixels, labels, usage, name="synthetic", source=f"make_synthetic_fer(n={n}, seed={seed})",
                      synthetic=True, notes=[SYNTHETIC_NOTE], ferplus=votes)


def synthetic_votes(labels: np.ndarray, seed: int = 0, not_a_face: float = 0.01) -> FerPlusVotes:
    """Ten generated FER+ votes per face (FER+'s column order) around its drawn expression
    ``labels`` (FER2013's classes): a clear share on it, the rest on one confusable emotion and a
    little everywhere (contempt and unknown included), so some faces have no majority; a share
    ``not_a_face`` of faces get only NF votes. Its own generator (seeded), so the faces stay as before."""
    rng = np.random.default_rng([seed, 33])
    column = {FERPLUS_TO_CLASS[e]: i for i, e in enumerate(FERPLUS_EMOTIONS)}
    n_columns, n_emotions = len(FERPLUS_COLUMNS), len(FERPLUS_EMOTIONS)
    counts = np.zeros((len(labels), n_columns), np.int64)
    for i, label in enumerate(labels):
        shares = np.full(n_columns, 0.0)
        shares[:n_emotions + 1] = 0.15 / (n_emotions + 1)  # a little on every emotion and unknown
        shares[rng.integers(n_emotions)] += 0.25  # a confusable emotion
        clarity = rng.uniform(0.3, 1.0)
        shares = (1 - clarity) * shares / shares.sum()
        shares[column[CLASS_NAMES[label]]] += clarity
        counts[i] = rng.multinomial(10, shares)
    counts[rng.random(len(labels)) < not_a_face] = np.eye(n_columns, dtype=np.int64)[-1] * 10
    return FerPlusVotes(counts, source=f"synthetic_votes(seed={seed})")

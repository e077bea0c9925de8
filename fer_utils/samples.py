"""Sample media made from a real face photo: the browser app's sample photo and the demo and test clip.

:func:`astronaut` is ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain; a
512x512 RGB portrait that ships with scikit-image); :func:`make_test_clip` moves her face over a
background, with FER2013 faces pasted beside it, for the real-time recognizer without a camera
(``fer-predict make-clip``, notebook 10, the tests). scikit-image is optional (the ``app``
extra brings it); without it these raise ``extras.MissingExtra``, one line naming the extra.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from .extras import require
from .media import write_video


def astronaut() -> np.ndarray:
    """``skimage.data.astronaut()``: RGB uint8 ``(512, 512, 3)``, one smiling frontal face."""
    # scikit-image is optional (the `app` extra), so imported here
    return np.ascontiguousarray(require("skimage.data", "app", "the sample photo (skimage.data.astronaut)")
                                .astronaut())


def astronaut_face() -> np.ndarray:
    """The head of :func:`astronaut` as a BGR crop ``(190, 160, 3)``: a real frontal face photo."""
    return np.ascontiguousarray(cv2.cvtColor(astronaut()[25:215, 145:305], cv2.COLOR_RGB2BGR))


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
        write_video(frames, path, fps)
    return frames

"""Notebook 10's study code: the real-time recognizer measured (frame rate and latency by
detector), compared with the ``fer`` package, and shown live inside a notebook.

The recognizer itself is runtime code (``detection``, ``media``, ``recognizer``; the CLI and
the app run it without this module); this module holds only what chapter 10 adds to study it,
and the chapter's notebook imports it beside them. (It was the second half of ``realtime.py``,
which held both.)
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from .media import resize_to_width
from .recognizer import RunResult
from .timing import Stopwatch


class InlineDisplay:
    """Shows the latest annotated frame in a notebook cell, updated in place (for live sources):
    ``recognizer.run_pipeline(source, recognizer, display=InlineDisplay())``."""

    def __init__(self, every: int = 1, width: int = 480):
        from IPython.display import Image, display  # IPython: there only inside a notebook (`notebooks` extra)

        self._image, self.every, self.width, self.count = Image, max(1, every), width, 0
        self.handle = display(Image(data=self._encode(np.zeros((10, 10, 3), np.uint8))), display_id=True)

    def _encode(self, frame):
        small, _ = resize_to_width(frame, self.width)
        return cv2.imencode(".jpg", small)[1].tobytes()

    def show(self, frame: np.ndarray) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.handle.update(self._image(data=self._encode(frame)))

    __call__ = show


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
    with Stopwatch() as watch:
        with_face = sum(bool(detector.detect_emotions(frame)) for frame in frames)
    return {"frames": len(frames), "fps": len(frames) / watch.seconds, "ms_per_frame": watch.ms_per(len(frames)),
            "frames_with_face": with_face}

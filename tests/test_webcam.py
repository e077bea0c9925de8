"""Notebook 10's study code (``fer_utils.webcam``): the latency table of several recognizer
options and the ``fer`` package's frame rate (skipped without it)."""

import numpy as np

from fer_utils import samples, webcam
from fer_utils.recognizer import Recognizer, run_pipeline


def uniform(faces: np.ndarray) -> np.ndarray:
    """A stand-in classifier: the same probability for every class."""
    return np.full((len(faces), 7), 1 / 7, np.float32)


def test_latency_table_has_one_row_per_option():
    clip = samples.make_test_clip(6, no_face_frames=1, fps=10)
    results = {name: run_pipeline(clip, Recognizer(uniform, "haar", every), progress=False)
               for name, every in (("every frame", 1), ("every 3", 3))}
    table = webcam.latency_table(results)
    assert list(table.index) == ["every frame", "every 3"]
    assert {"fps", "detect_ms", "classify_ms", "total_ms", "frames_with_face"} <= set(table.columns)


def test_the_fer_package_frame_rate_is_skipped_without_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fer(name, *args, **kwargs):
        if name == "fer":
            raise ImportError("No module named 'fer'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fer)
    assert webcam.fer_package_fps([np.zeros((48, 48, 3), np.uint8)]) is None

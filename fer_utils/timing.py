"""Timing, written once: :class:`Stopwatch` (one block, and its milliseconds per item) and
:func:`time_calls` (untimed warm-up calls, then calls timed one by one: what a latency or
throughput figure is taken from). Standard library and numpy only.

A per-stage timer of the video pipeline (``recognizer.LatencyStats``) is something else: it
times each stage of every frame as the frames go by, not one thing repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


class Stopwatch:
    """Wall-clock seconds of a ``with`` block (``perf_counter``)::

        with Stopwatch() as watch:
            model.predict(faces)
        watch.seconds, watch.ms_per(len(faces))
    """

    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start

    def ms_per(self, items: int) -> float:
        """Milliseconds per item of the block's ``items`` (faces, frames)."""
        return 1000 * self.seconds / max(items, 1)


def time_calls(call: Callable[[int], object], repeats: int, warmup: int = 0, max_seconds: float | None = None,
               min_calls: int = 5) -> np.ndarray:
    """Seconds of each timed call of ``call(i)``: ``warmup`` untimed calls first (``i`` = 0 ...
    ``warmup - 1``), then up to ``repeats`` calls timed one by one (``i`` counting on), fewer once
    they took more than ``max_seconds`` in all (at least ``min_calls``, or all when fewer are
    asked)."""
    for i in range(warmup):
        call(i)
    times, start = [], time.perf_counter()
    for i in range(warmup, warmup + repeats):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and len(times) >= min_calls and time.perf_counter() - start > max_seconds:
            break
    return np.asarray(times)

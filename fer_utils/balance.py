"""Class balancing of the TRAINING split: resampling with imbalanced-learn, augmentation, weights.

Callers pass the training split only (``x`` uint8 ``(N, 48, 48)``, ``y`` int ``(N,)`` in 0..6);
balancing before the train/test split would put copies or interpolations of test images into
training. Inputs are never modified. Every method returns uint8 images again (interpolated or
augmented pixels are rounded and clipped to 0..255) in a :class:`BalanceResult`, with its wall
time, peak extra memory and class counts.

Methods (``METHODS``), all with imbalanced-learn's samplers where one exists:

* ``none``: the input unchanged (a copy);
* ``ros``: ``RandomOverSampler``, every class duplicated up to the target (default: largest class);
* ``rus``: ``RandomUnderSampler``, every class cut down to the target (default: smallest class);
* ``hybrid``: ``RandomUnderSampler`` for classes above the target, then ``RandomOverSampler`` for
  those below (default target: the median class count);
* ``smote``: ``SMOTE`` in pixel space (float32), every class up to the target (default: largest);
* ``smote_tomek`` / ``smote_enn``: the same SMOTE, then imbalanced-learn's ``TomekLinks`` /
  ``EditedNearestNeighbours`` (both with ``sampling_strategy="all"``, as in ``SMOTETomek`` /
  ``SMOTEENN``). The cleaning step's neighbour search runs on a randomized PCA projection
  (``pca_components``, default 64) of the resampled images, not on all 2304 pixels, so it takes
  seconds to minutes on a 2-core CPU; the rows it keeps are taken from the pixel-space set.
  ``clean_space="pixels"`` runs it on the raw pixels instead (slower, same idea);
* ``augment``: augmented copies of the images of every class below the target, up to the target
  (default: largest), as in write-up 004's "balanced by augmentation", made by the training
  augmentation (``models.make_augmenter("standard")``: flip, shift, rotation, zoom, noise; seeded).

``target`` is an int or one of ``"max"``, ``"min"``, ``"median"``, ``"mean"`` (of the class
counts). Over-samplers raise every class below it to it, ``rus`` lowers every class above it to
it, ``hybrid`` does both. :func:`class_weights` is the alternative that leaves the data alone.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import psutil
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.under_sampling import EditedNearestNeighbours, RandomUnderSampler, TomekLinks
from scipy.optimize import minimize_scalar
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.class_weight import compute_class_weight

from .config import CLASS_NAMES, NUM_CLASSES
from .data import sample_per_class
from .models import make_augmenter
from .progress import tqdm

METHODS: tuple[str, ...] = ("none", "ros", "rus", "hybrid", "smote", "smote_tomek", "smote_enn", "augment")

#: The target each method uses when ``target`` is None.
DEFAULT_TARGETS: dict[str, str] = {
    "none": "max", "ros": "max", "rus": "min", "hybrid": "median", "smote": "max",
    "smote_tomek": "max", "smote_enn": "max", "augment": "max",
}

#: What each method does, in one line (for tables and figure titles).
DESCRIPTIONS: dict[str, str] = {
    "none": "no balancing",
    "ros": "random oversampling (duplicates)",
    "rus": "random undersampling",
    "hybrid": "undersample above / oversample below the median",
    "smote": "SMOTE (pixel space)",
    "smote_tomek": "SMOTE, then Tomek links removed",
    "smote_enn": "SMOTE, then edited nearest neighbours removed",
    "augment": "augmented copies of the smaller classes",
}


@dataclass
class BalanceResult:
    """A balanced training set and what it cost.

    ``x``: uint8 ``(M, 48, 48)``; ``y``: int64 ``(M,)``; ``seconds``: wall time of the call;
    ``peak_memory_mb``: peak process RSS during the call minus RSS at its start (MiB, sampled
    every 10 ms: what the method needed on top of what was already loaded); ``counts_before`` /
    ``counts_after``: int64 ``(7,)`` images per class; ``is_synthetic``: bool ``(M,)``, True for
    new images (SMOTE interpolations, augmented copies; ROS duplicates are copies, not new);
    ``source_index``: int64 ``(M,)``, the input row each output row copies or augments, -1 for
    interpolations; ``target``: the resolved target count; ``params`` the settings used and
    ``notes`` anything a reader must know (e.g. a reduced ``k_neighbors``).
    """

    x: np.ndarray
    y: np.ndarray
    method: str
    seconds: float
    peak_memory_mb: float
    counts_before: np.ndarray
    counts_after: np.ndarray
    is_synthetic: np.ndarray
    source_index: np.ndarray
    target: int | None = None
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def summary(self) -> dict:
        """One table row: method, time (s), peak memory (MiB), sizes and images per class."""
        row = {
            "method": self.method,
            "description": DESCRIPTIONS.get(self.method, ""),
            "seconds": round(self.seconds, 2),
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "images_before": int(self.counts_before.sum()),
            "images_after": int(self.counts_after.sum()),
            "new_images": int(self.is_synthetic.sum()),
            "target": self.target,
        }
        row.update({name: int(n) for name, n in zip(CLASS_NAMES, self.counts_after)})
        row["notes"] = "; ".join(self.notes)
        return row


# ---------------------------------------------------------------------------------------------
# Helpers


def _release_freed_memory() -> None:
    """Return memory freed earlier to the OS (glibc ``malloc_trim``), so that RSS measured from
    here on is not lowered by reusing it; a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakRSS:
    """Context manager sampling this process's RSS every ``interval`` s; ``.peak_mb`` is the
    peak minus the RSS at entry, in MiB."""

    def __init__(self, interval: float = 0.01):
        self._proc = psutil.Process()
        self.interval = interval
        self.peak_mb = 0.0

    def _watch(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __enter__(self):
        gc.collect()
        _release_freed_memory()
        self._start = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mb = (self._peak - self._start) / 2**20
        return False


def class_counts(y: np.ndarray) -> np.ndarray:
    """Images per class, int64 ``(7,)``."""
    return np.bincount(np.asarray(y, dtype=np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]


def resolve_target(counts: np.ndarray, target: int | str | None, method: str = "ros") -> int:
    """The target class count: an int as given, or ``max``/``min``/``median``/``mean`` of the
    non-empty classes' counts (``None``: the method's default, see ``DEFAULT_TARGETS``)."""
    present = counts[counts > 0]
    target = DEFAULT_TARGETS[method] if target is None else target
    if isinstance(target, str):
        stats = {"max": np.max, "min": np.min, "median": np.median, "mean": np.mean}
        if target not in stats:
            raise ValueError(f"target={target!r}: use an int or one of {sorted(stats)}")
        return int(round(float(stats[target](present))))
    if int(target) < 1:
        raise ValueError(f"target={target!r}: must be at least 1")
    return int(target)


def _check_inputs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("balance: the input is empty (0 images); pass the training split's images and labels")
    if x.ndim != 3:
        raise ValueError(f"balance: x must be (N, 48, 48) images, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"balance: y must be (N,) labels with N = {len(x)}, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ValueError(f"balance: labels must be integers in 0..{NUM_CLASSES - 1}")
    return x, y.astype(np.int64)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _up_to(counts: np.ndarray, target: int) -> dict[int, int]:
    return {c: int(max(n, target)) for c, n in enumerate(counts) if n > 0}


def _down_to(counts: np.ndarray, target: int) -> dict[int, int]:
    return {c: int(min(n, target)) for c, n in enumerate(counts) if n > 0}


# ---------------------------------------------------------------------------------------------
# The methods; each returns (x uint8 (M, H, W), y int64 (M,), is_synthetic, source_index, notes)


def _none(x, y, *_, **__):
    n = len(y)
    return x.copy(), y.copy(), np.zeros(n, bool), np.arange(n), []


def _random(x, y, counts, target, seed, kind, **_):
    # Random samplers pick rows without looking at the pixels, so they resample row numbers and
    # the images are gathered once at the end (no intermediate copies of the pixels).
    index = np.arange(len(y))
    if kind in ("rus", "hybrid"):
        rus = RandomUnderSampler(sampling_strategy=_down_to(counts, target), random_state=seed)
        index = rus.fit_resample(index[:, None], y[index])[0][:, 0]
    if kind in ("ros", "hybrid"):
        ros = RandomOverSampler(sampling_strategy=_up_to(class_counts(y[index]), target), random_state=seed)
        index = ros.fit_resample(index[:, None], y[index])[0][:, 0]
    return x[index], y[index], np.zeros(len(index), bool), index, []


def _smote_float(x, y, counts, target, seed, k_neighbors, n_jobs):
    """SMOTE on float32 pixels; returns (X float32 (M, D) rounded to integers, y, notes)."""
    notes = []
    strategy = _up_to(counts, target)
    growing = [c for c, n in strategy.items() if n > counts[c]]
    if growing:
        smallest = min(growing, key=lambda c: counts[c])
        if counts[smallest] < 2:
            raise ValueError(
                f"SMOTE needs at least 2 images of every class it oversamples; class "
                f"{CLASS_NAMES[smallest]!r} has {counts[smallest]}"
            )
        if counts[smallest] <= k_neighbors:
            notes.append(f"k_neighbors reduced from {k_neighbors} to {counts[smallest] - 1}: "
                         f"class {CLASS_NAMES[smallest]!r} has only {counts[smallest]} images")
            k_neighbors = int(counts[smallest] - 1)
    flat = x.reshape(len(x), -1).astype(np.float32)
    if not growing:
        return flat, y.copy(), notes, k_neighbors
    nn = NearestNeighbors(n_neighbors=k_neighbors + 1, n_jobs=n_jobs)
    smote = SMOTE(sampling_strategy=strategy, k_neighbors=nn, random_state=seed)
    xs, ys = smote.fit_resample(flat, y)
    del flat
    np.rint(xs, out=xs)
    np.clip(xs, 0, 255, out=xs)
    return xs, ys.astype(np.int64), notes, k_neighbors


def _smote(x, y, counts, target, seed, k_neighbors=5, n_jobs=None, clean=None, clean_space="pca",
           pca_components=64, progress=True, **_):
    stages = ["SMOTE"] + ([f"PCA ({pca_components})"] if clean and clean_space == "pca" else []) + \
             ([clean] if clean else [])
    bar = tqdm(total=len(stages), desc=f"smote+{clean}", disable=not (progress and clean), leave=False)
    bar.set_postfix_str(stages[0])
    xs, ys, notes, k_used = _smote_float(x, y, counts, target, seed, k_neighbors, n_jobs)
    bar.update()
    n = len(y)
    source = np.concatenate([np.arange(n), np.full(len(ys) - n, -1)])
    synthetic = source < 0
    if clean:
        if clean_space == "pca":
            bar.set_postfix_str(stages[1])
            pca = PCA(n_components=min(pca_components, *xs.shape), svd_solver="randomized", random_state=seed)
            space = pca.fit_transform(xs).astype(np.float32)
            notes.append(f"{clean} neighbours searched on a {pca.n_components_}-component PCA of the "
                         f"resampled images ({100 * pca.explained_variance_ratio_.sum():.1f}% of the variance)")
            bar.update()
        elif clean_space == "pixels":
            space = xs
            notes.append(f"{clean} neighbours searched on all {xs.shape[1]} pixels")
        else:
            raise ValueError(f"clean_space={clean_space!r}: choose 'pca' or 'pixels'")
        bar.set_postfix_str(stages[-1])
        if clean == "tomek":
            cleaner = TomekLinks(sampling_strategy="all", n_jobs=n_jobs)
        else:
            cleaner = EditedNearestNeighbours(sampling_strategy="all", n_neighbors=3, kind_sel="all", n_jobs=n_jobs)
        cleaner.fit_resample(space, ys)
        keep = np.sort(cleaner.sample_indices_)
        del space
        xs, ys, source, synthetic = xs[keep], ys[keep], source[keep], synthetic[keep]
        bar.update()
    bar.close()
    images = xs.astype(np.uint8).reshape((len(xs),) + x.shape[1:])
    return images, ys, synthetic, source, notes


def _augment(x, y, counts, target, seed, progress=True, batch_size=256, **_):
    """Augmented copies of the images of every class below the target, each drawn about equally
    often, made by the training augmentation (``models.make_augmenter("standard")``: the same
    Keras layers and settings as augmented training)."""
    rng = np.random.default_rng(seed)
    sources = []
    for c, n in enumerate(counts):
        if 0 < n < target:
            idx = np.flatnonzero(y == c)
            reps = -(-(target - n) // n)  # each image used about equally often
            sources.append(np.concatenate([rng.permutation(idx) for _ in range(reps)])[: target - n])
    sources = np.concatenate(sources) if sources else np.zeros(0, np.int64)
    augmenter = make_augmenter("standard", seed=seed)
    new = np.empty((len(sources),) + x.shape[1:], np.uint8)
    for lo in tqdm(range(0, len(sources), batch_size), desc="augmenting", unit=" batch", disable=not progress,
                   leave=False):
        batch = x[sources[lo:lo + batch_size], ..., None].astype(np.float32)
        new[lo:lo + len(batch)] = _to_uint8(np.asarray(augmenter(batch, training=True))[..., 0])
    n = len(y)
    images = np.concatenate([x, new])
    labels = np.concatenate([y, y[sources]])
    synthetic = np.concatenate([np.zeros(n, bool), np.ones(len(sources), bool)])
    source = np.concatenate([np.arange(n), sources])
    return images, labels, synthetic, source, []


# ---------------------------------------------------------------------------------------------
# Public API


def balance(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0, target: int | str | None = None,
            **options) -> BalanceResult:
    """Balance a training set with ``method`` (one of ``METHODS``; see the module docstring).

    ``x``: uint8 ``(N, 48, 48)``; ``y``: int ``(N,)`` in 0..6 (the training split only).
    ``seed`` makes the result reproducible; ``target``: class count to reach (int, or
    ``"max"``/``"min"``/``"median"``/``"mean"``; None = the method's default).
    ``options``: ``k_neighbors`` (SMOTE, default 5, reduced with a note when a class is smaller),
    ``n_jobs`` (default None: scikit-learn's brute-force neighbour search already uses every core), ``clean_space`` (``"pca"`` or ``"pixels"``) and ``pca_components``
    (default 64) for smote_tomek/smote_enn, ``batch_size`` (default 256) for augment, ``progress``
    (tqdm bars).
    The inputs are not modified. Raises ValueError for an unknown method, empty input, or a
    class too small for SMOTE.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a balancing method; choose one of {list(METHODS)}")
    x, y = _check_inputs(x, y)
    counts = class_counts(y)
    goal = resolve_target(counts, target, method)
    options.setdefault("progress", True)
    run = {
        "none": _none,
        "ros": partial(_random, kind="ros"),
        "rus": partial(_random, kind="rus"),
        "hybrid": partial(_random, kind="hybrid"),
        "smote": _smote,
        "smote_tomek": partial(_smote, clean="tomek"),
        "smote_enn": partial(_smote, clean="enn"),
        "augment": _augment,
    }[method]
    with _PeakRSS() as memory:
        start = time.perf_counter()
        images, labels, synthetic, source, notes = run(x, y, counts, goal, seed, **options)
        seconds = time.perf_counter() - start
    return BalanceResult(
        x=np.ascontiguousarray(images, dtype=np.uint8),
        y=np.asarray(labels, dtype=np.int64),
        method=method,
        seconds=seconds,
        peak_memory_mb=memory.peak_mb,
        counts_before=counts,
        counts_after=class_counts(labels),
        is_synthetic=np.asarray(synthetic, bool),
        source_index=np.asarray(source, np.int64),
        target=None if method == "none" else goal,
        params={"seed": seed, "target": target, **{k: v for k, v in options.items() if k != "progress"}},
        notes=notes,
    )


def balance_all(x: np.ndarray, y: np.ndarray, methods: tuple[str, ...] = METHODS, seed: int = 0,
                targets: dict[str, int | str] | None = None, **options) -> dict[str, BalanceResult]:
    """:func:`balance` with every method in ``methods`` (one progress bar); ``targets`` maps a
    method to its target (others use their default). Returns ``{method: BalanceResult}``."""
    targets = targets or {}
    results = {}
    for method in tqdm(methods, desc="balancing", disable=not options.get("progress", True)):
        results[method] = balance(x, y, method, seed=seed, target=targets.get(method), **options)
    return results


def summary_table(results: dict[str, BalanceResult]) -> pd.DataFrame:
    """One row per method: seconds, peak memory (MiB), images before/after, new images, target,
    images per class and notes."""
    table = pd.DataFrame([r.summary() for r in results.values()]).set_index("method")
    table["target"] = table["target"].astype("Int64")  # "none" has no target
    return table


def class_weights(y: np.ndarray) -> dict[int, float]:
    """"Balanced" class weights ``n_samples / (n_classes * count_c)`` for every class present in
    ``y`` (int ``(N,)``), as ``{label: weight}`` for Keras' ``class_weight``: the alternative to
    resampling that reweights the loss instead."""
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("class_weights: y is empty")
    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def synthetic_examples(result: BalanceResult, n: int = 8, seed: int = 0) -> np.ndarray:
    """Indices into ``result.x`` of ``n`` new (synthetic) rows, spread over the classes that got
    any (round robin, seeded)."""
    pools = [p for p in sample_per_class(result.y, None, seed, where=result.is_synthetic, classes=range(NUM_CLASSES))
             if len(p)]
    chosen = []
    for i in range(max((len(p) for p in pools), default=0)):
        chosen += [p[i] for p in pools if i < len(p)]
        if len(chosen) >= n:
            break
    return np.array(chosen[:n], dtype=np.int64)


def smote_parents(x_original: np.ndarray, y_original: np.ndarray, x_synthetic: np.ndarray,
                  y_synthetic: np.ndarray, n_candidates: int = 5) -> pd.DataFrame:
    """For each SMOTE image, the two original images of its class it was interpolated between.

    SMOTE makes ``s = a + t (b - a)`` with ``a``, ``b`` same-class originals and ``0 <= t < 1``.
    For every synthetic image (uint8 ``(K, 48, 48)``, labels ``(K,)``) we try its
    ``n_candidates`` nearest originals (``(N, 48, 48)``, labels ``(N,)``) as ``a``, and for each
    the original ``b`` whose segment ``a -> b`` passes closest to ``s``; the best pair wins.
    Returns one row per synthetic image: ``label``, ``parent_a``, ``parent_b`` (row indices into
    ``x_original``), ``t`` (position on the segment, 0 = ``a``, chosen to minimise the largest
    pixel error), ``max_abs_error`` and ``rms_error`` (grey levels) between the image and that
    point. Stored images are rounded to whole grey levels, so an exact pair leaves at most 0.5
    (rms about 0.29, the rounding noise).
    """
    xo = np.asarray(x_original).reshape(len(x_original), -1).astype(np.float32)
    xs = np.asarray(x_synthetic).reshape(len(x_synthetic), -1).astype(np.float32)
    yo, ys = np.asarray(y_original), np.asarray(y_synthetic)
    rows = []
    for s, label in zip(xs, ys):
        idx = np.flatnonzero(yo == label)
        if len(idx) < 2:
            raise ValueError(f"class {CLASS_NAMES[label]!r} has fewer than 2 originals")
        pool = xo[idx]
        sq = np.einsum("ij,ij->i", pool, pool)
        dist = sq - 2 * pool @ s + s @ s
        best = (np.inf, 0, 0, 0.0)
        for ia in np.argsort(dist)[:n_candidates]:
            a = pool[ia]
            v = s - a
            dot = pool @ v - a @ v  # (b - a) . (s - a) for every b
            length = sq - 2 * pool @ a + a @ a  # |b - a|^2
            t = np.clip(np.divide(dot, length, out=np.zeros_like(dot), where=length > 0), 0, 1)
            resid = v @ v - 2 * t * dot + t * t * length
            resid[ia] = np.inf
            ib = int(np.argmin(resid))
            if resid[ib] < best[0]:
                best = (resid[ib], ia, ib, float(t[ib]))
        _, ia, ib, t = best
        # Least squares placed s on the segment; the largest pixel error is smallest at a slightly
        # different t (a convex 1-D problem), where an exact pair leaves only the rounding (<= 0.5).
        v, d = s - pool[ia], pool[ib] - pool[ia]
        fit = minimize_scalar(lambda u: np.abs(v - u * d).max(), bounds=(0.0, 1.0), method="bounded",
                              options={"xatol": 1e-9})
        t = float(fit.x) if fit.fun < np.abs(v - t * d).max() else t
        error = v - t * d
        rows.append({
            "label": CLASS_NAMES[label], "parent_a": int(idx[ia]), "parent_b": int(idx[ib]), "t": t,
            "max_abs_error": float(np.abs(error).max()), "rms_error": float(np.sqrt(np.mean(error**2))),
        })
    return pd.DataFrame(rows)

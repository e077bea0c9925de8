"""Notebook 11 (write-up 003): the leakage audit.

Write-up 003 resampled ALL of FER2013 and then split it 80/10/10 (:func:`leaky_protocol`), which
puts copies (ROS) and interpolations (SMOTE) of test images into training.
:func:`resample_with_parents` records where every resampled row comes from (the SMOTE pair it was
interpolated between included), :func:`overlap_audit` counts the test images with an exact copy or
a shared source image in training, and :func:`train_leaky` trains the VGG (``fer_utils.vgg``) on
the leaky protocol. Leaky records carry ``"leaky": true`` and no ``model_file`` (their Keras file
is ``leaky_model_file``), so nothing that picks "the best model" by PublicTest accuracy
(``evaluate.trained_runs``) can ever pick a model that has seen PublicTest and PrivateTest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from sklearn.neighbors import NearestNeighbors

from . import balance
from .config import CLASS_NAMES, TEST, TRAIN, VAL, Profile
from .data import FERDataset, image_digests, stratified_split
from .evaluate import CLEAN_TEST, evaluate_predictions, metrics_record, split_metrics
from .train import display_path, fit, predict_proba, save_model
from .runs import RunRecord, RunStore
from .vgg import build_vgg, vgg_config, vgg_model_name, vgg_params

# ---------------------------------------------------------------------------------------------
# Resampling with provenance


@dataclass
class Resampled:
    """A resampled set and where each row comes from.

    ``x``: uint8 ``(M, 48, 48)``; ``y``: int64 ``(M,)``; ``is_synthetic``: bool ``(M,)`` (SMOTE
    interpolations); ``parents``: int64 ``(M, 2)``, the input rows a row copies (both columns the
    same) or was interpolated between (SMOTE: ``x ~ a + step (b - a)``); ``steps``: float ``(M,)``
    (0 for copies); ``seconds``: wall time.
    """

    method: str
    x: np.ndarray
    y: np.ndarray
    is_synthetic: np.ndarray
    parents: np.ndarray
    steps: np.ndarray
    seconds: float

    def __len__(self) -> int:
        return len(self.y)


class _TracedSMOTE(SMOTE):
    """imbalanced-learn's SMOTE, recording for every new sample its base row, neighbour row and
    step (class-local indices, in generation order). The images are imbalanced-learn's own."""

    def _fit_resample(self, X, y):
        self.trace_ = []
        return super()._fit_resample(X, y)

    def _generate_samples(self, X, nn_data, nn_num, rows, cols, steps, y_type=None, y=None):
        self.trace_.append((y_type, np.asarray(rows), np.asarray(nn_num[rows, cols]), np.asarray(steps).ravel()))
        return super()._generate_samples(X, nn_data, nn_num, rows, cols, steps, y_type, y)


def _traced_smote(x: np.ndarray, y: np.ndarray, seed: int, k_neighbors: int = 5, n_jobs=None):
    """The same SMOTE as ``balance.balance(x, y, "smote", seed)`` (every class up to the largest,
    float32 pixels, rounded), returning (images, labels, parents (M, 2), steps (M,))."""
    counts = balance.class_counts(y)
    target = balance.resolve_target(counts, None, "smote")
    strategy = {c: int(max(n, target)) for c, n in enumerate(counts) if n > 0}
    growing = [c for c, n in strategy.items() if n > counts[c]]
    n = len(y)
    if not growing:
        return x.copy(), y.copy(), np.repeat(np.arange(n)[:, None], 2, axis=1), np.zeros(n)
    smallest = min(counts[c] for c in growing)
    if smallest < 2:
        raise ValueError("SMOTE needs at least 2 images of every class it oversamples")
    k = min(k_neighbors, int(smallest) - 1)
    flat = x.reshape(n, -1).astype(np.float32)
    smote = _TracedSMOTE(sampling_strategy=strategy, k_neighbors=NearestNeighbors(n_neighbors=k + 1, n_jobs=n_jobs),
                         random_state=seed)
    xs, ys = smote.fit_resample(flat, y)
    np.rint(xs, out=xs)
    np.clip(xs, 0, 255, out=xs)
    pairs, steps = [], []
    for label, rows, neighbours, step in smote.trace_:
        members = np.flatnonzero(y == label)
        pairs.append(np.stack([members[rows], members[neighbours]], axis=1))
        steps.append(step)
    new_pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    new_steps = np.concatenate(steps) if steps else np.zeros(0)
    if len(new_pairs) != len(ys) - n:
        raise RuntimeError("SMOTE trace does not cover every new image (has imbalanced-learn changed?)")
    # The trace must reproduce the images: s = rint(a + step (b - a)) (checked in chunks: memory).
    error = 0.0
    for lo in range(0, len(new_pairs), 4096):
        a, b = flat[new_pairs[lo:lo + 4096, 0]], flat[new_pairs[lo:lo + 4096, 1]]
        rebuilt = a + new_steps[lo:lo + 4096, None].astype(np.float32) * (b - a)
        error = max(error, float(np.abs(xs[n + lo:n + lo + len(a)] - rebuilt).max()))
    if error > 0.51:
        raise RuntimeError(f"SMOTE trace does not reproduce the images (max error {error:.2f} grey levels)")
    parents = np.concatenate([np.repeat(np.arange(n)[:, None], 2, axis=1), new_pairs]).astype(np.int64)
    images = xs.astype(np.uint8).reshape((len(xs),) + x.shape[1:])
    return images, ys.astype(np.int64), parents, np.concatenate([np.zeros(n), new_steps])


def resample_with_parents(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0) -> Resampled:
    """``balance.balance(x, y, method, seed)`` for ``none``, ``ros`` or ``smote`` (the same
    images, same order), plus every row's parents: the input row(s) it copies or was
    interpolated between."""
    t0 = time.perf_counter()
    if method in ("none", "ros"):
        result = balance.balance(x, y, method, seed=seed, progress=False)
        parents = np.repeat(result.source_index[:, None], 2, axis=1)
        out = Resampled(method, result.x, result.y, result.is_synthetic, parents, np.zeros(len(result.y)), 0.0)
    elif method == "smote":
        images, labels, parents, steps = _traced_smote(np.asarray(x), np.asarray(y, dtype=np.int64), seed)
        out = Resampled(method, images, labels, np.arange(len(labels)) >= len(y), parents, steps, 0.0)
    else:
        raise ValueError(f"method={method!r}: resample_with_parents supports 'none', 'ros' and 'smote'")
    out.seconds = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------
# The leakage audit


def overlap_audit(train_pixels: np.ndarray, train_sources: np.ndarray, test_pixels: np.ndarray,
                  test_sources: np.ndarray) -> dict:
    """Which test images are not independent of a training set.

    ``*_pixels``: uint8 ``(M, 48, 48)`` / ``(K, 48, 48)``; ``*_sources``: ``(M, 2)`` / ``(K, 2)``
    pixel digests (``data.image_digests``) of the original image(s) each row was made from (a copy:
    its own source twice; a SMOTE image: its two parents). Returns ``n_test``, boolean masks
    ``(K,)`` ``exact_copy`` (the same pixels are in training), ``shared_source`` (an original the
    test image was made from also went into a training image: its own copy, or a SMOTE image
    interpolated from it or from its parents), ``leaked`` (either) and ``independent`` (neither),
    and their counts ``n_exact_copy``, ``n_shared_source``, ``n_leaked``, ``n_independent``.
    """
    train_pixel_set = set(image_digests(train_pixels))
    train_source_set = set(np.asarray(train_sources).ravel().tolist())
    exact = np.array([d in train_pixel_set for d in image_digests(test_pixels)], dtype=bool)
    shared = np.array([a in train_source_set or b in train_source_set for a, b in np.asarray(test_sources)],
                      dtype=bool)
    leaked = exact | shared
    out = {"n_test": len(exact), "exact_copy": exact, "shared_source": shared, "leaked": leaked,
           "independent": ~leaked}
    out.update({f"n_{k}": int(out[k].sum()) for k in ("exact_copy", "shared_source", "leaked", "independent")})
    return out


def audit_counts(audit: dict) -> dict:
    """The counts of an :func:`overlap_audit` (no masks), with shares in percent."""
    n = max(audit["n_test"], 1)
    out = {"test images": audit["n_test"]}
    for key, name in (("exact_copy", "exact copy in training"), ("shared_source", "source image in training"),
                      ("leaked", "either"), ("independent", "neither (independent)")):
        out[name] = audit[f"n_{key}"]
        out[f"{name} (%)"] = round(100 * audit[f"n_{key}"] / n, 2)
    return out


def honest_audit(ds: FERDataset, method: str, seed: int = 0) -> dict:
    """:func:`overlap_audit` of the honest protocol: Training resampled with ``method`` (as the
    honest models are trained) against the untouched PrivateTest split. What it finds are
    FER2013's own exact duplicates of PrivateTest images in Training."""
    x_train, y_train = ds.split(TRAIN)
    resampled = resample_with_parents(x_train, y_train, method, seed)
    digests = np.array(image_digests(x_train))
    x_test = ds.split(TEST)[0]
    test_digests = np.array(image_digests(x_test))
    audit = overlap_audit(resampled.x, digests[resampled.parents], x_test, np.stack([test_digests] * 2, axis=1))
    audit["n_synthetic_test"] = 0
    return audit


@dataclass
class LeakyProtocol:
    """Write-up 003's protocol: resample ALL images of a dataset (every official split), then a
    seeded random stratified 80/10/10 split into leaky training, validation and test sets.

    ``source``: the dataset resampled; ``resampled``: its :class:`Resampled` rows; ``usage``:
    ``(M,)`` Training/PublicTest/PrivateTest of the *leaky* split (not the official one);
    ``source_digests``: pixel digests of ``source``'s images ``(N,)``.
    """

    method: str
    source: FERDataset
    resampled: Resampled
    usage: np.ndarray
    source_digests: np.ndarray
    seed: int

    @property
    def sampling(self) -> str:
        """The ``sampling`` of its metrics files, e.g. ``leaky_ros_before_split``."""
        return f"leaky_{self.method}_before_split"

    def split(self, usage: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the leaky ``Training``, ``PublicTest`` (validation) or
        ``PrivateTest`` (test) part."""
        mask = self.usage == usage
        return self.resampled.x[mask], self.resampled.y[mask]

    def sources(self, usage: str) -> np.ndarray:
        """``(n, 2)`` digests of the original images each row of a leaky part was made from."""
        return self.source_digests[self.resampled.parents[self.usage == usage]]

    def audit(self) -> dict:
        """:func:`overlap_audit` of the leaky test part against the leaky training part, with
        ``n_synthetic_test`` (SMOTE images in the test part)."""
        audit = overlap_audit(self.split(TRAIN)[0], self.sources(TRAIN), self.split(TEST)[0], self.sources(TEST))
        audit["n_synthetic_test"] = int(self.resampled.is_synthetic[self.usage == TEST].sum())
        return audit

    def official_overlap(self) -> dict:
        """Per official evaluation split: how many of its images have an exact copy in the leaky
        training part, and how many went into it in any form (copy or SMOTE parent)."""
        train_pixels = set(image_digests(self.split(TRAIN)[0]))
        train_sources = set(self.sources(TRAIN).ravel().tolist())
        out = {}
        for split in (VAL, TEST):
            digests = self.source_digests[self.source.usage == split]
            out[split] = {"images": len(digests),
                          "exact copy in leaky training": int(sum(d in train_pixels for d in digests)),
                          "in leaky training in any form": int(sum(d in train_sources for d in digests))}
        return out

    def fingerprint(self) -> str:
        """The DESIGN.md fingerprint of the resampled set with its leaky split (labels, pixels and
        which part each row is in)."""
        digests = sorted(f"{u}:{d}" for u, d in zip(self.usage, image_digests(self.resampled.x, self.resampled.y)))
        return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """The protocol's settings and sizes, for a metrics file."""
        return {"protocol": "write-up 003: resample all images (every official split), then a random stratified "
                            "80/10/10 split (fer_utils.data.stratified_split)",
                "method": self.method, "seed": self.seed, "n_source": len(self.source),
                "n_resampled": len(self.resampled),
                "n_train": int((self.usage == TRAIN).sum()), "n_val": int((self.usage == VAL).sum()),
                "n_test": int((self.usage == TEST).sum()),
                "n_synthetic": int(self.resampled.is_synthetic.sum())}

    def leak_examples(self, n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """SMOTE training images made from a leaky-test image: ``(x_original, x_synthetic,
        parents)`` for ``plots.smote_examples``, parent ``a`` being the test image (source row
        indices into ``source``). Empty for ROS."""
        train = np.flatnonzero((self.usage == TRAIN) & self.resampled.is_synthetic)
        test_originals = set(self.resampled.parents[(self.usage == TEST) & ~self.resampled.is_synthetic, 0].tolist())
        rows, used = [], set()
        for i in np.random.default_rng(seed).permutation(train):
            a, b = self.resampled.parents[i]
            t = float(self.resampled.steps[i])
            if b in test_originals and b not in used and (a not in test_originals or a in used):
                a, b, t = b, a, 1.0 - t
            if a in test_originals and a not in used:
                rows.append((i, a, b, t))
                used.add(a)
            if len(rows) == n:
                break
        x_src = self.source.pixels
        frame = pd.DataFrame([{"label": CLASS_NAMES[self.resampled.y[i]], "parent_a": int(a), "parent_b": int(b),
                               "t": t, "max_abs_error": float(np.abs(self.resampled.x[i].astype(float)
                                                                     - (x_src[a] + t * (x_src[b].astype(float) - x_src[a]))).max())}
                              for i, a, b, t in rows])
        synthetic = self.resampled.x[[r[0] for r in rows]] if rows else np.zeros((0, 48, 48), np.uint8)
        return x_src, synthetic, frame


def leaky_protocol(ds: FERDataset, method: str, seed: int = 0) -> LeakyProtocol:
    """Write-up 003's protocol on ``ds``: resample all its images with ``method`` (``ros`` or
    ``smote``, every class up to the largest), then a seeded stratified 80/10/10 split."""
    resampled = resample_with_parents(ds.pixels, ds.labels, method, seed)
    usage = stratified_split(resampled.y, seed=seed, fractions=(0.8, 0.1, 0.1))
    return LeakyProtocol(method, ds, resampled, usage, np.array(image_digests(ds.pixels)), seed)


LEAKY_TEST = "leaky_test"  #: metrics key: the leaky protocol's own 10% test part
LEAKY_TEST_INDEPENDENT = "leaky_test_independent"  #: ... only its images with nothing in training
LEAKY_WARNING = ("LEAKY PROTOCOL (write-up 003): every image was resampled before an 80/10/10 split, so copies "
                 "(ROS) or interpolations (SMOTE) of test images, and of official PublicTest and PrivateTest "
                 "images, are in this model's training set. metrics.leaky_test is the protocol's own test part; "
                 "the PublicTest/PrivateTest metrics are NOT held-out results. Never select or release this model.")



def train_leaky(store: RunStore, dataset, protocol: LeakyProtocol, profile: Profile, recipe: str = "tuned",
                seed: int = 42) -> RunRecord:
    """Train (or load) ``profile``'s VGG with ``recipe`` under the leaky ``protocol`` (drawn from
    ``dataset``), filed in ``store``: trained on its
    training part, epoch chosen on its validation part (each epoch draws as many images as the
    official Training split holds: the honest runs' budget), tested on its test part.

    The metrics file (``<NN>_<model>_leaky_<method>_before_split_<profile>.json``) holds
    ``metrics.leaky_test`` and ``metrics.leaky_test_independent`` (test images with no copy and no
    source image in training) beside the official ``PublicTest``/``PrivateTest``/
    ``PrivateTest_clean`` of the same model, whose training set holds copies of those very images;
    ``leaky: true``, a ``warning``, the ``leakage`` audit counts, and ``leaky_model_file`` instead
    of ``model_file``. Returns the record.
    """
    ds = dataset
    model_name = vgg_model_name(recipe, profile)
    n_train_official = int((ds.usage == TRAIN).sum())
    config = vgg_config(recipe, profile, epoch_size=n_train_official, seed=seed)
    run_id = store.run_id(model_name, protocol.sampling)
    params = json.loads(json.dumps({"model": model_name, "sampling": protocol.sampling, **config.params(),
                                    **vgg_params(recipe, profile), "tta_flip": False,
                                    "leaky_protocol": {k: v for k, v in protocol.describe().items()
                                                       if k in ("protocol", "method", "seed")}}))
    described = ds.describe()
    described["derived"] = {"fingerprint": protocol.fingerprint(), "how": protocol.describe()["protocol"],
                            **{k: v for k, v in protocol.describe().items() if k.startswith("n_")}}

    def train_run(workdir: Path) -> dict:
        model_file = store.model_path(run_id)
        x_train, y_train = protocol.split(TRAIN)
        x_val, y_val = protocol.split(VAL)
        x_test, y_test = protocol.split(TEST)
        print(f"{run_id}: LEAKY protocol, training on {len(x_train):,} resampled images, selecting on "
              f"{len(x_val):,}, testing on {len(x_test):,} (all drawn from the same resampled pool)")
        result = fit(build_vgg(profile), x_train, y_train, x_val, y_val, config, workdir)
        save_model(result.model, model_file)
        metrics = evaluate_predictions({split: predict_proba(result.model, ds.split(split)[0]) for split in (VAL, TEST)}, ds)
        proba = predict_proba(result.model, x_test)
        audit = protocol.audit()
        metrics[LEAKY_TEST] = split_metrics(y_test, proba)
        if audit["n_independent"]:
            keep = audit["independent"]
            metrics[LEAKY_TEST_INDEPENDENT] = split_metrics(y_test[keep], proba[keep])
        leakage = {"test_audit": {**audit_counts(audit), "synthetic test images": audit["n_synthetic_test"]},
                   "official_splits_in_leaky_training": protocol.official_overlap()}
        return metrics_record(
            run_id, store.notebook, model_name, protocol.sampling, store.profile, params, described,
            result.summary(len(x_train), config.epoch_size),
            metrics, weights="none", n_params=int(result.model.count_params()), leaky=True, warning=LEAKY_WARNING,
            leakage=leakage, leaky_model_file=display_path(model_file), history=result.history,
        )

    def summary(record: dict) -> str:
        t, m = record["train"], record["metrics"]
        return (f"{run_id}: {t['epochs']} epochs in {t['seconds'] / 60:.1f} min ({t['stopped']}); leaky test "
                f"{100 * m[LEAKY_TEST]['accuracy']:.2f}% (official PrivateTest, seen in training: "
                f"{100 * m[TEST]['accuracy']:.2f}%)")

    return store.train_or_load(run_id, params, described, train_run, summary=summary)


def protocol_table(honest: dict[str, dict], leaky: dict[str, dict]) -> pd.DataFrame:
    """Top-1/2/3 and balanced accuracy (percent) of the honest runs (``{method: record}``, on
    PrivateTest and PrivateTest_clean) and the leaky runs (on their own test part, its independent
    images, and the official PrivateTest they were trained on), one row per (protocol, method,
    test set)."""
    rows = []

    def add(protocol, method, test_set, m, note, short):
        rows.append({"protocol": protocol, "method": method, "test set": test_set, "images": m["n"],
                     "top-1": 100 * m["accuracy"], "top-2": 100 * m["top2"], "top-3": 100 * m["top3"],
                     "balanced": 100 * m["balanced_accuracy"], "held out?": note,
                     "label": f"{protocol.split(':')[0]} {method}\n{short}"})

    for method, r in honest.items():
        add("honest: resample Training only", method, "PrivateTest", r["metrics"][TEST], "yes", "PrivateTest")
        add("honest: resample Training only", method, "PrivateTest_clean", r["metrics"][CLEAN_TEST],
            "yes, and no exact copy in Training", "PrivateTest\nclean")
    for method, r in leaky.items():
        add("leaky: resample all, then split", method, "its own 10% test part", r["metrics"][LEAKY_TEST],
            "no: copies / SMOTE relatives in training", "own test part")
        if LEAKY_TEST_INDEPENDENT in r["metrics"]:
            add("leaky: resample all, then split", method, "its test images with nothing in training",
                r["metrics"][LEAKY_TEST_INDEPENDENT], "yes (a subset)", "own test part,\nindependent")
        add("leaky: resample all, then split", method, "official PrivateTest", r["metrics"][TEST],
            "no: PrivateTest went into training", "official\nPrivateTest")
    return pd.DataFrame(rows).round(2)


def audit_table(audits: dict[str, dict]) -> pd.DataFrame:
    """One row per :func:`overlap_audit` (``{name: audit}``): counts (int) and shares (%) of test
    images with an exact copy, a source image, either or neither in training, and how many of the
    test images are SMOTE images."""
    table = pd.DataFrame({name: {**audit_counts(a), "SMOTE images among the test images": a.get("n_synthetic_test", 0)}
                          for name, a in audits.items()}).T
    return table.astype({c: float if c.endswith("(%)") else int for c in table.columns})


def duplicate_effect(records: Sequence[dict]) -> pd.DataFrame:
    """Per honest run: PrivateTest accuracy on all images, on those without an exact copy in
    Training (``PrivateTest_clean``) and on the duplicated ones alone (derived from the two), in
    percent."""
    rows = {}
    for r in records:
        if r.get("leaky") or CLEAN_TEST not in r["metrics"]:
            continue
        full, clean = r["metrics"][TEST], r["metrics"][CLEAN_TEST]
        n_dup = full["n"] - clean["n"]
        right_dup = full["accuracy"] * full["n"] - clean["accuracy"] * clean["n"]
        rows[r["run"]] = {"PrivateTest": 100 * full["accuracy"], "without Training duplicates": 100 * clean["accuracy"],
                          "duplicated images only": 100 * right_dup / n_dup if n_dup else np.nan,
                          "duplicated images": n_dup,
                          "difference (points)": 100 * (full["accuracy"] - clean["accuracy"])}
    return pd.DataFrame(rows).T.round(2)

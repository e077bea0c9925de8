"""Exploratory statistics of a FER dataset: imbalance, pixel statistics, comparing two copies, and
how FER2013's labels agree with FER+'s ten annotators (``FERDataset.ferplus``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import CLASS_NAMES, FERPLUS_CLASS_NAMES, TRAIN, USAGES
from .data import CONTEMPT, NO_MAJORITY, NOT_A_FACE, UNKNOWN, FERDataset, ferplus_majority, image_digests

#: FER+'s outcomes for a face: its majority emotion (this project's names), or why it has none.
FERPLUS_OUTCOMES: tuple[str, ...] = (*FERPLUS_CLASS_NAMES, NO_MAJORITY, UNKNOWN, NOT_A_FACE)


def imbalance_ratio(labels: np.ndarray) -> float:
    """Largest class count divided by the smallest (1.0 = balanced)."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return float(counts.max() / max(counts.min(), 1))


def class_shares(ds: FERDataset) -> pd.DataFrame:
    """Share (%) of each class within each split."""
    counts = ds.counts().drop(index="all")
    return (100 * counts / counts.sum(axis=0)).round(2)


def pixel_statistics(ds: FERDataset, usage: str = TRAIN) -> pd.DataFrame:
    """Per class: images, mean and std of brightness, mean contrast, share of near-blank images.

    Brightness is an image's mean pixel, contrast its pixel std (0-255); an image is
    near-blank when its contrast is below 5 (FER2013 has a few all-black or all-grey frames).
    """
    pixels, labels = ds.split(usage)
    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    frame = pd.DataFrame({"class": [CLASS_NAMES[y] for y in labels], "brightness": flat.mean(1),
                          "contrast": flat.std(1)})
    frame["near_blank"] = frame["contrast"] < 5
    table = frame.groupby("class", sort=False).agg(
        images=("brightness", "size"), brightness_mean=("brightness", "mean"),
        brightness_std=("brightness", "std"), contrast_mean=("contrast", "mean"),
        near_blank=("near_blank", "sum"),
    )
    return table.reindex([c for c in CLASS_NAMES if c in table.index]).round(2)


def compare_copies(a: FERDataset, b: FERDataset, names: tuple[str, str] = ("A", "B")) -> pd.DataFrame:
    """Per split: images in each copy, equal class counts, and images pixel-identical in both."""
    rows = []
    for usage in USAGES:
        pa, la = a.split(usage)
        pb, lb = b.split(usage)
        identical = len(set(image_digests(pa, la)) & set(image_digests(pb, lb)))
        rows.append({
            "split": usage, f"images ({names[0]})": len(la), f"images ({names[1]})": len(lb),
            "same class counts": bool(np.array_equal(np.bincount(la, minlength=7), np.bincount(lb, minlength=7))),
            "pixel-identical images": identical,
        })
    return pd.DataFrame(rows).set_index("split")


# ---------------------------------------------------------------------------------------------
# FER2013's labels against FER+'s votes


def ferplus_outcome(counts: np.ndarray) -> np.ndarray:
    """FER+'s outcome (:data:`FERPLUS_OUTCOMES`) of each face from its vote counts ``(N, 10)``: the
    majority emotion under FER+'s rule over its eight (contempt included), or why there is none."""
    labels, reasons = ferplus_majority(counts, FERPLUS_CLASS_NAMES)
    return np.where(labels >= 0, np.asarray(FERPLUS_CLASS_NAMES)[np.maximum(labels, 0)], reasons)


def _rows(ds: FERDataset, usage: str | None) -> np.ndarray:
    """The rows of ``usage`` (all rows for None), after checking the dataset has FER+'s votes."""
    if ds.ferplus is None:
        raise ValueError(f"{ds.source}: no FER+ votes (fer2013new.csv beside the CSV)")
    return np.ones(len(ds), bool) if usage is None else ds.usage == usage


def label_agreement(ds: FERDataset, usage: str | None = None) -> pd.DataFrame:
    """Faces by FER2013 label (rows) and FER+ outcome (columns: majority emotion, or no majority,
    unknown, not a face), in one split or (None) all."""
    rows = _rows(ds, usage)
    return pd.crosstab(pd.Categorical(np.asarray(CLASS_NAMES)[ds.labels[rows]], categories=CLASS_NAMES),
                       pd.Categorical(ferplus_outcome(ds.ferplus.counts[rows]), categories=FERPLUS_OUTCOMES),
                       rownames=["FER2013 label"], colnames=["FER+ majority"], dropna=False)


def agreement_per_class(ds: FERDataset, usage: str | None = None) -> pd.DataFrame:
    """Per FER2013 class (and ``all``): faces, faces with a FER+ majority emotion, how many of
    those agree with the FER2013 label (count and percent) and what FER+ most often says instead."""
    matrix = label_agreement(ds, usage)
    emotions = matrix[list(FERPLUS_CLASS_NAMES)]
    agree = pd.Series({c: emotions.loc[c, c] for c in CLASS_NAMES})
    instead = emotions.apply(lambda row: row.drop(row.name).idxmax() if row.drop(row.name).sum() else "", axis=1)
    table = pd.DataFrame({"faces": matrix.sum(axis=1), "with FER+ majority": emotions.sum(axis=1), "agree": agree,
                          "FER+ most often says instead": instead})
    table.loc["all"] = [table["faces"].sum(), table["with FER+ majority"].sum(), table["agree"].sum(), ""]
    table.insert(3, "agree %", (100 * table["agree"] / table["with FER+ majority"].clip(lower=1)).astype(float).round(1))
    return table


def ferplus_left_out(ds: FERDataset) -> pd.DataFrame:
    """Per split (and ``all``): faces, faces with a FER+ majority over FER2013's seven classes (what
    ``evaluate.ferplus_scores`` scores), and the faces left out: majority contempt, no majority,
    unknown, not a face."""
    table = pd.DataFrame({usage: pd.Series(ferplus_outcome(ds.ferplus.counts[_rows(ds, usage)])).value_counts()
                          for usage in USAGES}).reindex(FERPLUS_OUTCOMES).fillna(0).astype(int).T
    out = pd.DataFrame({"faces": table.sum(axis=1), "FER+ majority, seven classes": table[list(CLASS_NAMES)].sum(axis=1)})
    out = out.join(table[[CONTEMPT, NO_MAJORITY, UNKNOWN, NOT_A_FACE]])
    out.loc["all"] = out.sum()
    return out


def duplicate_votes(ds: FERDataset, groups: pd.DataFrame) -> pd.DataFrame:
    """Duplicate groups (``data.duplicate_audit``'s ``groups``, e.g. those with conflicting labels)
    seen through FER+'s votes: each copy's FER2013 label, whether the copies carry the same votes,
    the FER+ outcome (when every copy has the same one) and which FER2013 label, if any, it supports
    (``verdict``)."""
    digests = np.asarray(image_digests(ds.pixels))
    rows = []
    for group in groups.itertuples():
        members = np.flatnonzero(digests == group.digest)
        votes = ds.ferplus.counts[members]
        outcomes = set(ferplus_outcome(votes))
        outcome = outcomes.pop() if len(outcomes) == 1 else "copies differ"
        labels = [CLASS_NAMES[y] for y in ds.labels[members]]
        verdict = (f"FER+ sides with {outcome}" if outcome in labels else
                   f"FER+ says {outcome}, neither label" if outcome in FERPLUS_CLASS_NAMES else f"FER+: {outcome}")
        rows.append({"first_row": group.first_row, "copies": len(members), "usages": ", ".join(group.usages),
                     "FER2013 labels": ", ".join(labels), "same votes": bool((votes == votes[0]).all()),
                     "FER+ outcome": outcome, "verdict": verdict})
    return pd.DataFrame(rows, columns=["first_row", "copies", "usages", "FER2013 labels", "same votes",
                                       "FER+ outcome", "verdict"])


def verdict_counts(votes: pd.DataFrame) -> pd.Series:
    """How many duplicate groups of :func:`duplicate_votes` FER+ settles for one of their FER2013
    labels, for another emotion, or not at all (no majority, unknown, not a face, copies differ)."""
    kind = votes["verdict"].map(lambda v: "FER+ sides with one of the labels" if v.startswith("FER+ sides") else
                                "FER+ names another emotion" if v.endswith("neither label") else "FER+ settles nothing")
    return kind.value_counts().reindex(["FER+ sides with one of the labels", "FER+ names another emotion",
                                        "FER+ settles nothing"], fill_value=0).rename("groups")

"""Exploratory statistics of a FER dataset: imbalance, pixel statistics, comparing two copies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import CLASS_NAMES, TRAIN, USAGES
from .data import FERDataset, image_digests


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

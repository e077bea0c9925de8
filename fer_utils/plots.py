"""Figures shared by the notebooks. Each function returns a matplotlib Figure; saving is the
caller's (``NotebookRun.savefig``)."""

from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend())  # keep inline backends in notebooks; Agg elsewhere
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import CLASS_NAMES, USAGES


def class_distribution(counts: pd.DataFrame, title: str = "Images per class and split"):
    """Grouped bars of a class x split count table (as from ``FERDataset.counts()``)."""
    table = counts.drop(index="all", errors="ignore").drop(columns="all", errors="ignore")
    long = table.reset_index().melt(id_vars=table.index.name or "index", var_name="split", value_name="images")
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.barplot(data=long, x=table.index.name or "index", y="images", hue="split", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7, padding=1)
    ax.set(title=title, xlabel="", ylabel="images")
    sns.despine(fig)
    return fig


def image_grid(pixels: np.ndarray, labels: np.ndarray, per_class: int = 8, seed: int = 0,
               title: str = "Random examples per class", titles: np.ndarray | None = None):
    """A row of ``per_class`` random images for every class (rows = classes)."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(per_class * 1.1, len(CLASS_NAMES) * 1.2))
    for c, row in enumerate(axes):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, ax in enumerate(row):
            ax.axis("off")
            if j < len(chosen):
                ax.imshow(pixels[chosen[j]], cmap="gray", vmin=0, vmax=255)
                if titles is not None:
                    ax.set_title(str(titles[chosen[j]]), fontsize=6)
        row[0].text(-4, 24, CLASS_NAMES[c], ha="right", va="center", fontsize=10)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.12, wspace=0.05, hspace=0.15)
    return fig


def mean_faces(pixels: np.ndarray, labels: np.ndarray):
    """Mean face per class (top) and its difference from the overall mean face (bottom)."""
    overall = pixels.reshape(len(pixels), -1).mean(axis=0).reshape(pixels.shape[1:])
    fig, axes = plt.subplots(2, len(CLASS_NAMES), figsize=(len(CLASS_NAMES) * 1.5, 3.4))
    means = [pixels[labels == c].mean(axis=0) for c in range(len(CLASS_NAMES))]
    spread = max(np.abs(m - overall).max() for m in means)
    for c, mean in enumerate(means):
        axes[0, c].imshow(mean, cmap="gray", vmin=0, vmax=255)
        axes[0, c].set_title(CLASS_NAMES[c], fontsize=9)
        axes[1, c].imshow(mean - overall, cmap="coolwarm", vmin=-spread, vmax=spread)
        for ax in axes[:, c]:
            ax.axis("off")
    axes[0, 0].text(-6, 24, "mean", ha="right", va="center")
    axes[1, 0].text(-6, 24, "minus\noverall", ha="right", va="center")
    fig.suptitle("Mean face per class, and how it differs from the overall mean")
    return fig


def pixel_histograms(pixels: np.ndarray, labels: np.ndarray):
    """Per-class distribution of image brightness (mean pixel) and contrast (pixel std)."""
    frame = pd.DataFrame({
        "class": [CLASS_NAMES[y] for y in labels],
        "brightness": pixels.reshape(len(pixels), -1).mean(axis=1),
        "contrast": pixels.reshape(len(pixels), -1).std(axis=1),
    })
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, column in zip(axes, ("brightness", "contrast")):
        sns.kdeplot(data=frame, x=column, hue="class", hue_order=list(CLASS_NAMES), common_norm=False, ax=ax)
        ax.set(title=f"Image {column} ({'mean' if column == 'brightness' else 'std'} of pixels, 0-255)")
    sns.despine(fig)
    return fig


def duplicate_overview(audit: dict):
    """Bars of exact duplicates: groups by which splits they span, and test rows also in Training."""
    groups = audit["groups"]
    spans = groups["usages"].map(lambda u: " + ".join(u)).value_counts() if len(groups) else pd.Series(dtype=int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    if len(spans):
        spans.sort_values().plot.barh(ax=axes[0], color="tab:blue")
    else:
        axes[0].text(0.5, 0.5, "no exact duplicates", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set(title="Duplicate groups by the splits they span", xlabel="groups")
    in_train = pd.Series({u: audit["in_training"][u] for u in USAGES if u != USAGES[0]})
    in_train.plot.bar(ax=axes[1], color="tab:red", rot=0)
    axes[1].set(title="Evaluation images whose pixels\nalso appear in Training", ylabel="images")
    for container in axes[1].containers:
        axes[1].bar_label(container)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def duplicate_examples(pixels: np.ndarray, groups: pd.DataFrame, n: int = 8,
                       title: str = "Exact duplicates with conflicting labels"):
    """The image of ``n`` duplicate groups (rows of ``duplicate_audit(...)['groups']``), titled
    with the group's labels and splits."""
    groups = groups.head(n)
    if groups.empty:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: none", ha="center", va="center")
        return fig
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(max(len(groups), 1) * 1.6, 2.2), squeeze=False)
    for ax, (_, group) in zip(axes[0], groups.iterrows()):
        ax.imshow(pixels[group["first_row"]], cmap="gray", vmin=0, vmax=255)
        labels = " / ".join(CLASS_NAMES[label] for label in group["labels"])
        splits = ", ".join(u.replace("Test", "") for u in group["usages"])
        ax.set_title(f"{labels}\n{splits} (x{group['rows']})", fontsize=7)
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(title)
    return fig

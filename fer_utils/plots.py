"""Figures shared by the notebooks. Each function returns a matplotlib Figure; saving is the
caller's (``NotebookRun.savefig``)."""

from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend())  # keep inline backends in notebooks; Agg elsewhere
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import CLASS_NAMES, USAGES
from .data import sample_per_class
from .naming import describe_sampling

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
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(per_class * 1.1, len(CLASS_NAMES) * 1.2))
    picks = sample_per_class(labels, per_class, seed, classes=range(len(CLASS_NAMES)))
    for c, (row, chosen) in enumerate(zip(axes, picks)):
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


def confusion_matrix(confusion, title: str = "Confusion matrix", normalize: bool = True,
                     class_names: tuple[str, ...] = CLASS_NAMES):
    """Heat map of a confusion matrix over ``class_names`` (rows = true class); ``normalize`` shows
    row shares (recall)."""
    cm = np.asarray(confusion, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(5.6 + 0.6 * (len(class_names) - 7), 4.8 + 0.5 * (len(class_names) - 7)))
    sns.heatmap(shown, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", square=True, cbar=False,
                xticklabels=class_names, yticklabels=class_names, ax=ax, vmin=0, vmax=1 if normalize else None)
    ax.set(title=title, xlabel="predicted", ylabel="true")
    return fig


def label_agreement(matrix: pd.DataFrame, title: str = "FER2013 label against FER+ majority"):
    """Heat map of a label cross-table (``eda.label_agreement``: rows one label set, columns the
    other's outcomes): each row's shares, with the face counts written in the cells."""
    counts = matrix.to_numpy(dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * matrix.shape[1], 1.2 + 0.55 * matrix.shape[0]))
    sns.heatmap(shares, annot=counts.astype(int), fmt="d", cmap="Blues", cbar=True, vmin=0, vmax=1,
                xticklabels=list(matrix.columns), yticklabels=list(matrix.index), ax=ax,
                cbar_kws={"label": "share of the row"})
    ax.set(title=title, xlabel=matrix.columns.name or "", ylabel=matrix.index.name or "")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict[str, dict], metric: str = "accuracy", title: str | None = None):
    """Training (dashed) and PublicTest (solid) curves of ``metric`` for one or more runs."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, history) in enumerate(histories.items()):
        color = f"C{i % 10}"
        if metric in history:
            ax.plot(range(1, len(history[metric]) + 1), history[metric], "--", color=color, alpha=0.6)
        if f"val_{metric}" in history:
            ax.plot(range(1, len(history[f"val_{metric}"]) + 1), history[f"val_{metric}"], "-", color=color,
                    label=name)
    ax.set(title=title or f"{metric}: training (dashed) and PublicTest (solid)", xlabel="epoch", ylabel=metric)
    ax.legend(fontsize=8, loc="best")
    sns.despine(fig)
    return fig


def method_comparison(table: pd.DataFrame, x: str, metrics: list[str], title: str = "", ylabel: str = "%",
                      wrap: int = 42):
    """Grouped horizontal bars of several metric columns, one group per row of ``table`` (the first
    on top), labelled by its column ``x`` (long labels wrapped at ``wrap`` characters, so no tick
    label overlaps another); ``ylabel`` names the value axis."""
    labels = [textwrap.fill(str(v), wrap, break_on_hyphens=False) if "\n" not in str(v) else str(v) for v in table[x]]
    shown = table.assign(**{x: labels})
    long = shown.melt(id_vars=x, value_vars=metrics, var_name="metric", value_name="value")
    lines = sum(max(1, label.count("\n") + 1) for label in labels)
    height = max(2.5, 0.22 * len(table) * max(len(metrics), 1) + 0.12 * lines + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    sns.barplot(data=long, y=x, x="value", hue="metric", orient="h", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=7, padding=2)
    ax.set(title=title, ylabel="", xlabel=ylabel)
    ax.set_xlim(right=ax.get_xlim()[1] * 1.08)  # room for the value labels
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def per_class_heatmap(table: pd.DataFrame, title: str = "Per-class F1 (PrivateTest)"):
    """Heat map of a runs x classes table (e.g. F1 per class per run), with values annotated."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.5))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", cbar=False, ax=ax)
    ax.set(title=title, xlabel="", ylabel="")
    return fig


# ---------------------------------------------------------------------------------------------
# Class balancing (notebook 02)


def balance_distributions(results: dict, title: str = "Training images per class, before and after balancing"):
    """Small multiples, one panel per balancing method: images per class before (grey) and after,
    split into original or copied rows (blue) and new ones (orange: SMOTE interpolations,
    augmented copies). ``results`` maps a method name to an object with ``counts_before``,
    ``counts_after`` (``(7,)`` ints), ``y`` and ``is_synthetic`` (``(M,)``), e.g. a
    ``fer_utils.balance.BalanceResult``."""
    n = len(results)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), sharey=True, squeeze=False)
    x = np.arange(len(CLASS_NAMES))
    for ax, (method, result) in zip(axes.flat, results.items()):
        new = np.bincount(result.y[result.is_synthetic], minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
        kept = result.counts_after - new
        ax.bar(x, result.counts_before, width=0.85, color="0.85", label="before")
        ax.bar(x, kept, width=0.5, color="tab:blue", label="after: original or copied")
        ax.bar(x, new, width=0.5, bottom=kept, color="tab:orange", label="after: new (interpolated / augmented)")
        ax.set_title(f"{describe_sampling(method) or 'no balancing'}: {int(result.counts_before.sum()):,} → "
                     f"{int(result.counts_after.sum()):,}", fontsize=9)
        ax.set_xticks(x, CLASS_NAMES, rotation=45, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("images")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0.965))
    fig.suptitle(title, y=1.0)
    sns.despine(fig)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def smote_examples(x_original: np.ndarray, x_synthetic: np.ndarray, parents: pd.DataFrame,
                   title: str = "SMOTE images (middle) and the two originals they were interpolated between"):
    """One column per SMOTE image: parent a (top), the synthetic image (middle), parent b (bottom).
    ``parents`` is ``fer_utils.balance.smote_parents(...)`` for ``x_synthetic`` (uint8
    ``(K, 48, 48)``); its ``parent_a``/``parent_b`` index ``x_original`` (``(N, 48, 48)``).
    Titles give the position ``t`` on the segment a -> b and the largest pixel error (grey levels)."""
    k = len(parents)
    fig, axes = plt.subplots(3, k, figsize=(1.35 * k + 0.8, 5.2), squeeze=False)
    for j, row in enumerate(parents.itertuples()):
        images = (x_original[row.parent_a], x_synthetic[j], x_original[row.parent_b])
        for i, image in enumerate(images):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(f"{row.label}\n#{row.parent_a}", fontsize=8)
        axes[1, j].set_title(f"t = {row.t:.2f}, err {row.max_abs_error:.2f}", fontsize=7)
        axes[2, j].set_title(f"#{row.parent_b}", fontsize=8)
    for ax, name in zip(axes[:, 0], ("parent a", "SMOTE", "parent b")):
        ax.set_ylabel(name, fontsize=9)
    for ax in axes[1]:
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:orange")
            spine.set_linewidth(2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def augment_examples(x_original: np.ndarray, x_new: np.ndarray, sources: np.ndarray, labels: np.ndarray,
                     title: str = "Augmented copies (bottom) of training images (top)"):
    """Originals ``x_original[sources]`` above their augmented copies ``x_new`` (uint8
    ``(K, 48, 48)``), titled with the class names of ``labels`` (``(K,)``)."""
    k = len(x_new)
    fig, axes = plt.subplots(2, k, figsize=(1.35 * k + 0.8, 3.4), squeeze=False)
    for j in range(k):
        for i, image in enumerate((x_original[sources[j]], x_new[j])):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(CLASS_NAMES[labels[j]], fontsize=8)
    axes[0, 0].set_ylabel("original", fontsize=9)
    axes[1, 0].set_ylabel("augmented", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def balance_costs(table: pd.DataFrame, title: str = "What each balancing method costs"):
    """Horizontal bars of wall time (s) and peak extra memory (MiB) per method, from a table
    indexed by method with ``seconds`` and ``peak_memory_mb`` columns (as from
    ``fer_utils.balance.summary_table``)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(table) + 1.4), sharey=True)
    for ax, column, label, color in ((axes[0], "seconds", "wall time (s)", "tab:blue"),
                                     (axes[1], "peak_memory_mb", "peak extra memory (MiB)", "tab:purple")):
        values = table[column][::-1]
        bars = ax.barh([describe_sampling(m) or "no balancing" for m in values.index], values.to_numpy(), color=color)
        ax.bar_label(bars, labels=[f"{v:,.1f}" if v < 10 else f"{v:,.0f}" for v in values], fontsize=8, padding=2)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(values.max(), 1e-9) * 1.18)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Face alignment and explanations (notebooks 07 and 08)


def alignment_examples(original: np.ndarray, aligned: np.ndarray, labels: np.ndarray,
                       found: np.ndarray | None = None,
                       title: str = "Without (top) and with (bottom) MTCNN alignment"):
    """Faces before (top row) and after alignment (bottom row), ``(K, 48, 48)`` uint8 each, titled
    with the class names of ``labels`` ``(K,)``; columns where ``found`` ``(K,)`` is False (no face
    found, original kept) are titled in red."""
    k = len(original)
    fig, axes = plt.subplots(2, max(k, 1), figsize=(1.3 * max(k, 1) + 0.8, 3.2), squeeze=False)
    for j in range(k):
        for i, image in enumerate((original[j], aligned[j])):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        missed = found is not None and not found[j]
        axes[0, j].set_title(CLASS_NAMES[labels[j]] + ("\nno face" if missed else ""), fontsize=8,
                             color="tab:red" if missed else "black")
    axes[0, 0].set_ylabel("original", fontsize=9)
    axes[1, 0].set_ylabel("aligned", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _lime_overlay(ax, image, heat, mask=None):
    """Gray face with a signed LIME heat map (red: for the class, blue: against) over it, and the
    outline of ``mask`` (LIME's top segments)."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    limit = float(np.abs(heat).max()) or 1.0
    ax.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55)
    if mask is not None and mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="yellow", linewidths=0.8)


def explanation_grid(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, lime_maps: np.ndarray,
                     cam_maps: np.ndarray | None = None, confidence: np.ndarray | None = None,
                     extra_cams: np.ndarray | None = None, extra_label: str = "Grad-CAM\n(true class)",
                     masks: np.ndarray | None = None, title: str = "LIME and Grad-CAM"):
    """One column per face: the face ``(K, 48, 48)``, its LIME heat map (``(K, 48, 48)``, signed:
    red regions raise the explained class's probability, blue ones lower it), its Grad-CAM map
    (``(K, 48, 48)`` in 0-1, optional) and optionally a second Grad-CAM row ``extra_cams`` (e.g. for
    the true class). Titles: true and predicted class (and ``confidence`` ``(K,)``, 0-1);
    ``masks``: ``(K, 48, 48)`` bool, LIME's top segments per face, outlined in yellow."""
    k = len(images)
    if k == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no examples", ha="center", va="center")
        return fig
    rows = [("face", None), ("LIME\n(predicted)", lime_maps)]
    if cam_maps is not None:
        rows.append(("Grad-CAM\n(predicted)", cam_maps))
    if extra_cams is not None:
        rows.append((extra_label, extra_cams))
    fig, axes = plt.subplots(len(rows), k, figsize=(1.35 * k + 1.0, 1.45 * len(rows) + 0.6), squeeze=False)
    for j in range(k):
        for i, (name, maps) in enumerate(rows):
            ax = axes[i, j]
            if maps is None:
                ax.imshow(images[j], cmap="gray", vmin=0, vmax=255)
            elif name.startswith("LIME"):
                _lime_overlay(ax, images[j], maps[j], None if masks is None else masks[j])
            else:
                ax.imshow(images[j], cmap="gray", vmin=0, vmax=255)
                ax.imshow(maps[j], cmap="jet", vmin=0, vmax=1, alpha=0.45)
            ax.set_xticks([])
            ax.set_yticks([])
        wrong = y_true[j] != y_pred[j]
        conf = f" ({confidence[j]:.2f})" if confidence is not None else ""
        axes[0, j].set_title(f"true {CLASS_NAMES[y_true[j]]}\npred {CLASS_NAMES[y_pred[j]]}{conf}", fontsize=7,
                             color="tab:red" if wrong else "black")
    for i, (name, _) in enumerate(rows):
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def mean_map_grid(images: np.ndarray, maps: np.ndarray, labels: np.ndarray,
                  groups: dict[str, np.ndarray] | None = None,
                  title: str = "Mean Grad-CAM per class over the mean face"):
    """Per class (columns) and group (rows, ``groups`` maps a name to a ``(N,)`` bool mask, e.g.
    correctly and wrongly classified), the mean face of ``images`` ``(N, 48, 48)`` with the mean of
    ``maps`` ``(N, 48, 48)`` (0-1) over it; titles give the number of faces."""
    groups = groups or {"all": np.ones(len(labels), bool)}
    fig, axes = plt.subplots(len(groups), len(CLASS_NAMES), figsize=(1.45 * len(CLASS_NAMES) + 1, 1.6 * len(groups) + 0.5),
                             squeeze=False)
    for i, (name, mask) in enumerate(groups.items()):
        for c, ax in enumerate(axes[i]):
            chosen = np.asarray(mask, bool) & (np.asarray(labels) == c)
            ax.set_xticks([])
            ax.set_yticks([])
            if chosen.any():
                ax.imshow(images[chosen].mean(axis=0), cmap="gray", vmin=0, vmax=255)
                ax.imshow(maps[chosen].mean(axis=0), cmap="jet", vmin=0, vmax=1, alpha=0.45)
            ax.set_title(f"{CLASS_NAMES[c]} (n={int(chosen.sum())})", fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def classwise_before_after(before: pd.DataFrame, after: pd.DataFrame, names: tuple[str, str] = ("original", "aligned"),
                           title: str = "Class-wise metrics before and after alignment (PrivateTest)"):
    """Precision, recall and F1 per class (one panel each) for two runs, as grouped bars.
    ``before``/``after``: per-class tables (``RunRecord.per_class_table``: a row per class, columns
    ``precision``, ``recall``, ``f1``)."""
    metrics = ("precision", "recall", "f1")
    frame = pd.DataFrame([{"class": c, "run": run_name, "metric": m, "value": 100 * per_class.loc[c, m]}
                          for run_name, per_class in zip(names, (before, after)) for c in CLASS_NAMES for m in metrics])
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharey=True)
    for ax, metric in zip(axes, metrics):
        sns.barplot(data=frame[frame["metric"] == metric], x="class", y="value", hue="run", ax=ax)
        for container in ax.containers:
            ax.bar_label(container, fmt="%.0f", fontsize=6, padding=1)
        ax.set(title=metric, xlabel="", ylabel="%" if metric == "precision" else "")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        if metric != "f1":
            ax.get_legend().remove()
    fig.suptitle(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Export and real-time figures (notebooks 09 and 10)


def latency_comparison(table: pd.DataFrame, title: str = "Classifier latency per face (median)"):
    """Grouped bars of ms per face (log scale) per engine, one group per batch size, from a
    ``fer_utils.export.benchmark`` table (columns ``engine``, ``batch``, ``ms_per_face``)."""
    pivot = table.pivot_table(index="engine", columns="batch", values="ms_per_face", sort=False)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(pivot) * len(pivot.columns) + 1.2))
    height = 0.8 / len(pivot.columns)
    for j, batch in enumerate(pivot.columns):
        ys = np.arange(len(pivot))[::-1] - (j - (len(pivot.columns) - 1) / 2) * height  # first batch on top
        bars = ax.barh(ys, pivot[batch].to_numpy(), height=height, label=f"batch {batch}")
        ax.bar_label(bars, labels=[f"{v:.3g} ms" for v in pivot[batch]], fontsize=8, padding=2)
    ax.set_yticks(np.arange(len(pivot))[::-1], pivot.index)
    ax.set_xscale("log")
    ax.set_xlabel("ms per face (log scale)")
    ax.set_xlim(right=ax.get_xlim()[1] * 4)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def stage_latency(table: pd.DataFrame, stages: tuple[str, ...] = ("read", "detect", "crop", "classify", "draw", "output"),
                  title: str = "Real-time pipeline: mean ms per frame by stage"):
    """Stacked horizontal bars of mean ms per stage for each option (rows of a
    ``fer_utils.webcam.latency_table``: ``<stage>_ms`` and ``fps`` columns), FPS labelled."""
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(table) + 1.4))
    left = np.zeros(len(table))
    ys = np.arange(len(table))[::-1]
    colors = sns.color_palette("tab10", len(stages))
    for stage, color in zip(stages, colors):
        values = table[f"{stage}_ms"].fillna(0).to_numpy()
        ax.barh(ys, values, left=left, color=color, label=stage)
        left += values
    for y, total, fps in zip(ys, left, table["fps"]):
        ax.text(total, y, f"  {total:.1f} ms, {fps:.0f} FPS", va="center", fontsize=8)
    ax.set_yticks(ys, table.index)
    ax.set_xlim(0, max(left.max(), 1e-9) * 1.35)
    ax.set_xlabel("mean ms per frame")
    ax.legend(ncol=len(stages), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(table) > 2 else -0.3))
    ax.set_title(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def frame_grid(frames: list, titles: list[str] | None = None, cols: int = 3, bgr: bool = True,
               title: str | None = None, width: float = 4.2):
    """Frames (``(H, W, 3)`` uint8, BGR unless ``bgr=False``) in a grid, with optional titles."""
    rows = max(1, int(np.ceil(len(frames) / cols)))
    aspect = frames[0].shape[0] / frames[0].shape[1] if frames else 0.75
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, (width * aspect + 0.4) * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, frame in enumerate(frames):
        ax = axes.ravel()[i]
        ax.imshow(frame[..., ::-1] if bgr else frame)
        if titles:
            ax.set_title(titles[i], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Ensembles and the leakage audit (notebooks 06 and 11)


def ensemble_gain(gain: pd.DataFrame, title: str = "Ensemble minus its members, per class (PrivateTest F1)"):
    """Per class, the ensemble's gain (points) over its best member and over the members' mean,
    from ``fer_utils.ensemble.ensemble_gain`` (values 0-1); the best member is named under each class."""
    x = np.arange(len(gain))
    over_best = 100 * (gain["ensemble"] - gain["best member value"]).to_numpy(dtype=float)
    over_mean = 100 * (gain["ensemble"] - gain["members' mean"]).to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    bars = ax.bar(x - 0.2, over_best, width=0.4, label="over the best member",
                  color=["tab:green" if v > 0 else "tab:red" for v in over_best])
    ax.bar(x + 0.2, over_mean, width=0.4, label="over the members' mean", color="tab:gray", alpha=0.6)
    ax.bar_label(bars, fmt="%+.1f", fontsize=7, padding=1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{c}\n(best: {m})" for c, m in zip(gain.index, gain["best member"])], fontsize=7)
    ax.set(title=title, ylabel="points")
    ax.legend(fontsize=8)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def leakage_audit(table: pd.DataFrame, title: str = "Test images that are not independent of training"):
    """Stacked horizontal bars, one per protocol (rows of ``table``): the share (%) of test images
    with an exact copy in training, with only a source image in training (a SMOTE relative), and
    independent. Columns as from ``fer_utils.leakage.audit_counts``: ``exact copy in training (%)``,
    ``either (%)``."""
    exact = table["exact copy in training (%)"].to_numpy(dtype=float)
    either = table["either (%)"].to_numpy(dtype=float)
    parts = (("exact copy in training", exact, "tab:red"),
             ("source image in training (SMOTE relative)", either - exact, "tab:orange"),
             ("independent", 100 - either, "tab:green"))
    ys = np.arange(len(table))[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(table) + 1.6))
    left = np.zeros(len(table))
    for name, values, color in parts:
        ax.barh(ys, values, left=left, color=color, label=name)
        left += values
    for y, e, a in zip(ys, exact, either):
        ax.text(101, y, f"{a:.1f}% leaked", va="center", fontsize=8)
    ax.set_yticks(ys, table.index, fontsize=8)
    ax.set_xlim(0, 118)
    ax.set_xlabel("% of the test images")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.45, -0.25), ncol=3, frameon=False)
    ax.set_title(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def tradeoff_curve(frontier: pd.DataFrame, chosen: float, x: str = "accuracy", y: str = "balanced accuracy",
                   title: str = "Accuracy against balanced accuracy (PublicTest)"):
    """One point per setting (the index, e.g. the prior-correction tau) of ``frontier``, joined in
    order, with the ``chosen`` setting circled."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(frontier[x], frontier[y], "o-", color="C0", markersize=4)
    for setting, row in frontier.iterrows():
        ax.annotate(f"{setting:g}", (row[x], row[y]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.plot(frontier.loc[chosen, x], frontier.loc[chosen, y], "o", markersize=13, markerfacecolor="none",
            markeredgecolor="C3", label=f"chosen: {frontier.index.name} = {chosen:g}")
    ax.set(title=title, xlabel=f"{x} (%)", ylabel=f"{y} (%)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    sns.despine(fig)
    return fig

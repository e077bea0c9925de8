"""Runs in words: a metrics record or run id as the label people read in tables, figures and
legends (``describe_run``), and training-set treatments in words (``describe_sampling``).

Plain Python (no Keras, no plotting), so the run store, the notebooks and the figures share it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .backbones import spec
from .config import PROFILES

#: The seed whose runs keep the names they had before seeds were part of a run's name
#: (``runs.RunStore.run_id``); other seeds are named in run ids and labels.
DEFAULT_SEED = 42

# ---------------------------------------------------------------------------------------------
# Run ids in words (figure labels and legends are read by people)

#: Short words for each training-set treatment (``sampling`` of a metrics record); ``none`` says nothing.
SAMPLING_WORDS: dict[str, str] = {
    "none": "", "ros": "random oversampling", "rus": "random undersampling", "hybrid": "hybrid resampling",
    "smote": "SMOTE", "smote_tomek": "SMOTE-Tomek", "smote_enn": "SMOTE-ENN", "augment": "augmented copies",
    "class_weights": "class weights", "aligned": "MTCNN-aligned faces", "mixed": "",
    "distilled": "distilled from the seeds' ensemble", "cached_views": "cached augmented views, labels only",
}
_WIDTH_WORDS = {1.0: "full width", 0.5: "half width", 0.25: "quarter width", 0.125: "eighth width"}
_MODE_WORDS = {"frozen": "frozen backbone", "finetune": "fine-tuned"}
_LOSS_WORDS = {"ce": "cross-entropy", "weighted_ce": "weighted cross-entropy", "focal": "focal loss"}
#: How a model trained on FER+'s votes took them as targets (``ferplus.TARGETS``), in words.
TARGET_WORDS = {"distribution": "vote distribution", "majority": "majority label"}


def describe_sampling(sampling: str) -> str:
    """A training-set treatment in words: ``smote_enn`` -> ``SMOTE-ENN``, ``ros+smote`` ->
    ``random oversampling + SMOTE``, ``leaky_ros_before_split`` -> ``random oversampling before
    the split (leaky)``; ``none`` -> ``""``."""
    if sampling in SAMPLING_WORDS:
        return SAMPLING_WORDS[sampling]
    if "+" in sampling:
        return " + ".join(filter(None, (describe_sampling(s) for s in sampling.split("+"))))
    leaky = re.fullmatch(r"leaky_(\w+?)_before_split", sampling)
    if leaky:
        return f"{describe_sampling(leaky.group(1)) or leaky.group(1)} before the split (leaky)"
    return sampling.replace("_", " ")


def _split_samplings(name: str) -> list[str] | None:
    """``ros_smote_smote_tomek`` -> ``["ros", "smote", "smote_tomek"]`` (known names only), else None."""
    if not name:
        return []
    for known in sorted(SAMPLING_WORDS, key=len, reverse=True):
        if name == known or name.startswith(known + "_"):
            rest = _split_samplings(name[len(known) + 1:])
            if rest is not None:
                return [known, *rest]
    return None


def _describe_model(model: str, record: Mapping | None = None) -> str:
    """A model name of this project in words (see :func:`describe_run`)."""
    record = record or {}
    ferplus = re.fullmatch(rf"(\w+?)_ferplus_({'|'.join(TARGET_WORDS)})(_selection)?", model)
    if ferplus:
        base, targets, selection = ferplus.groups()
        return (f"{_describe_model(base)} on FER+ labels ({TARGET_WORDS[targets]} targets"
                f"{', short run to choose them' if selection else ''})")
    vgg = re.fullmatch(r"vgg(?:_w([\d.]+)_fc(\d+))?(?:_(\w+))?", model)
    if vgg:
        width, _, recipe = vgg.groups()  # the dense size goes with the width (vgg.VGG_SIZES)
        width = 1.0 if width is None else float(width)
        words = ["VGG", _WIDTH_WORDS.get(width, f"width x{width:g}")]
        return ", ".join(words + ([f"{recipe} recipe"] if recipe else []))
    fc = re.fullmatch(r"fc_2304_([\d_]+)_7", model)
    if fc:
        return "fully connected, hidden " + fc.group(1).replace("_", "-")
    if model == "champion_cnn":
        return "champion CNN"
    cnn = re.fullmatch(r"cnn_(\w+)", model)
    if cnn:
        return f"{cnn.group(1).replace('_', ' ')} CNN"
    modes, losses = "|".join(_MODE_WORDS), "|".join(sorted(_LOSS_WORDS, key=len, reverse=True))
    transfer = re.fullmatch(rf"(\w+?)_({modes})_({losses})", model)
    if transfer or record.get("backbone"):
        backbone, mode, loss = transfer.groups() if transfer else (record["backbone"], record.get("mode"), record.get("loss"))
        try:
            backbone = spec(backbone).label
        except ValueError:  # a backbone this version does not list: its name as recorded
            pass
        words = [backbone, _MODE_WORDS.get(mode, mode), _LOSS_WORDS.get(loss, loss)]
        if record.get("weights") == "none":
            words.append("random init")
        return ", ".join(w for w in words if w)
    return model.replace("_", " ")


def describe_run(run: str | Mapping) -> str:
    """A run in words for figure labels and legends, from its metrics record or its run id.

    ``06_vgg_w0.25_fc512_tuned_smote_enn_cpu`` -> ``VGG, quarter width, tuned recipe, SMOTE-ENN``;
    ``03_cnn_small_none_cpu`` -> ``small CNN``; ``05_resnet18_frozen_ce_none_cpu`` -> ``ResNet-18,
    frozen backbone, cross-entropy`` (from a record also ``random init`` when it had no
    pretrained weights); ``06_ensemble_ros_smote_smote_tomek_cpu`` -> ``ensemble: random oversampling + SMOTE +
    SMOTE-Tomek``. The notebook number and the profile are left out (the figure's context says
    them); an unknown name comes back with spaces for underscores. A seed other than 42 is named
    last (``03_cnn_small_ros_seed43_cpu`` -> ``small CNN, random oversampling, seed 43``).
    """
    record: Mapping = run if isinstance(run, Mapping) else {}
    run_id = str(record.get("run", "") if record else run)
    seeded = re.search(r"_seed(\d+)(?=_[a-z]+$)", run_id)
    seed = record.get("params", {}).get("seed") if record.get("params") else (int(seeded.group(1)) if seeded else None)
    if seeded:
        run_id = run_id[:seeded.start()] + run_id[seeded.end():]
    label = _describe(record, run_id)
    return label if seed in (None, DEFAULT_SEED) else f"{label}, seed {seed}"


def _describe(record: Mapping, run_id: str) -> str:
    """:func:`describe_run` without the seed."""
    if record.get("model") and record.get("sampling") is not None:
        model, sampling = str(record["model"]), str(record["sampling"])
    else:
        rest = re.sub(r"^\d\d_", "", run_id)
        for profile in PROFILES:
            if rest.endswith("_" + profile):
                rest = rest[: -len(profile) - 1]
                break
        model, sampling = rest, "none"
        if not rest.startswith("ensemble"):
            suffixes = sorted([*SAMPLING_WORDS, "leaky_ros_before_split", "leaky_smote_before_split"], key=len,
                              reverse=True)
            for known in suffixes:
                if rest.endswith("_" + known):
                    model, sampling = rest[: -len(known) - 1], known
                    break
    if model == "ensemble" or model.startswith("ensemble_"):
        name = re.sub(r"^\d\d_ensemble_|_(" + "|".join(PROFILES) + ")$", "", run_id) if run_id else ""
        name = name or model.removeprefix("ensemble").strip("_")
        members = sampling.split("+") if "+" in sampling else _split_samplings(name)
        if members:
            return "ensemble: " + " + ".join(describe_sampling(m) or "no balancing" for m in members)
        return "ensemble, " + name.replace("_", " ") if name else "ensemble"
    words = [_describe_model(model, record), describe_sampling(sampling)]
    return ", ".join(w for w in words if w)

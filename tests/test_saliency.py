"""Explanations from a model's outputs alone (``fer_utils.saliency``): the occlusion map and LIME
find the only region a model looks at, without TensorFlow."""

import numpy as np
import pytest

from fer_utils import saliency

REGION = (slice(8, 20), slice(26, 42))  #: the only pixels the model below looks at (rows, columns)


def region_model(faces: np.ndarray) -> np.ndarray:
    """'happy' as likely as the mean brightness of :data:`REGION` says; the rest shared out."""
    faces = np.asarray(faces, np.float32)
    happy = 0.1 + 0.8 * faces[:, REGION[0], REGION[1]].mean(axis=(1, 2)) / 255
    rest = np.repeat(((1 - happy) / 6)[:, None], 7, axis=1)
    rest[:, 3] = happy
    return rest


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    face = np.random.default_rng(0).integers(20, 60, (48, 48)).astype(np.uint8)
    face[REGION] = 240  # bright where the model looks: 'happy'
    return face


def inside_outside(heatmap: np.ndarray) -> tuple[float, float]:
    inside = np.zeros(heatmap.shape, bool)
    inside[REGION] = True
    return float(np.abs(heatmap[inside]).mean()), float(np.abs(heatmap[~inside]).mean())


def test_the_occlusion_map_finds_the_only_region_the_model_sees(face):
    result = saliency.occlusion_map(region_model, face)
    assert result.label == 3 and result.proba.shape == (7,) and result.heatmap.shape == (48, 48)
    assert result.patches == 11 * 11 and (result.patch, result.stride) == (8, 4)
    inside, outside = inside_outside(result.heatmap)
    assert result.heatmap.max() > 0 and inside > 5 * outside, (inside, outside)
    row, col = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert 8 <= row < 20 and 26 <= col < 42
    other = saliency.occlusion_map(region_model, face, label=0, patch=12, stride=6)
    assert other.label == 0 and other.heatmap.max() <= 0 < -other.heatmap.min(), "hiding the region helps 'angry'"
    with pytest.raises(ValueError, match="a patch must fit the face"):
        saliency.occlusion_map(region_model, face, patch=60)


def test_lime_finds_the_only_region_the_model_sees(face):
    result = saliency.lime_explain(region_model, face, num_samples=300)
    assert result.label == 3 and result.heatmap.shape == (48, 48)
    inside, outside = inside_outside(result.heatmap)
    assert inside > 3 * outside, (inside, outside)

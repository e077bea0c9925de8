"""MTCNN alignment on a real photo (skimage's astronaut), on images without a face, and over a
small dataset (batch detection, no-face bookkeeping, cache)."""

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fer_utils import align, config
from fer_utils.data import FERDataset

GENERAL = align.AlignSettings(size=160)


def eye_angle(result: align.AlignResult) -> float:
    (lx, ly), (rx, ry) = result.keypoints["left_eye"], result.keypoints["right_eye"]
    return float(np.degrees(np.arctan2(ry - ly, rx - lx)))


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()  # (512, 512, 3) uint8, one face


@pytest.fixture(scope="module")
def astronaut_result(astronaut):
    return align.align_face(astronaut, GENERAL)


@pytest.fixture(scope="module")
def small_faces(astronaut):
    """Four 48x48 gray FER-like crops of the astronaut's face (tight, loose, flipped, tilted)."""
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    crops = [gray[40:200, 150:310], gray[20:220, 130:330], gray[40:200, 150:310][:, ::-1]]
    tilted = cv2.warpAffine(gray, cv2.getRotationMatrix2D((230, 120), 12, 1.0), (512, 512))[30:210, 140:320]
    return np.stack([cv2.resize(c, (48, 48), interpolation=cv2.INTER_AREA) for c in [*crops, tilted]])


def test_astronaut_gives_one_level_face_of_the_requested_size(astronaut, astronaut_result):
    res = astronaut_result
    assert res.found and res.n_faces == 1
    assert res.image.shape == (160, 160, 3) and res.image.dtype == np.uint8
    assert res.confidence > 0.9
    x, y, w, h = res.box
    assert 150 < x < 230 and 30 < y < 110 and 60 < w < 160 and 60 < h < 160  # the face, not the suit
    eyes = res.aligned_keypoints
    # The transform levels the eyes exactly, and puts them in the upper half, the mouth below.
    assert abs(eyes["left_eye"][1] - eyes["right_eye"][1]) < 0.5
    assert eyes["left_eye"][0] < eyes["right_eye"][0]
    assert eyes["left_eye"][1] < 80 < eyes["mouth_left"][1] < 160
    # Detecting again on the aligned crop finds the face with a level eye line.
    again = align.align_face(res.image, GENERAL)
    assert again.found and abs(eye_angle(again)) < 2.5


def test_a_tilted_face_is_rotated_level(astronaut, astronaut_result):
    tilted = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((230, 120), 15, 1.0), (512, 512))
    res = align.align_face(tilted, GENERAL)
    assert res.found
    # A counter-clockwise tilt raises the right-hand eye: the measured angle drops by about 15.
    assert abs(res.angle - (astronaut_result.angle - 15)) < 5
    again = align.align_face(res.image, GENERAL)
    assert again.found and abs(eye_angle(again)) < 3


def test_gray_output_of_any_size(astronaut):
    res = align.align_face(astronaut, align.AlignSettings(size=48, gray=True))
    assert res.found and res.image.shape == (48, 48) and res.image.dtype == np.uint8


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8),  # noise, FER size
    np.zeros((200, 300), np.uint8),  # blank
], ids=["noise48", "blank"])
def test_no_face_is_a_result_not_an_exception(image):
    res = align.align_face(image, align.FER_SETTINGS)
    assert not res.found and res.n_faces == 0 and res.box is None and not res.aligned_keypoints
    assert res.image.shape == (48, 48) and np.isnan(res.angle)
    if image.shape == (48, 48):
        assert np.array_equal(res.image, image), "the original is kept"
    with pytest.raises(ValueError, match="no face"):
        res.transform([[0, 0]])


def test_small_fer_like_faces_are_found(small_faces):
    batch = align.align_batch(small_faces, align.FER_SETTINGS, progress=False)
    assert batch.found.all() and batch.images.shape == (4, 48, 48)
    assert abs(batch.angle[3] - (batch.angle[0] - 12)) < 6  # the tilted crop is rotated back


@pytest.fixture
def mixed_ds(small_faces):
    noise = np.random.default_rng(1).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    pixels = np.concatenate([small_faces, noise, np.full((1, 48, 48), 128, np.uint8)])
    labels = np.array([3, 3, 0, 6, 3, 0, 6, 6])
    usage = np.array(["Training"] * 4 + ["PublicTest"] * 2 + ["PrivateTest"] * 2)
    return FERDataset(pixels, labels, usage, name="mixed", source="test")


def test_align_dataset_counts_missing_faces_and_keeps_their_originals(mixed_ds):
    out = align.align_dataset(mixed_ds, progress=False)
    assert out.found.tolist() == [True] * 4 + [False] * 4
    aligned = out.dataset
    assert aligned.pixels.shape == mixed_ds.pixels.shape
    assert np.array_equal(aligned.pixels[4:], mixed_ds.pixels[4:]), "no face: the original is kept"
    assert not np.array_equal(aligned.pixels[:4], mixed_ds.pixels[:4])
    assert np.array_equal(aligned.labels, mixed_ds.labels) and np.array_equal(aligned.usage, mixed_ds.usage)
    assert aligned.fingerprint != mixed_ds.fingerprint
    assert "face found in 4 of 8 images (50.0%)" in aligned.notes[-1]
    assert np.isnan(out.alignment.angle[4:]).all() and np.isfinite(out.alignment.angle[:4]).all()

    rates = align.detection_rates(mixed_ds, out.found)
    assert rates.loc["all", "all"] == 0.5
    assert rates.loc["happy", "Training"] == 1.0 and rates.loc["happy", "PublicTest"] == 0.0
    assert rates.loc["all", "PrivateTest"] == 0.0 and np.isnan(rates.loc["disgust", "all"])


class _NoDetector:
    def detect_faces(self, *args, **kwargs):
        raise AssertionError("the cached alignment should have been used")


def test_align_dataset_is_cached_by_fingerprint_and_settings(mixed_ds):
    first = align.align_dataset(mixed_ds, progress=False)
    assert first.cache_file is not None and first.cache_file.exists()
    assert first.cache_file.parent == config.cache_dir() and mixed_ds.fingerprint in first.cache_file.name
    second = align.align_dataset(mixed_ds, progress=False, detector=_NoDetector())
    assert np.array_equal(second.dataset.pixels, first.dataset.pixels)
    assert np.array_equal(second.found, first.found)
    other = align.AlignSettings(**{**align.FER_SETTINGS.params(), "thresholds": (0.6, 0.7, 0.8)})
    assert align.align_cache_path(mixed_ds, other) != first.cache_file
    with pytest.raises(AssertionError, match="cached"):
        align.align_dataset(mixed_ds, other, progress=False, detector=_NoDetector())


def test_align_dataset_needs_48x48_gray(mixed_ds):
    with pytest.raises(ValueError, match="size=48, gray=True"):
        align.align_dataset(mixed_ds, align.AlignSettings(size=96))


def test_compare_predictions_splits_by_detection():
    y = np.array([0, 1, 2, 3, 4, 5])
    before = np.array([0, 1, 0, 0, 4, 0])
    after = np.array([0, 1, 2, 3, 0, 0])
    found = np.array([True, True, True, True, False, False])
    table, p = align.compare_predictions(y, before, after, found)
    assert table.loc["all", "original"] == pytest.approx(50) and table.loc["all", "aligned"] == pytest.approx(200 / 3)
    assert table.loc["face found", "difference"] == pytest.approx(50)
    assert table.loc["no face found", "images"] == 2
    assert p == pytest.approx(1.0)  # 2 images only "after" gets right vs 1: no evidence
    _, p = align.compare_predictions(np.zeros(6, int), np.ones(6, int), np.zeros(6, int), np.ones(6, bool))
    assert p == pytest.approx(2 * 0.5 ** 6)  # exact McNemar: 6 discordant images, all one way

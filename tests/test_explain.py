"""LIME and Grad-CAM on tiny Keras CNNs built here: map shapes and ranges, and both methods
pointing at the only region a model looks at."""


import numpy as np
import pytest

from fer_utils import explain, models
from fer_utils.config import NUM_CLASSES, import_keras
from fer_utils.synthetic import synthetic_face

keras = import_keras()
layers = keras.layers

REGION = (slice(4, 20), slice(26, 44))  # rows 4-19, columns 26-43: top right, not symmetric


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    return np.stack([synthetic_face(label % NUM_CLASSES, rng) for label in range(6)])


@pytest.fixture(scope="module")
def tiny_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48))
    x = layers.Reshape((48, 48, 1))(inputs)
    x = layers.Rescaling(1 / 255.0)(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(NUM_CLASSES, activation="softmax")(x))


@pytest.fixture(scope="module")
def region_model():
    """A CNN that sees only REGION: the input is zeroed elsewhere before the convolutions."""
    keras.utils.set_random_seed(1)
    mask = np.zeros((48, 48, 1), np.float32)
    mask[REGION] = 1.0
    positive = keras.initializers.RandomUniform(0.01, 0.1, seed=2)
    inputs = keras.Input((48, 48))
    x = layers.Reshape((48, 48, 1))(inputs)
    x = layers.Rescaling(1 / 255.0)(x)
    x = layers.Lambda(lambda t: t * mask)(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=False, kernel_initializer=positive)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", use_bias=False, kernel_initializer=positive)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax",
                           kernel_initializer=keras.initializers.RandomNormal(0.0, 3.0, seed=3))(x)
    return keras.Model(inputs, outputs)


def inside_outside(maps):
    inside = np.zeros((48, 48), bool)
    inside[REGION] = True
    return np.abs(maps[..., inside]).mean(), np.abs(maps[..., ~inside]).mean()


def test_last_conv_layer_is_found(tiny_cnn):
    assert explain.last_conv_layer(tiny_cnn) == "last_conv"
    fc = models.build("fc_2304_256_512_7")
    assert not explain.has_conv_layer(fc)
    with pytest.raises(ValueError, match="no convolutional layer"):
        explain.grad_cam(fc, np.zeros((48, 48)))


def test_grad_cam_maps_have_the_input_shape_and_range(tiny_cnn, faces):
    one = explain.grad_cam(tiny_cnn, faces[0])
    assert one.shape == (48, 48) and one.dtype == np.float32
    many = explain.grad_cam(tiny_cnn, faces, label=2)
    assert many.shape == (6, 48, 48)
    assert np.all((many >= 0) & (many <= 1)) and np.isfinite(many).all()
    assert all(m.max() == pytest.approx(1.0) or m.max() == 0 for m in many)
    per_face = explain.grad_cam(tiny_cnn, faces, label=np.arange(6))
    assert np.allclose(per_face[2], many[2], atol=1e-5)  # same class, same map
    assert np.allclose(explain.grad_cam(tiny_cnn, faces[:1])[0], one, atol=1e-5)


def test_grad_cam_highlights_the_only_region_the_model_sees(region_model, faces):
    cams = explain.grad_cam(region_model, faces)  # the predicted class of each face
    assert (cams.max(axis=(1, 2)) > 0).all()
    inside, outside = inside_outside(cams)
    assert inside > 5 * outside, (inside, outside)
    for cam in cams:
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        assert 2 <= row < 22 and 24 <= col < 46, (row, col)


def test_lime_map_has_the_input_shape(tiny_cnn, faces):
    res = explain.lime_explain(tiny_cnn, faces[0], num_samples=200, num_features=4)
    proba = tiny_cnn.predict(faces[:1].astype(np.float32), verbose=0)[0]
    assert res.label == int(np.argmax(proba)) and np.allclose(res.proba, proba, atol=1e-5)
    assert res.heatmap.shape == (48, 48) and res.segments.shape == (48, 48) and res.mask.shape == (48, 48)
    assert 20 <= res.segments.max() + 1 <= 70, "superpixels sized for a 48x48 face"
    assert np.isfinite(res.heatmap).all() and np.abs(res.heatmap).max() <= 1.0  # probability changes
    assert res.mask.dtype == bool and len(np.unique(res.segments[res.mask])) <= 4
    other = explain.lime_explain(tiny_cnn, faces[0], label=5, num_samples=200)
    assert other.label == 5


def test_lime_finds_the_only_region_the_model_sees(region_model, faces):
    res = explain.lime_explain(region_model, faces[1], num_samples=400)
    inside, outside = inside_outside(res.heatmap)
    assert inside > 3 * outside, (inside, outside)
    assert res.score > 0.3, "the local linear model should fit"


def test_explain_examples_and_summaries(tiny_cnn, faces):
    lime_maps, cams, results = explain.explain_examples(tiny_cnn, faces[:3], num_samples=100, progress=False)
    assert lime_maps.shape == (3, 48, 48) and cams.shape == (3, 48, 48) and len(results) == 3
    shares = explain.region_shares(np.ones((2, 48, 48)))
    assert shares.sum() == pytest.approx(1.0) and shares["mouth and chin"] == pytest.approx(14 / 48)


def test_pick_examples_right_and_wrong_per_class():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.eye(NUM_CLASSES)[[0, 1, 1, 1, 0, 0]]
    picks = explain.pick_examples(y, proba, per_class=1, seed=0)
    right, wrong = picks[picks["correct"]], picks[~picks["correct"]]
    assert sorted(right["true"]) == [0, 1] and sorted(wrong["true"]) == [0, 2]
    assert (wrong["pred"] != wrong["true"]).all() and (right["pred"] == right["true"]).all()



def test_grad_cam_reaches_into_a_nested_backbone(faces):
    """Transfer-learning models wrap a pretrained backbone as one layer: Grad-CAM uses its output."""
    keras.utils.set_random_seed(4)
    backbone_in = keras.Input((48, 48, 1))
    backbone = keras.Model(backbone_in, layers.Conv2D(8, 3, padding="same", activation="relu")(backbone_in),
                           name="backbone")
    inputs = keras.Input((48, 48))
    x = backbone(layers.Rescaling(1 / 255.0)(layers.Reshape((48, 48, 1))(inputs)))
    model = keras.Model(inputs, layers.Dense(NUM_CLASSES, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    assert explain.last_conv_layer(model) == "backbone"
    cams = explain.grad_cam(model, faces[:2])
    assert cams.shape == (2, 48, 48) and np.all((cams >= 0) & (cams <= 1))


def test_grad_cam_explains_the_network_inside_an_inference_model():
    from fer_utils import models
    from fer_utils.train import inference_model

    keras.utils.set_random_seed(0)
    net = models.build("cnn_small", image_size=40)
    flip = inference_model(net, 40, "flip")  # the released champion's shape: crop, views, correction
    wrapped = keras.Model(flip.inputs, models.PriorCorrection([1.0] * 7)(flip.outputs[0]))
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48)).astype(np.float32)
    assert explain.has_conv_layer(wrapped)
    maps = explain.grad_cam(wrapped, faces, label=3)
    assert maps.shape == (2, 48, 48) and maps[:, :4].max() == 0 and maps[:, :, 44:].max() == 0
    np.testing.assert_allclose(maps[:, 4:44, 4:44], explain.grad_cam(net, faces[:, 4:44, 4:44], label=3), atol=1e-6)
    last = explain.last_conv_layer(net)
    assert explain.gradcam_layer(wrapped) == f"{last} of cnn_small (inside {wrapped.name})"
    assert explain.gradcam_layer(inference_model(net, 40, "ten_crop")).startswith(last)  # notebook 04's VGG shape
    assert explain.gradcam_layer(net) == last and explain.gradcam_layer(models.build("fc_2304_256_512_7")) is None


def test_a_transfer_model_that_resizes_the_face_inside_has_no_grad_cam_but_lime():
    """notebook 08 on the stand-in may pick notebook 05's model: LIME only, no error (make all without data)."""
    from fer_utils import transfer

    keras.utils.set_random_seed(0)
    model = transfer.build_model("resnet18", size=32)
    assert not explain.has_conv_layer(model) and explain.gradcam_layer(model) is None
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48)).astype(np.uint8)
    lime_maps, cams, _ = explain.explain_examples(model, faces, np.array([0, 1]), num_samples=20, seed=0)
    assert cams is None and lime_maps.shape == (2, 48, 48)

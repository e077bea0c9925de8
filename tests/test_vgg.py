"""Write-up 003: the VGG builder and its recipes (notebook 04)."""

import itertools

import numpy as np
import pytest

from fer_utils import models, vgg
from fer_utils.config import import_keras

keras = import_keras()
layers = keras.layers


# ---------------------------------------------------------------------------------------------
# The network


def test_vgg_at_full_width_has_the_papers_layers_and_parameter_count():
    model = models.vgg()
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    filters = [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.filters for c in convs] == filters
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.use_bias for c in convs)
    assert len(norms) == 8 and len(pools) == 4
    assert [d.units for d in dense] == [4096, 4096, 7]
    assert sum(isinstance(layer, layers.Dropout) for layer in model.layers) == 2
    assert dense[-1].activation.__name__ == "softmax"

    # Each block is conv -> ReLU -> batch norm (the paper's order); each stage ends with a pool.
    kinds = [type(layer).__name__ for layer in model.layers]
    stage = ["Conv2D", "Activation", "BatchNormalization"] * 2 + ["MaxPooling2D"]
    start_at = kinds.index("Conv2D")
    assert kinds[start_at:start_at + 4 * len(stage)] == stage * 4
    assert model.get_layer("pool4").output.shape[1:] == (3, 3, 512)

    # Parameters: conv kernels + biases, batch norm (gamma, beta, moving mean and variance),
    # dense 3*3*512 -> 4096 -> 4096 -> 7 with biases.
    channels = [1] + filters
    conv_params = sum(9 * c_in * c_out + c_out for c_in, c_out in itertools.pairwise(channels))
    norm_params = sum(4 * c for c in filters)
    dense_params = (3 * 3 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 7 + 7)
    assert model.count_params() == conv_params + norm_params + dense_params == 40_380_359
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == model.count_params() - 2 * sum(filters)  # moving statistics are not trained


def test_vgg_width_block_order_and_contract():
    narrow = models.vgg(width=0.25, fc_units=512)
    assert [layer.filters for layer in narrow.layers if isinstance(layer, layers.Conv2D)] == [16, 16, 32, 32, 64, 64,
                                                                                               128, 128]
    assert narrow.name == "vgg_w0.25_fc512" and models.vgg_name() == "vgg"
    released = models.vgg(width=0.125, fc_units=16, block_order="conv_bn_relu")
    kinds = [type(layer).__name__ for layer in released.layers]
    first = kinds.index("Conv2D")
    assert kinds[first:first + 3] == ["Conv2D", "BatchNormalization", "Activation"]
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    proba = released.predict(faces, verbose=0)
    assert proba.shape == (2, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="block_order"):
        models.vgg(block_order="bn_conv")
    assert "vgg" in models.BUILDERS


def test_recipes_follow_the_paper_and_write_up_003():
    paper = vgg.vgg_paper_config("full", epoch_size=1000)
    assert (paper.optimizer, paper.learning_rate, paper.schedule, paper.patience, paper.epochs, paper.batch_size) == \
        ("sgd", 0.01, "plateau", None, 300, 64)
    assert (paper.crop, paper.tta, paper.weight_decay) == (40, "ten_crop", 1e-3)  # the paper's input and test views
    tuned = vgg.vgg_tuned_config("full")
    assert (tuned.optimizer, tuned.learning_rate, tuned.patience, tuned.augment, tuned.crop) == ("adam", 1e-4, 10, None, None)
    cpu = vgg.vgg_config("paper", "cpu", epoch_size=28709)
    # cpu: a cosine decay long enough to converge, batch and learning rate scaled together, a cap
    assert (cpu.epoch_size, cpu.schedule, cpu.epochs, cpu.batch_size) == (28709, "cosine", 50, 256)
    assert cpu.learning_rate == pytest.approx(0.04) and cpu.time_budget_s == 75 * 60 and cpu.precision == "auto"
    cpu_tuned = vgg.vgg_config("tuned", "cpu", epoch_size=28709)
    assert (cpu_tuned.patience, cpu_tuned.crop, cpu_tuned.tta, cpu_tuned.batch_size) == (10, 40, "none", 256)
    assert cpu_tuned.learning_rate == pytest.approx(2e-4)  # write-up 003's 1e-4 at batch 128, scaled with the batch
    assert vgg.vgg_config("paper", "smoke", epoch_size=28709).epoch_size == 320
    params = vgg.vgg_params("paper", "cpu")
    assert params["width"] == 0.25 and params["fc_units"] == 512 and params["paper_size"] is False
    assert params["differs_from_paper"] and vgg.vgg_params("tuned", "full")["paper_size"] is True
    assert vgg.vgg_model_name("tuned", "cpu") == "vgg_w0.25_fc512_tuned"
    assert vgg.vgg_model_name("paper", "full") == "vgg_paper"
    with pytest.raises(ValueError, match="recipe"):
        vgg.vgg_config("fancy", "cpu")

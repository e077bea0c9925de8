"""The model file (``fer_utils.model_file``): the one resolver of "which ONNX file", the one
model-card reader, and the optional-dependency message (``fer_utils.extras``)."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest

from fer_utils import export, extras, model_file
from fer_utils.config import CLASS_NAMES, FERPLUS_CLASS_NAMES, REPORTS_DIR
from fer_utils.model_file import ModelFileError, find_model, read_model_card, source_run
from onnx_helpers import tiny_ferplus_onnx, tiny_onnx, trained_tiny_ferplus


@pytest.fixture
def no_released_model(tmp_path, monkeypatch):
    """A checkout without its released models (models/*.onnx) and no package copy."""
    monkeypatch.setattr(model_file, "RELEASED_MODEL", tmp_path / "checkout" / "fer_champion.onnx")
    monkeypatch.setattr(model_file, "PACKAGED_MODEL", tmp_path / "package" / "fer_champion.onnx")
    return tmp_path


def test_find_model_takes_the_given_file_then_the_released_one_then_a_folder(no_released_model):
    tmp, default = no_released_model, model_file.RELEASED_MODELS[model_file.DEFAULT_MODEL]
    with pytest.raises(ModelFileError, match=rf"no model at .*checkout/{default}: the released model is not.*make 13"):
        find_model()
    (tmp / "notebook").mkdir()
    (tmp / "notebook" / default).write_bytes(b"exported by a notebook")
    assert find_model(folders=[tmp / "notebook"]) == tmp / "notebook" / default
    (tmp / "package").mkdir()
    (tmp / "package" / default).write_bytes(b"installed with the package")
    assert model_file.released_model() == tmp / "package" / default
    assert find_model(folders=[tmp / "notebook"]) == tmp / "package" / default
    (tmp / "checkout").mkdir()
    (tmp / "checkout" / default).write_bytes(b"in the checkout")
    assert find_model() == model_file.released_model() == tmp / "checkout" / default
    given = tmp / "mine.onnx"
    given.write_bytes(b"any file")
    assert find_model(given) == given


def test_each_released_model_is_found_by_name_whichever_is_the_default(no_released_model):
    tmp = no_released_model
    (tmp / "checkout").mkdir()
    for name, file in model_file.RELEASED_MODELS.items():
        with pytest.raises(ModelFileError, match=rf"checkout/{file}: the released {name} model is not in this checkout"):
            find_model(name)
        (tmp / "checkout" / file).write_bytes(name.encode())
        assert find_model(name) == model_file.released_model(name) == tmp / "checkout" / file
    assert model_file.released_model("fer2013").name == "fer_champion.onnx"
    assert model_file.released_model("ferplus").name == "ferplus_champion.onnx"
    with pytest.raises(ModelFileError, match="no released model called 'affectnet'"):
        model_file.released_model("affectnet")


def test_find_model_refuses_a_missing_or_keras_file_with_a_hint(tmp_path):
    with pytest.raises(ModelFileError, match=r"no model at .*absent\.onnx: no such file; set THIS"):
        find_model(tmp_path / "absent.onnx", hint="set THIS")
    keras_file = tmp_path / "model.keras"
    keras_file.write_text("x")
    with pytest.raises(ModelFileError, match="a Keras model; only ONNX models run here: convert it with"):
        find_model(keras_file)


def test_the_model_card_gives_the_source_run_and_the_accuracy(tmp_path):
    onnx_file = tmp_path / "fer_champion.onnx"
    assert read_model_card(onnx_file) is None and source_run(onnx_file) is None
    (tmp_path / "fer_champion.md").write_text(
        "exported from the Keras run `03_cnn_small_none_cpu` (model ...\n- PrivateTest accuracy 68.63%, balanced")
    card = read_model_card(onnx_file)
    assert card.source_run == source_run(onnx_file) == "03_cnn_small_none_cpu"
    assert card.private_test_accuracy == pytest.approx(0.6863)
    (tmp_path / "fer_champion.md").write_text("a card that says neither")
    assert read_model_card(onnx_file).source_run is None and read_model_card(onnx_file).private_test_accuracy is None


def test_the_released_model_card_is_read():
    if not model_file.RELEASED_MODEL.is_file():
        pytest.skip("no released model in this checkout")
    card = read_model_card(model_file.RELEASED_MODEL)
    assert card.source_run and 0.2 < card.private_test_accuracy < 1


def test_a_missing_optional_module_is_one_line_naming_the_extra():
    with pytest.raises(extras.MissingExtra) as missing:
        extras.require("no_such_module_here.sub", "plot", "the timeline plot")
    assert str(missing.value) == ('the timeline plot needs no_such_module_here, which is not installed: '
                                  'pip install "fer_utils[plot]"')
    assert isinstance(missing.value, ImportError) and missing.value.__cause__ is None
    assert extras.require("json", "plot", "anything").dumps([]) == "[]"


# ---------------------------------------------------------------------------------------------
# A model file says its classes


def with_classes(source, target, classes: str | None):
    """A copy of the ONNX file ``source`` at ``target`` whose ``classes`` metadata is ``classes``
    (None: removed, as in files exported before models said their classes)."""
    proto = onnx.load(str(source))
    kept = [p for p in proto.metadata_props if p.key != model_file.CLASSES_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if classes is not None:
        proto.metadata_props.append(onnx.StringStringEntryProto(key=model_file.CLASSES_KEY, value=classes))
    onnx.save(proto, str(target))
    return target


def test_the_classes_come_from_the_file_and_an_old_file_is_fer2013s(tmp_path):
    seven, eight = tiny_onnx(tmp_path), tiny_ferplus_onnx(tmp_path)
    assert model_file.OnnxClassifier(seven).class_names == CLASS_NAMES
    classifier = model_file.OnnxClassifier(eight)
    assert classifier.class_names == FERPLUS_CLASS_NAMES and classifier.predict(np.zeros((3, 48, 48))).shape == (3, 8)
    old = with_classes(seven, tmp_path / "old.onnx", None)
    assert model_file.OnnxClassifier(old).class_names == CLASS_NAMES, "a file without the metadata: FER2013's seven"
    with pytest.raises(ModelFileError, match=r"expects one input \(N, 48, 48\) and 8 outputs, one per class angry"):
        model_file.OnnxClassifier(with_classes(seven, tmp_path / "wrong.onnx", ",".join(FERPLUS_CLASS_NAMES)))
    with pytest.raises(ModelFileError, match="'classes' = 'happy,,sad' is not a list of distinct class names"):
        model_file.OnnxClassifier(with_classes(seven, tmp_path / "bad.onnx", "happy,,sad"))


def test_export_refuses_class_names_that_do_not_match_the_outputs(tmp_path):
    with pytest.raises(ValueError, match="gives 8 probabilities per face but 7 class names were given"):
        export.export_onnx(trained_tiny_ferplus(), tmp_path / "x.onnx")


def test_the_default_model_is_the_one_the_default_model_rule_chose_last():
    """``model_file.DEFAULT_MODEL`` agrees with notebook 13's last verdict on the real data
    (``reports/tables/13_ferplus_default_model.csv``), once there is one."""
    table_path = REPORTS_DIR / "tables" / "13_ferplus_default_model.csv"
    if not table_path.is_file():
        pytest.skip("notebook 13 has not applied the default-model rule on the real data yet")
    table = pd.read_csv(table_path, index_col=0)
    assert table.index[table["default"].astype(bool)].tolist() == [model_file.DEFAULT_MODEL]
    assert model_file.DEFAULT_MODEL in model_file.RELEASED_MODELS

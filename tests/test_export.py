"""Keras -> ONNX export with real tf2onnx and ONNX Runtime: parity, simplification, int8
quantization, the OnnxClassifier's errors, the latency benchmark and model selection."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fer_utils import config, evaluate, export, models, train
from onnx_helpers import faces, trained_tiny, tiny_onnx

keras = config.import_keras()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("onnx"))


def test_export_matches_keras(tiny_path):
    _, _, public = faces()
    report = export.check_parity(trained_tiny(), tiny_path, public)
    assert report["n"] == len(public)
    assert report["max_abs_diff"] < 1e-4
    assert report["argmax_agreement"] == 1.0
    graph = onnx.load(str(tiny_path)).graph
    assert graph.input[0].name == export.INPUT_NAME
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [48, 48] and graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert not list(tiny_path.parent.glob("*.tmp*")), "atomic write leaves no temp file"


def test_the_weights_of_an_exported_network_load_back_into_keras(tmp_path):
    def tiny_champion():
        return models.champion_cnn(stem=8, stages=((8, 1), (16, 1)), head_units=16, image_size=40)

    net, rng = tiny_champion(), np.random.default_rng(0)
    for layer in net.layers:  # batch-norm statistics that are not the identity, so the folding matters
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 2, n)])
    path = export.export_onnx(train.inference_model(net, 40, "flip"), tmp_path / "net.onnx")
    rebuilt = train.inference_model(export.load_weights_from_onnx(tiny_champion(), path), 40, "flip")
    x = faces()[2][:16]
    np.testing.assert_allclose(train.predict_proba(rebuilt, x), export.OnnxClassifier(path).predict(x), atol=1e-5)
    with pytest.raises(export.ModelFileError, match=r"net\.onnx: 3 convolutions and 2 dense layers, but cnn_small"):
        export.load_weights_from_onnx(models.build("cnn_small", image_size=40), path)


def test_export_project_cnn_from_keras_file(tmp_path):
    model = models.build("cnn_small")  # BatchNorm, Dropout, GlobalAveragePooling: a real project model
    keras_file = tmp_path / "cnn_small.keras"
    model.save(keras_file)
    path = export.export_onnx(keras_file, tmp_path / "cnn_small.onnx")
    faces_ = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    keras_proba = model.predict(faces_.astype(np.float32), verbose=0)
    report = export.parity(keras_proba, export.OnnxClassifier(path).predict(faces_))
    assert report["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("method", ["onnxslim", "ort"])
def test_simplify_keeps_outputs_and_reports_node_counts(tiny_path, tmp_path, method):
    if method == "onnxslim":
        pytest.importorskip("onnxslim")
    out = tmp_path / f"slim_{method}.onnx"
    info = export.simplify_onnx(tiny_path, out, method)
    assert info["method"] == method
    assert 0 < info["nodes_after"] <= info["nodes_before"] == export.node_count(tiny_path)
    assert info["nodes_after"] == export.node_count(out) == sum(info["ops_after"].values())
    _, _, public = faces()
    before, after = export.OnnxClassifier(tiny_path).predict(public), export.OnnxClassifier(out).predict(public)
    assert export.parity(before, after)["max_abs_diff"] < 1e-5


def test_static_int8_runs_and_mostly_agrees(tiny_path, tmp_path):
    x, _, public = faces()
    path = export.quantize_int8(tiny_path, tmp_path / "tiny.int8.onnx", calibration_faces=x[:200])
    ops = export.op_counts(path)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    agree = export.parity(export.OnnxClassifier(tiny_path).predict(public), export.OnnxClassifier(path).predict(public))
    assert agree["argmax_agreement"] >= 0.9, agree


def test_dynamic_int8_runs_and_static_needs_calibration(tiny_path, tmp_path):
    path = export.quantize_int8(tiny_path, tmp_path / "dyn.int8.onnx", mode="dynamic")
    proba = export.OnnxClassifier(path).predict(faces()[2][:8])
    assert proba.shape == (8, 7) and np.allclose(proba.sum(1), 1, atol=1e-3)
    with pytest.raises(ValueError, match="calibration_faces"):
        export.quantize_int8(tiny_path, tmp_path / "x.onnx", calibration_faces=None)


def test_classifier_takes_uint8_faces_and_plugs_into_evaluate(tiny_path, small_ds):
    clf = export.OnnxClassifier(tiny_path, threads=1)
    one = clf.predict(small_ds.pixels[0])
    assert one.shape == (1, 7) and one.dtype == np.float32
    assert clf.predict(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    assert clf.predict(small_ds.pixels[:3, :, :, None]).shape == (3, 7)
    metrics = evaluate.evaluate_splits(clf.predict, small_ds)
    assert 0 <= metrics["PrivateTest"]["accuracy"] <= 1
    with pytest.raises(ValueError, match=r"\(N, 48, 48\)"):
        clf.predict(np.zeros((2, 32, 32), np.uint8))


def test_classifier_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing.onnx"
    with pytest.raises(export.ModelFileError, match="nothing.onnx: no such model file"):
        export.OnnxClassifier(missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("this is not a model")
    with pytest.raises(export.ModelFileError, match="garbage.onnx: not a valid ONNX model"):
        export.OnnxClassifier(garbage)
    with pytest.raises(export.ModelFileError, match="is a folder"):
        export.OnnxClassifier(tmp_path)
    # a valid ONNX model that is not a FER classifier
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    other = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    other.ir_version = 8
    onnx.save(other, tmp_path / "identity.onnx")
    with pytest.raises(export.ModelFileError, match="identity.onnx: not a FER classifier"):
        export.OnnxClassifier(tmp_path / "identity.onnx")
    with pytest.raises(export.ModelFileError, match="missing.keras: no such Keras model file"):
        export.load_keras_model(tmp_path / "missing.keras")


def test_export_bundle_writes_fp32_and_int8(tmp_path):
    x, _, public = faces()
    info = export.export_bundle(trained_tiny(), tmp_path, "tiny_run", public, x[:200])
    assert info["onnx"] == tmp_path / "tiny_run.onnx" and info["int8"] == tmp_path / "tiny_run.int8.onnx"
    assert info["onnx"].exists() and info["int8"].exists() and not list(tmp_path.glob("*.tmp*"))
    assert info["parity"]["max_abs_diff"] < 1e-4 and info["parity"]["argmax_agreement"] == 1.0
    assert info["int8_vs_fp32"]["argmax_agreement"] >= 0.9
    assert info["nodes_simplified"] <= info["nodes_exported"] and info["nodes_int8"] > info["nodes_simplified"]
    assert info["onnx_mb"] > 0 and info["int8_mb"] > 0


def test_benchmark_reports_ms_per_face_per_engine_and_batch(tiny_path):
    _, _, public = faces()
    model = trained_tiny()
    predictors = {**export.keras_predictors(model), "ONNX fp32": export.OnnxClassifier(tiny_path, threads=1)}
    table = export.benchmark(predictors, public, batch_sizes=(1, 8), repeats=5, warmup=1, progress=False,
                             threads={"ONNX fp32": "1"})
    assert len(table) == 6 and set(table.engine) == set(predictors)
    assert (table.ms_per_face > 0).all() and (table.calls == 5).all()
    row = table[(table.engine == "ONNX fp32") & (table.batch == 8)].iloc[0]
    assert row.ms_per_face == pytest.approx(row.ms_per_call / 8) and row.threads == "1"
    sped = export.speedups(table)
    assert np.allclose(sped[sped.engine == "Keras predict"].speedup, 1.0)


def _record(tmp_path, run, model, public_acc, fingerprint="abc", with_file=True):
    path = tmp_path / "models" / f"{run}.keras"
    if with_file:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    return {"run": run, "model": model, "model_file": str(path), "dataset": {"fingerprint": fingerprint},
            "metrics": {"PublicTest": {"accuracy": public_acc}, "PrivateTest": {"accuracy": 0.5}}}


def test_release_writes_model_and_card(tmp_path, tiny_path):
    record = json.loads(json.dumps(_record(tmp_path, "03_cnn_small_none_cpu", "cnn_small", 0.6)))
    record["metrics"]["PrivateTest"].update(balanced_accuracy=0.4, macro_f1=0.4, top2=0.7)
    info = {"parity": {"max_abs_diff": 1e-7, "argmax_agreement": 1.0}, "nodes_simplified": 12, "onnx_mb": 0.01}
    onnx_file, card = export.release_model(tiny_path, record, info, tmp_path / "release")
    assert onnx_file.name == "fer_champion.onnx"
    assert export.OnnxClassifier(onnx_file).predict(faces()[2][:2]).shape == (2, 7)
    text = card.read_text()
    assert "0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral" in text
    for section in ("## Data", "## Metrics", "## Intended use", "## Limitations"):
        assert section in text


def test_the_card_says_what_the_graph_does_besides_the_network(tmp_path, tiny_path):
    record = json.loads(json.dumps(_record(tmp_path, "12_champion_cnn_none_cpu", "champion_cnn", 0.6)))
    info = {"parity": {"max_abs_diff": 1e-7, "argmax_agreement": 1.0}, "nodes_simplified": 12, "onnx_mb": 0.01}
    assert "Inside the graph" not in export.model_card(record, info)
    record["params"] = {"crop": 40, "tta": "flip", "prior_correction_tau": 0.3}
    text = export.model_card(record, info)
    assert "centre 40x40 pixels" in text and "mirror image" in text and "power 0.3" in text

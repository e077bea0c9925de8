"""Keras -> ONNX export, parity check, graph simplification, int8 quantization, latency
benchmarks and the release of a model (notebook 09's chapter). Running an exported model is the
runtime's part: :class:`model_file.OnnxClassifier` (imported here for the lab's use).

The exported graph keeps the project's model contract: input ``face`` float32 ``(N, 48, 48)``
with pixel values 0-255 (scaling is inside the graph), output softmax probabilities ``(N, classes)``
whose class names, in output order, the file's metadata holds (``classes``: ``config.CLASS_NAMES``
for a FER2013 model, ``config.FERPLUS_CLASS_NAMES`` for one trained on FER+ labels). Every file is
written atomically (temp file, then rename).

Typical use::

    info = export_bundle("models/03_cnn_small_none_cpu.keras", "models", "03_cnn_small_none_cpu",
                         parity_faces=x_public, calibration_faces=x_train[:512])
    clf = OnnxClassifier(info["onnx"])          # clf.predict(uint8 faces (N, 48, 48)) -> (N, 7)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from .progress import tqdm

from .data import sample_per_class
from .evaluate import model_path
from .runs import RunStore, select_for_export
from .naming import TARGET_WORDS
from .timing import time_calls
from .files import atomic_path, write_text_atomic
from .machine import cpu
from .config import CLASS_NAMES, IMAGE_SIZE, import_keras, quiet_native_stderr
# The runtime side of a model file lives in model_file (the recognizer needs it without this lab
# module); source_run and RELEASED_MODEL are also imported from here by champion.py and the tests.
from .model_file import CLASSES_KEY, RELEASED_MODEL, ModelFileError, OnnxClassifier, find_model, source_run  # noqa: F401

ONNX_OPSET = 17  #: opset of exported graphs (ONNX Runtime >= 1.14 runs it)
INPUT_NAME = "face"  #: name of the exported graph's input

# ---------------------------------------------------------------------------------------------
# Export


def _save_onnx_atomic(onnx_model, path: Path) -> Path:
    import onnx

    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(onnx_model, str(tmp))
    return path


def load_keras_model(source: str | os.PathLike | dict):
    """A saved ``.keras`` model, from its path or a metrics record naming it (``model_file``), not
    compiled; :class:`ModelFileError` naming the path if missing or unreadable."""
    keras = import_keras()
    from . import models  # noqa: F401  (registers the project's custom layers for loading)

    path = model_path(source) if isinstance(source, dict) else Path(source)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such Keras model file")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001  (Keras raises many kinds)
        raise ModelFileError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from None


def export_onnx(model, path: str | os.PathLike, opset: int = ONNX_OPSET,
                class_names: tuple[str, ...] | None = None) -> Path:
    """Convert a Keras model (or a ``.keras`` path) to ONNX at ``path`` with tf2onnx.

    The graph's input is ``face``: float32 ``(None, 48, 48)``, pixel values 0-255; its output
    is the model's ``(None, classes)`` probabilities, and the file's metadata names the classes
    (``class_names``, in output order; default FER2013's seven, which a model with another number
    of outputs must not take: ``ValueError``). Works with Keras 3 functional and sequential
    models (``tf2onnx.convert.from_keras``, falling back to tracing ``model(x)`` in a
    ``tf.function`` when that fails).
    """
    import tensorflow as tf
    import tf2onnx

    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    class_names = tuple(class_names or CLASS_NAMES)
    if model.output_shape[-1] != len(class_names):
        raise ValueError(f"{getattr(model, 'name', 'the model')} gives {model.output_shape[-1]} probabilities per face "
                         f"but {len(class_names)} class names were given ({', '.join(class_names)}): pass its class_names")
    spec = (tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.float32, name=INPUT_NAME),)
    with quiet_native_stderr():
        try:
            onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
        except Exception:  # noqa: BLE001  (tf2onnx's Keras path breaks on some Keras 3 models)
            function = tf.function(lambda face: model(face, training=False), input_signature=spec)
            onnx_model, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    onnx_model.doc_string = f"Facial expression classifier; classes: {', '.join(class_names)}"
    _set_metadata(onnx_model, {CLASSES_KEY: ",".join(class_names), "input": "face float32 (N,48,48) 0-255",
                               "source_model": getattr(model, "name", "")})
    return _save_onnx_atomic(onnx_model, Path(path))


def _onnx_weights(path: Path) -> tuple[list[tuple], list[tuple]]:
    """An exported graph's convolutions ``(kernel OIHW, bias)`` and dense layers ``(weights,
    bias)``, each once (a graph that runs the network once per test-time view shares them), in
    graph order; a zero bias, which tf2onnx leaves out, comes back as zeros."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    bias_of = {x: next((values[v] for v in n.input if v in values), None)
               for n in graph.node if n.op_type == "Add" for x in n.input}
    convs, dense, seen = [], [], set()
    for node in graph.node:
        weight = node.input[1] if len(node.input) > 1 else None
        if weight in seen or weight not in values:
            continue
        if node.op_type == "Conv":
            seen.add(weight)
            bias = values[node.input[2]] if len(node.input) > 2 else None
            convs.append((values[weight], np.zeros(values[weight].shape[0], "float32") if bias is None else bias))
        elif node.op_type == "MatMul":
            seen.add(weight)
            bias = bias_of.get(node.output[0])
            dense.append((values[weight], np.zeros(values[weight].shape[1], "float32") if bias is None else bias))
    return convs, dense


def load_weights_from_onnx(net, path: str | os.PathLike):
    """Fill ``net`` (a freshly built Keras network of the architecture the ONNX file at ``path``
    was exported from: convolutions, batch norms and dense layers) with that file's weights and
    return it. tf2onnx folds each batch normalisation into the convolution before it, so the
    convolution gets the folded kernel and its batch norm the identity plus the folded shift
    (scale 1, mean 0, variance 1 - epsilon, offset): the same function at inference, though not
    the training-time statistics. :class:`ModelFileError` if the file does not fit ``net``."""
    keras = import_keras()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file")
    convs, dense = _onnx_weights(path)
    layers = [layer for layer in net.layers
              if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Dense))]
    wanted = sum(isinstance(layer, keras.layers.Conv2D) for layer in layers), \
        sum(isinstance(layer, keras.layers.Dense) for layer in layers)
    if wanted != (len(convs), len(dense)):
        raise ModelFileError(f"{path}: {len(convs)} convolutions and {len(dense)} dense layers, "
                             f"but {net.name} has {wanted[0]} and {wanted[1]}")
    convs, dense, folded = iter(convs), iter(dense), None
    try:
        for layer in layers:
            if isinstance(layer, keras.layers.Conv2D):
                kernel, bias = next(convs)
                layer.set_weights([kernel.transpose(2, 3, 1, 0)] + ([bias] if layer.use_bias else []))
                folded = None if layer.use_bias else bias
            elif isinstance(layer, keras.layers.BatchNormalization):
                if folded is None:
                    raise ValueError(f"{layer.name} does not follow a convolution without bias")
                ones = np.ones_like(folded)
                layer.set_weights([ones, folded, np.zeros_like(folded), ones - layer.epsilon])
                folded = None
            else:
                weights, bias = next(dense)
                layer.set_weights([weights] + ([bias] if layer.use_bias else []))
    except ValueError as exc:  # a shape that does not fit
        raise ModelFileError(f"{path}: its weights do not fit {net.name} ({exc})") from None
    return net


def _set_metadata(onnx_model, values: dict) -> None:
    import onnx

    existing = {p.key: p for p in onnx_model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            onnx_model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))


def node_count(model_or_path) -> int:
    """Number of nodes in an ONNX graph (a path or an ``onnx.ModelProto``)."""
    return sum(op_counts(model_or_path).values())


def op_counts(model_or_path) -> dict[str, int]:
    """Nodes per operator type, e.g. ``{"Conv": 4, "Relu": 5, ...}``, most frequent first."""
    import onnx

    graph = (onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def simplify_onnx(src: str | os.PathLike, dst: str | os.PathLike, method: str = "auto") -> dict:
    """Simplify an ONNX graph (constant folding, fusions, dead-node removal) into ``dst``.

    ``method``: ``onnxslim`` (the onnxslim package), ``ort`` (ONNX Runtime's basic offline graph
    optimizations, saved to file; the result stays portable ONNX) or ``auto`` (onnxslim if it
    is installed, else ``ort``). Returns ``{method, nodes_before, nodes_after, ops_before, ops_after}``.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    if method == "auto":
        try:
            import onnxslim  # noqa: F401
            method = "onnxslim"
        except ImportError:
            method = "ort"
    before = op_counts(src)
    if method == "onnxslim":
        import onnxslim

        simplified = onnxslim.slim(onnx.load(str(src)))
        _save_onnx_atomic(simplified, dst)
    elif method == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        with atomic_path(dst, suffix=".onnx") as tmp:
            options.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    else:
        raise ValueError(f"method={method!r}: choose 'auto', 'onnxslim' or 'ort'")
    after = op_counts(dst)
    return {"method": method, "nodes_before": sum(before.values()), "nodes_after": sum(after.values()),
            "ops_before": before, "ops_after": after}


# ---------------------------------------------------------------------------------------------
# Quantization


def _calibration_reader(faces: np.ndarray, input_name: str, batch: int = 32):
    """An ONNX Runtime ``CalibrationDataReader`` feeding ``faces`` (uint8 ``(N, 48, 48)``) in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class FaceReader(CalibrationDataReader):
        def __init__(self):
            self.faces, self.position = np.asarray(faces, dtype=np.float32), 0

        def get_next(self):
            if self.position >= len(self.faces):
                return None
            self.position += batch
            return {input_name: self.faces[self.position - batch:self.position]}

        def rewind(self):
            self.position = 0

    return FaceReader()


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration_faces: np.ndarray | None = None,
                  mode: str = "static", per_channel: bool = True) -> Path:
    """int8-quantize an ONNX classifier with ONNX Runtime into ``dst``.

    ``mode="static"`` (the default, what keeps accuracy for conv nets): weights int8 per output
    channel, activations uint8 with ranges calibrated (min-max) on ``calibration_faces`` (uint8
    ``(N, 48, 48)`` training faces, a few hundred suffice), QDQ format. ``mode="dynamic"``:
    weights int8, activation ranges computed at run time; needs no calibration data.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        try:  # shape inference + basic optimization, as ONNX Runtime recommends before quantizing
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001  (pre-processing is an optimization, not a requirement)
            shutil.copyfile(src, prepared)
        out = Path(work) / "quantized.onnx"
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
        elif mode == "static":
            if calibration_faces is None or len(calibration_faces) == 0:
                raise ValueError("static quantization needs calibration_faces (uint8 (N, 48, 48) training faces)")
            reader = _calibration_reader(calibration_faces, _input_name(prepared))
            quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=per_channel)
        else:
            raise ValueError(f"mode={mode!r}: choose 'static' or 'dynamic'")
        with atomic_path(dst, suffix=".onnx") as tmp:
            shutil.copyfile(out, tmp)
    return dst


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path)).graph.input[0].name


# ---------------------------------------------------------------------------------------------
# Parity


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """How closely two probability arrays ``(N, 7)`` agree: max and mean absolute difference
    and the share of rows with the same argmax (0-1)."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    diff = np.abs(reference - candidate)
    return {"n": int(len(reference)), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "argmax_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()) if len(reference) else 1.0}


def check_parity(keras_model, onnx_path: str | os.PathLike, faces: np.ndarray, batch_size: int = 256) -> dict:
    """Parity of an exported model with its Keras original on uint8 faces ``(N, 48, 48)``
    (e.g. PublicTest): see :func:`parity`."""
    reference = keras_model.predict(np.asarray(faces, np.float32), batch_size=batch_size, verbose=0)
    return parity(reference, OnnxClassifier(onnx_path).predict(faces, batch_size))


def file_size_mb(path: str | os.PathLike) -> float:
    """File size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6


# ---------------------------------------------------------------------------------------------
# One model, end to end


def export_bundle(model, out_dir: str | os.PathLike, name: str, parity_faces: np.ndarray,
                  calibration_faces: np.ndarray | None = None, quantization: str = "static",
                  simplify_method: str = "auto", opset: int = ONNX_OPSET,
                  class_names: tuple[str, ...] | None = None) -> dict:
    """Export, simplify, int8-quantize and parity-check one Keras model (or ``.keras`` path) whose
    outputs are ``class_names`` (default FER2013's seven; :func:`export_onnx`).

    Writes ``<out_dir>/<name>.onnx`` (simplified fp32) and ``<out_dir>/<name>.int8.onnx``.
    Returns a dict: paths (``onnx``, ``int8``), ``nodes_exported``, ``nodes_simplified``,
    ``nodes_int8``, ``simplify_method``, sizes in MB (``keras_mb`` when a path was given,
    ``onnx_mb``, ``int8_mb``), ``parity`` (fp32 vs Keras on ``parity_faces``) and
    ``int8_vs_fp32`` (int8 vs fp32 on the same faces).
    """
    keras_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    if keras_path is not None:
        model = load_keras_model(keras_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, int8_path = out_dir / f"{name}.onnx", out_dir / f"{name}.int8.onnx"
    with tempfile.TemporaryDirectory() as work:
        raw = export_onnx(model, Path(work) / "exported.onnx", opset=opset, class_names=class_names)
        simplified = simplify_onnx(raw, onnx_path, simplify_method)
    quantize_int8(onnx_path, int8_path, calibration_faces, mode=quantization)
    fp32 = OnnxClassifier(onnx_path).predict(parity_faces)
    int8 = OnnxClassifier(int8_path).predict(parity_faces)
    reference = model.predict(np.asarray(parity_faces, np.float32), batch_size=256, verbose=0)
    info = {
        "name": name, "onnx": onnx_path, "int8": int8_path, "opset": opset,
        "nodes_exported": simplified["nodes_before"], "nodes_simplified": simplified["nodes_after"],
        "nodes_int8": node_count(int8_path), "simplify_method": simplified["method"], "quantization": quantization,
        "onnx_mb": file_size_mb(onnx_path), "int8_mb": file_size_mb(int8_path),
        "parity": parity(reference, fp32), "int8_vs_fp32": parity(fp32, int8), "keras_model": model,
    }
    if keras_path is not None:
        info["keras_mb"] = file_size_mb(keras_path)
        info["keras_file"] = keras_path
    return info


# ---------------------------------------------------------------------------------------------
# Latency


def tf_threads() -> str:
    """TensorFlow's intra-op thread setting in words (0 means one per core)."""
    import tensorflow as tf

    n = tf.config.threading.get_intra_op_parallelism_threads()
    return str(n) if n else f"TF default ({cpu().logical} cores)"


def keras_predictors(model) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """``Keras predict`` (``model.predict``, what the issue's target compares with) and
    ``Keras call`` (``model(x, training=False)``, without predict's per-call set-up)."""
    return {
        "Keras predict": lambda x: model.predict(np.asarray(x, np.float32), batch_size=max(len(x), 1), verbose=0),
        "Keras call": lambda x: np.asarray(model(np.asarray(x, np.float32), training=False)),
    }


def benchmark(predictors: dict[str, Callable[[np.ndarray], np.ndarray]], faces: np.ndarray,
              batch_sizes: tuple[int, ...] = (1, 64), repeats: int = 100, warmup: int = 5,
              max_seconds: float = 20.0, threads: dict[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Latency of each predictor (a function faces -> probabilities) at each batch size, in one run.

    Each call gets the next ``batch`` faces of ``faces`` (uint8 ``(N, 48, 48)``, cycled); after
    ``warmup`` untimed calls, up to ``repeats`` calls are timed one by one (fewer if a cell
    exceeds ``max_seconds``, at least 5). Returns one row per (engine, batch): ``ms_per_face``
    (median call time / batch, ms), ``ms_per_call`` (median), ``p90_ms_per_call``,
    ``faces_per_s``, ``calls`` timed and ``threads`` (from ``threads``, by engine name).
    """
    faces = np.asarray(faces)
    if len(faces) == 0:
        raise ValueError("benchmark needs at least one face")
    rows = []
    cells = [(name, b) for name in predictors for b in batch_sizes]
    for name, batch in tqdm(cells, desc="latency", disable=not progress):
        fn = predictors[name]
        reps = np.resize(np.arange(len(faces)), batch * (repeats + warmup)).reshape(repeats + warmup, batch)
        ms = 1000 * time_calls(lambda i: fn(faces[reps[i]]), repeats, warmup, max_seconds)
        rows.append({"engine": name, "batch": batch, "ms_per_face": float(np.median(ms) / batch),
                     "ms_per_call": float(np.median(ms)), "p90_ms_per_call": float(np.percentile(ms, 90)),
                     "faces_per_s": float(1000 * batch / np.median(ms)), "calls": len(ms),
                     "threads": (threads or {}).get(name, "")})
    return pd.DataFrame(rows)


def speedups(table: pd.DataFrame, baseline: str = "Keras predict") -> pd.DataFrame:
    """``benchmark`` table plus ``speedup``: the baseline engine's ms/face over each row's, per batch."""
    base = table[table.engine == baseline].set_index("batch")["ms_per_face"]
    out = table.copy()
    out["speedup"] = [base.get(b, np.nan) / m for b, m in zip(out.batch, out.ms_per_face)]
    return out


# ---------------------------------------------------------------------------------------------
# Choosing and releasing models


def release_model(onnx_path: str | os.PathLike, record: dict, info: dict, out_dir: str | os.PathLike,
                  name: str = "fer_champion") -> tuple[Path, Path]:
    """Copy an exported model to ``<out_dir>/<name>.onnx`` and write its model card
    ``<out_dir>/<name>.md`` (data, metrics, intended use, limitations, label order). Atomic."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.onnx"
    with atomic_path(target, suffix=".onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    card = write_text_atomic(out_dir / f"{name}.md", model_card(record, info, target.name))
    return target, card


def _inside_the_graph(params: dict) -> list[str]:
    """Model-card lines for what a model does to a face besides the network (crop, test-time
    views, prior correction), from its metrics record's ``params``; none when it does nothing."""
    steps = []
    if params.get("crop"):
        steps.append(f"takes the centre {params['crop']}x{params['crop']} pixels of the 48x48 face (it was trained on "
                     f"random {params['crop']}-pixel crops)")
    views = {"flip": "averages the probabilities of the face and its mirror image",
             "ten_crop": "averages the probabilities of ten views (four corner crops, the centre crop and their mirrors)"}
    if params.get("tta") in views:
        steps.append(views[params["tta"]])
    if params.get("prior_correction_tau"):
        steps.append(f"divides each probability by its class's Training frequency to the power "
                     f"{params['prior_correction_tau']:g} and renormalises (tau chosen on PublicTest)")
    return ["- Inside the graph, the model " + "; ".join(steps) + ".", ""] if steps else []


def model_card(record: dict, info: dict, file_name: str = "fer_champion.onnx") -> str:
    """A short Markdown model card for a released ONNX model, from its metrics record and the
    :func:`export_bundle` info (plus optional ``int8_accuracy`` / ``latency_ms_per_face`` and
    ``card_notes``, more lines for its metrics section)."""
    ds, m = record.get("dataset", {}), record["metrics"]
    classes = record.get("classes", CLASS_NAMES)
    ferplus = ds.get("labels", {}).get("name") == "ferplus"

    def pct(split, key="accuracy"):
        value = m.get(split, {}).get(key)
        return "n/a" if value is None else f"{100 * value:.2f}%"

    synthetic = ds.get("synthetic")
    lines = [
        f"# Model card: `{file_name}`",
        "",
        f"Facial expression classifier exported from the Keras run `{record['run']}` "
        f"(model `{record.get('model')}`, sampling `{record.get('sampling')}`, profile `{record.get('profile')}`), "
        f"notebook `{record.get('notebook')}`.",
        "",
        "## Input and output",
        "",
        "- Input `face`: float32 `(N, 48, 48)`, one grayscale face per row, pixel values 0-255 (no scaling "
        "needed: it is inside the graph). Crop the face square with a small margin, convert to gray, resize to 48x48.",
        f"- Output: {len(classes)} softmax probabilities `(N, {len(classes)})` in this order (also in the file's "
        f"metadata, `{CLASSES_KEY}`): " + ", ".join(f"{i} {c}" for i, c in enumerate(classes)) + ".",
        f"- ONNX opset {info.get('opset', ONNX_OPSET)}, {info.get('nodes_simplified', '?')} nodes, "
        f"{info.get('onnx_mb', float('nan')):.2f} MB; parity with Keras on PublicTest: max |diff| "
        f"{info.get('parity', {}).get('max_abs_diff', float('nan')):.1e}, argmax agreement "
        f"{100 * info.get('parity', {}).get('argmax_agreement', float('nan')):.2f}%.",
        "",
        *_inside_the_graph(record.get("params", {})),
        "## Data",
        "",
        ("- **SYNTHETIC stand-in data, not FER2013**: this file only demonstrates the pipeline."
         if synthetic else "- FER2013 (Goodfellow et al., 2013), official split: trained on Training, "
         "selected on PublicTest, reported on PrivateTest."),
        ("- Labels: FER+ majority (FER+, Barsoum et al., 2016: ten annotators per FER2013 face; trained on their "
         f"{TARGET_WORDS.get(record.get('params', {}).get('targets'), 'votes')} on the Training split, scored against "
         "the majority label over eight classes, faces without one left out)." if ferplus else
         "- Labels: FER2013 (one annotator per face)."),
        f"- Dataset fingerprint `{ds.get('fingerprint', '?')}`; Training {ds.get('n_train', '?')}, "
        f"PublicTest {ds.get('n_val', '?')}, PrivateTest {ds.get('n_test', '?')} images.",
        "",
        "## Metrics (Keras model; the ONNX export matches it, see above)",
        "",
        f"- PrivateTest accuracy {pct('PrivateTest')}{' (FER+ majority labels)' if ferplus else ''}, balanced accuracy "
        f"{pct('PrivateTest', 'balanced_accuracy')}, "
        f"macro F1 {pct('PrivateTest', 'macro_f1')}, top-2 {pct('PrivateTest', 'top2')}.",
        f"- PublicTest accuracy {pct('PublicTest')} (used for model selection); PrivateTest without images also "
        f"in Training {pct('PrivateTest_clean')}.",
    ]
    if "int8_accuracy" in info:
        lines.append(f"- The int8 version (`{Path(str(info.get('int8', 'int8'))).name}`) scores "
                     f"{100 * info['int8_accuracy']:.2f}% on PrivateTest.")
    if "latency_ms_per_face" in info:
        lines.append(f"- ONNX Runtime latency: {info['latency_ms_per_face']:.3f} ms per face at batch 1 on "
                     f"{info.get('machine', 'the build machine')}.")
    lines += [f"- {note}" for note in info.get("card_notes", [])]
    lines += [
        "",
        "## Intended use",
        "",
        "Research and teaching: reproducing FER2013 results, demonstrating a real-time recognizer "
        "(`python -m fer_utils.cli run --source 0`). Not for decisions about people.",
        "",
        "## Limitations",
        "",
        "- FER2013 is web-scraped, mostly frontal, with label noise and duplicates; 'disgust' has few examples "
        "and is recognised poorly. Accuracy drops on non-frontal faces, poor light, occlusion and faces unlike "
        "those in FER2013 (age, ethnicity and culture of expression are not balanced).",
        "- A facial expression is not an emotion: the labels describe appearance, not what a person feels.",
        "- FER2013 is for research use only; so is this model.",
        *(["- FER+'s labels (MIT licence, Microsoft) are the majority of ten annotators, who also disagree: a face "
           "without a clear majority has no single right answer, and contempt has the fewest examples."] if ferplus else []),
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# What the notebooks export and run


def calibration_sample(x: np.ndarray, y: np.ndarray, n: int = 512, seed: int = 0) -> np.ndarray:
    """Up to ``n`` training faces for int8 calibration, drawn evenly over the classes (uint8 ``(n, 48, 48)``)."""
    picks = sample_per_class(y, max(1, n // len(np.unique(y))), seed)
    return x[np.sort(np.concatenate(picks))][:n]


def models_to_export(store: RunStore, fingerprint: str, n_others: int = 2,
                     stand_in: Callable[[], dict] | None = None) -> list[dict]:
    """The metrics records of the models to export: the champion (or the best by PublicTest
    accuracy) and up to ``n_others`` more, from ``store``, trained on the dataset with
    ``fingerprint``. With none, ``stand_in()`` trains one (the smoke profile's one-epoch CNN, so
    the notebook always runs); without it, none is an error saying what to run."""
    records = select_for_export(store.records(), n_others, fingerprint=fingerprint)
    if not records and stand_in is not None:
        print(f"no trained model in {store.metrics_dir}; training a stand-in")
        records = [stand_in()]
    if not records:
        raise FileNotFoundError(
            f"no trained model with a metrics file in {store.metrics_dir} for this dataset "
            f"(fingerprint {fingerprint}): run the training notebooks (03 onwards) first")
    return records


def demo_model_path(path: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
                    stand_in: Callable[[], dict] | None = None) -> Path:
    """The ONNX model a demo uses: :func:`model_file.find_model` (``path`` if given, else the
    default released model, ``models/<file>``, else that file exported by notebook 09 or 13 into
    ``models_dir``); without any, the model ``stand_in()`` trains (the smoke profile's), exported
    into ``models_dir``. :class:`ModelFileError` (saying how to get one) otherwise."""
    folders = [Path(models_dir)] if models_dir else []
    try:
        return find_model(path or None, folders)
    except ModelFileError:
        if path or stand_in is None or not folders:
            raise
    print(f"no released model ({RELEASED_MODEL}); exporting a stand-in")
    record = stand_in()
    return export_onnx(model_path(record), folders[0] / f"{record['run']}.onnx", class_names=record.get("classes"))

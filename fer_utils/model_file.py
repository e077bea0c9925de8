"""The model file: which ONNX file runs, its model card, and :class:`OnnxClassifier`, which runs it.

Runtime code (the recognizer, API, CLI and app) finds its model here and nowhere else:

- :func:`find_model` is the one answer to "which ONNX file": a path the user gave, or a released
  model by name (:data:`RELEASED_MODELS`: ``fer2013``, trained on FER2013's labels, or ``ferplus``,
  trained on FER+'s votes), else the default one (:data:`DEFAULT_MODEL`, by the default-model rule
  of docs/release.md); a released model is ``models/<file>`` in a checkout (where notebooks 09 and
  13 write them) and the copy installed inside the package, ``fer_utils/released/``, elsewhere
  (:func:`released_model`), else that file in the folders a caller adds (a notebook's models folder).
- :func:`read_model_card` is the one reader of the Markdown card beside a model
  (``<name>.md``, written by ``export.model_card``): the Keras run it came from and its PrivateTest accuracy.
- :class:`OnnxClassifier` runs a model with ONNX Runtime, knows its classes from the file's
  metadata (``classes``, written by ``export.export_onnx``; a file without it is a FER2013 model:
  the seven ``config.CLASS_NAMES``), and refuses, when it loads, any file that is not a FER
  probability model over those classes (:class:`ModelFileError`, naming the file).

The lab's ``export`` (conversion, quantization, benchmarks, release) imports these from here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnxruntime as ort

from .config import CLASS_NAMES, IMAGE_SIZE, MODELS_DIR

#: The released model in a source checkout (what notebook 09 writes, and what the CLI, the API
#: and the app run when no model is given).
RELEASED_MODEL = MODELS_DIR / "fer_champion.onnx"
#: Where an installed (non-editable) package keeps the released model (see pyproject.toml:
#: ``models/`` of the source tree is the package ``fer_utils.released``, holding only the model and its card).
PACKAGED_MODEL = Path(__file__).resolve().parent / "released" / RELEASED_MODEL.name
#: The released models by name, each the file it is released as (beside ``RELEASED_MODEL`` in a
#: checkout, beside ``PACKAGED_MODEL`` installed): trained on FER2013's labels (7 classes) and on
#: FER+'s ten-annotator votes (8 classes: FER2013's seven and contempt).
RELEASED_MODELS: dict[str, str] = {"fer2013": RELEASED_MODEL.name, "ferplus": "ferplus_champion.onnx"}
#: The model that runs when none is named, as the default-model rule of docs/release.md decides
#: (notebook 13 applies it, ``ferplus.default_model_rule``; tests/test_model_file.py checks that this
#: agrees with its last result): FER+'s since notebook 13's first real run (docs/release.md gives the numbers).
DEFAULT_MODEL = "ferplus"
#: The metadata key of an exported model's class names (comma-separated, in output order).
CLASSES_KEY = "classes"
HOW_TO_GET_A_MODEL = (
    "export one with notebook 09 (`make 09` writes models/fer_champion.onnx from the best trained model) "
    "or notebook 13 (`make 13` writes models/ferplus_champion.onnx), or pass --model PATH to any .onnx "
    "file exported by fer_utils.export.export_onnx"
)


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not a FER classifier; the message names the path."""


def released_model(name: str | None = None) -> Path:
    """The released model called ``name`` (:data:`RELEASED_MODELS`; default :data:`DEFAULT_MODEL`):
    ``models/<file>`` in a source checkout (what notebooks 09 and 13 write), else the copy installed
    inside the package. The checkout's path when neither exists."""
    name = name or DEFAULT_MODEL
    if name not in RELEASED_MODELS:
        raise ModelFileError(f"no released model called {name!r}; the released models are {sorted(RELEASED_MODELS)}")
    checkout, packaged = RELEASED_MODEL.with_name(RELEASED_MODELS[name]), PACKAGED_MODEL.with_name(RELEASED_MODELS[name])
    return packaged if not checkout.is_file() and packaged.is_file() else checkout


def find_model(model: str | os.PathLike | None = None, folders: Iterable[str | os.PathLike] = (),
               hint: str = HOW_TO_GET_A_MODEL) -> Path:
    """The ONNX file to run: ``model``, a path or the name of a released model (``fer2013``,
    ``ferplus``: :func:`released_model`), else the default released model, else its file in one of
    ``folders``. :class:`ModelFileError` for a missing file (the message ends with ``hint``, how to
    get one) or a Keras file (only ONNX models run here)."""
    if model is None or str(model) in RELEASED_MODELS:
        name = str(model or DEFAULT_MODEL)
        candidates = [released_model(name), *(Path(folder) / RELEASED_MODELS[name] for folder in folders)]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            which = "the released model" if model is None else f"the released {name} model"
            raise ModelFileError(f"no model at {released_model(name)}: {which} is not in this checkout yet; {hint}")
        return found
    path = Path(model)
    if not path.exists():
        raise ModelFileError(f"no model at {path}: no such file; {hint}")
    if path.suffix == ".keras":
        raise ModelFileError(f"{path}: a Keras model; only ONNX models run here: convert it with "
                             "fer_utils.export.export_onnx (or notebook 09)")
    return path


# ---------------------------------------------------------------------------------------------
# The model card

#: What ``export.model_card`` writes, as the reader finds it.
_CARD_RUN = re.compile(r"Keras run `([^`]+)`")
_CARD_ACCURACY = re.compile(r"PrivateTest accuracy ([\d.]+)%")
_CARD_LABELS = re.compile(r"^- Labels: ([^.;(\n]+)", re.MULTILINE)


@dataclass(frozen=True)
class ModelCard:
    """The model card beside an ONNX file (``<name>.md``): its text, the Keras run the model was
    exported from, its PrivateTest accuracy (0-1) and the labels that accuracy is measured against
    (``FER2013`` for a card that does not say), each None where the card does not say."""

    path: Path
    text: str

    @property
    def source_run(self) -> str | None:
        match = _CARD_RUN.search(self.text)
        return match.group(1) if match else None

    @property
    def private_test_accuracy(self) -> float | None:
        match = _CARD_ACCURACY.search(self.text)
        return float(match.group(1)) / 100 if match else None

    @property
    def labels(self) -> str:
        match = _CARD_LABELS.search(self.text)
        return match.group(1).strip() if match else "FER2013"


def read_model_card(onnx_path: str | os.PathLike) -> ModelCard | None:
    """The card beside ``onnx_path`` (same name, ``.md``), or None without one."""
    card = Path(onnx_path).with_suffix(".md")
    return ModelCard(card, card.read_text(errors="replace")) if card.is_file() else None


def source_run(onnx_path: str | os.PathLike) -> str | None:
    """The Keras run an ONNX file was exported from, as the model card beside it names it
    ("exported from the Keras run `RUN`"); None without a card or that line."""
    card = read_model_card(onnx_path)
    return card.source_run if card else None


# ---------------------------------------------------------------------------------------------
# Running a model


def _first_line(exc: Exception) -> str:
    """An exception's first line (at most 200 characters), or its type's name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class OnnxClassifier:
    """An exported FER classifier in an ONNX Runtime session.

    ``predict(faces)`` takes faces ``(N, 48, 48)`` (uint8 or float, values 0-255; a single
    ``(48, 48)`` face is accepted) and returns float32 probabilities ``(N, classes)`` over
    ``class_names`` (the file's ``classes`` metadata; FER2013's seven for a file without it), so it
    plugs into ``evaluate.evaluate_splits``. ``threads`` sets ONNX Runtime's intra-op threads (None:
    its default, one per physical core). A missing, unreadable or non-FER model file raises
    :class:`ModelFileError` naming the path: the input must be float32 ``(N, 48, 48)`` (or
    ``(N, 48, 48, 1)``), and on a probe batch the output must be one probability per class name
    (in 0-1, each row summing to 1), so raw scores (no softmax) are refused when the model is loaded.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.path = Path(path)
        if not self.path.exists():
            raise ModelFileError(f"{self.path}: no such model file")
        if self.path.is_dir():
            raise ModelFileError(f"{self.path}: is a folder, not an .onnx model file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise ModelFileError(f"{self.path}: not a valid ONNX model ({_first_line(exc)})") from None
        self.class_names = self._class_names()
        n_classes = len(self.class_names)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape)
        if len(inputs) != 1 or len(shape) not in (3, 4) or shape[1:3] != [IMAGE_SIZE, IMAGE_SIZE] \
                or outputs[0].shape[-1] != n_classes:
            raise ModelFileError(
                f"{self.path}: not a FER classifier (expects one input (N, 48, 48) and {n_classes} outputs, one per "
                f"class {', '.join(self.class_names)}; this model has inputs {[i.shape for i in inputs]} and outputs "
                f"{[o.shape for o in outputs]})")
        if inputs[0].type != "tensor(float)":
            raise ModelFileError(f"{self.path}: not a FER classifier: its input {inputs[0].name!r} is "
                                 f"{inputs[0].type}; expected float32 faces (N, 48, 48) with values 0-255 "
                                 "(export_onnx writes that)")
        self.input_name, self.rank = inputs[0].name, len(shape)
        self.threads = threads or int(options.intra_op_num_threads) or None
        self._check_probabilities()

    def _class_names(self) -> tuple[str, ...]:
        """The classes in the file's metadata (``classes``: names separated by commas, in output
        order), or FER2013's seven for a file written before models said so."""
        text = self.session.get_modelmeta().custom_metadata_map.get(CLASSES_KEY)
        if text is None:
            return CLASS_NAMES
        names = tuple(name.strip() for name in text.split(","))
        if len(names) < 2 or not all(names) or len(set(names)) != len(names):
            raise ModelFileError(f"{self.path}: its metadata {CLASSES_KEY!r} = {text!r} is not a list of distinct "
                                 "class names separated by commas")
        return names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _check_probabilities(self, tolerance: float = 0.05) -> None:
        """Run two probe faces; :class:`ModelFileError` unless they give ``(2, classes)``
        probabilities. ``tolerance`` allows an int8 model's quantized softmax."""
        probe = np.random.default_rng(0).integers(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint8)
        try:
            out = self.predict(probe)
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise ModelFileError(f"{self.path}: cannot classify faces (N, 48, 48) ({_first_line(exc)})") from None
        if out.shape != (len(probe), self.num_classes):
            raise ModelFileError(f"{self.path}: not a FER classifier: 2 probe faces gave an output of shape "
                                 f"{out.shape}, expected (2, {self.num_classes}), one probability per class")
        sums = out.sum(axis=1)
        if not np.isfinite(out).all() or out.min() < -tolerance / 10 or out.max() > 1 + tolerance / 10 \
                or np.abs(sums - 1).max() > tolerance:
            raise ModelFileError(
                f"{self.path}: not a FER classifier: its outputs are not probabilities (a probe face's {self.num_classes} "
                f"values range {out.min():.4g} to {out.max():.4g} and sum to {sums[0]:.4g}, not 1); "
                "export a model that ends in softmax (fer_utils.export.export_onnx)")

    def predict(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities float32 ``(N, classes)`` for faces ``(N, 48, 48)`` with values 0-255."""
        x = np.asarray(faces, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"faces must be (N, 48, 48), got {np.shape(faces)}")
        if self.rank == 4:
            x = x[..., None]
        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        out = [self.session.run(None, {self.input_name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)

    __call__ = predict

    def __repr__(self) -> str:
        return f"OnnxClassifier({str(self.path)!r}, threads={self.threads})"

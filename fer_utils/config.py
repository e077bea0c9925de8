"""Project-wide constants: class names, splits, paths, run profiles and seeding.

Everything here is plain data; nothing is computed at import time except paths.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The seven FER2013 expressions, in label order (label ``i`` is ``CLASS_NAMES[i]``).
CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)
#: FER+'s eight emotions as its vote columns name and order them (Barsoum et al. 2016; then come
#: ``unknown`` and ``NF``, not a face).
FERPLUS_EMOTIONS: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                     "contempt")
#: Each FER+ emotion by this project's name for it: FER2013's class names, contempt its own.
FERPLUS_TO_CLASS: dict[str, str] = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise",
                                    "sadness": "sad", "anger": "angry", "disgust": "disgust", "fear": "fear",
                                    "contempt": "contempt"}
#: The classes of a model trained on FER+ labels: FER2013's seven, in their order and by their names
#: (label ``i < 7`` means the same in both), then contempt, FER+'s eighth.
FERPLUS_CLASS_NAMES: tuple[str, ...] = (*CLASS_NAMES, "contempt")
IMAGE_SIZE = 48  #: FER2013 faces are 48x48 grayscale.
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE

#: The official splits, named as in the CSV's ``Usage`` column.
TRAIN, VAL, TEST = "Training", "PublicTest", "PrivateTest"
USAGES: tuple[str, ...] = (TRAIN, VAL, TEST)

#: Fingerprints (see ``fer_utils.data.fingerprint``) of known real copies of FER2013.
KNOWN_FINGERPRINTS: dict[str, str] = {
    "2a8f2b8cb8a9feae": "FER2013, original CSV layout (fer2013.csv / .csv.gz)",
    "914eb35c0f390bd9": "FER2013, Kaggle image-folder version (JPEG)",
}

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"  #: the user's FER2013 copy and caches (git-ignored)
REPORTS_DIR = PROJECT_ROOT / "reports"  #: committed real-data results
BUILD_DIR = PROJECT_ROOT / "build"  #: smoke and synthetic results (git-ignored)
MODELS_DIR = PROJECT_ROOT / "models"

#: Environment variable naming the user's FER2013 copy (CSV, CSV.gz or image folder).
DATA_ENV_VAR = "FER2013"
#: Environment variable naming FER+'s vote file (``fer2013new.csv``) when it is not beside the CSV.
FERPLUS_ENV_VAR = "FERPLUS"
#: Environment variable overriding the cache folder (default ``data/cache``).
CACHE_ENV_VAR = "FER_CACHE_DIR"

#: Where ``find_dataset`` looks, in order, when no path is given.
DEFAULT_DATA_CANDIDATES: tuple[str, ...] = (
    "fer2013.csv",
    "fer2013.csv.gz",
    "fer2013/fer2013.csv",
    "fer2013/fer2013.csv.gz",
    "fer2013-images",
)


@dataclass(frozen=True)
class Profile:
    """How much work a notebook does: data size, epochs and time budget.

    ``max_train_per_class`` caps the training images per class (None = all);
    ``time_budget_s`` caps one model's training time (None = no cap).
    """

    name: str
    description: str
    epochs: int
    batch_size: int
    max_train_per_class: int | None = None
    time_budget_s: float | None = None
    synthetic_size: int = 3500


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "synthetic or tiny data, one short epoch; checks that everything runs (CI)",
        epochs=1,
        batch_size=64,
        max_train_per_class=60,
        time_budget_s=60,
        synthetic_size=700,
    ),
    "cpu": Profile(
        "cpu",
        "the real dataset on a 2-core CPU: short trainings, whole pipeline in a few hours",
        epochs=30,
        batch_size=128,
        time_budget_s=20 * 60,
    ),
    "full": Profile(
        "full",
        "the source write-ups' own training lengths, for a GPU",
        epochs=300,
        batch_size=64,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (``smoke``, ``cpu`` or ``full``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and (if imported) TensorFlow/Keras for reproducible runs."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    import_keras().utils.set_random_seed(seed)  # seeds Python, NumPy and the backend together


def import_keras():
    """Import and return Keras (on the backend ``$KERAS_BACKEND`` names, TensorFlow by default),
    silencing TensorFlow's native start-up log lines.

    TensorFlow writes them straight to file descriptor 2 (no environment variable stops all of
    them), where notebooks would show them above the results. The accelerators are probed here
    too, so the CUDA start-up error lines of a machine without a usable GPU (``failed call to
    cuInit``), which TensorFlow writes on first use, are dropped with the rest. Import errors
    still raise.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
            import keras  # other backends never import TensorFlow

            return keras
        import tensorflow  # (the noisy part)
        import keras

        tensorflow.config.list_physical_devices()  # initialises the platforms: cuInit and its error lines
        tensorflow.get_logger().setLevel("ERROR")  # e.g. retracing notes when many models predict in turn
    return keras


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code (TensorFlow, OpenCV) writes straight to file descriptor 2.

    Python exceptions still propagate; only the C/C++ log lines are dropped.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cache_dir() -> Path:
    """Folder for parsed-dataset caches: ``$FER_CACHE_DIR`` or ``data/cache``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or DATA_DIR / "cache")

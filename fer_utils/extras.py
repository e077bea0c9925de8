"""Optional dependencies: what the base install leaves out, and the one line that says which extra brings it.

The base install (``pip install fer_utils``) is the recognizer: the API, the CLI and the video
table, on numpy, OpenCV, ONNX Runtime, Pillow, pandas and tqdm. The rest comes with extras
(``pyproject.toml``): ``plot`` (matplotlib, for :func:`api.plot_timeline`), ``mtcnn`` (the MTCNN
face detector: mtcnn and TensorFlow), ``app`` (the browser app: Streamlit, WebRTC, scikit-image
for its sample photo, lime for its LIME view), ``train`` (the lab: TensorFlow, Keras, the
balancing and export stack), ``notebooks`` and ``all``.

Runtime code imports an optional package through :func:`require` (or inside :func:`needs_extra`),
at the place that needs it; a missing one raises :class:`MissingExtra`, whose message is one line
naming the extra to install (the CLI prints it and exits with ``cli.EXIT_MISSING_EXTRA``).
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType
from typing import Iterator

#: The pip distribution name of this project, as extras are written: ``pip install "fer_utils[app]"``.
DISTRIBUTION = "fer_utils"


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message is one line naming the extra that brings it."""


def install_hint(extra: str) -> str:
    """``pip install "fer_utils[EXTRA]"``."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


@contextlib.contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Around the imports of an optional dependency: a module that is not installed becomes
    :class:`MissingExtra` saying that ``what`` (e.g. "the MTCNN face detector") needs it and
    which ``extra`` brings it. A package that is installed but fails to import for another
    reason raises as usual."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "a module").split(".")[0]
        raise MissingExtra(f"{what} needs {missing}, which is not installed: {install_hint(extra)}") from None


def require(module: str, extra: str, what: str) -> ModuleType:
    """``import module`` under :func:`needs_extra`: the module, or :class:`MissingExtra`."""
    with needs_extra(extra, what):
        return importlib.import_module(module)

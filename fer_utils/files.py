"""Writing files so that an interruption or a failure never leaves a half-written one.

:func:`atomic_path` gives a temporary name beside the target; the caller writes there, and only
a complete file is renamed over the target (``os.replace``, atomic on one file system). On any
error, or Ctrl+C, the temporary file is removed and the target keeps its previous content.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield ``<path>.tmp<suffix>`` (``suffix`` keeps a format-choosing extension, e.g. ``.npz``)
    to write; on success it replaces ``path``, on failure it is deleted and the error re-raised.

    The temporary name ends in ``.tmp`` (plus ``suffix``), so globs such as ``*.json`` never pick
    up a leftover of a killed process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)

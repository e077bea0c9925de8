"""Read PyTorch's legacy checkpoint format with numpy alone (no PyTorch).

``torch.save`` before PyTorch 1.6 (and ``_use_new_zipfile_serialization=False`` since) writes five
pickles, then the raw bytes of every tensor storage:

1. the magic number ``0x1950a86a20f9469cfc6c``, 2. the protocol version 1001, 3. a dict of the
writer's byte order and type sizes, 4. the object (a state dict: names -> tensors; each tensor is a
call of ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` whose storage is a
pickle *persistent id* ``("storage", <type>, <key>, <device>, <numel>, <view>)``), 5. the storage
keys in the order their bytes follow; then, per key, an int64 element count and the elements.

:func:`read_state_dict` unpickles with an allow-list (collections' ``OrderedDict``, the tensor
rebuilders and the storage types; anything else stops the read), then cuts each tensor out of its
storage as a numpy array. The newer zip format (``PK`` at the start) is refused with a message
saying so.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
#: The storage types of the legacy format and their numpy element types (little-endian).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"), "FloatStorage": np.dtype("<f4"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class LegacyFormatError(ValueError):
    """The file is not a PyTorch legacy checkpoint this reader can read (the message names it)."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it: a view of a storage not read yet."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_):
    return data


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise LegacyFormatError(f"{self.path}: the checkpoint refers to {module}.{name}, which a state dict of "
                                f"tensors does not need (only {sorted(STORAGE_DTYPES)} and tensors are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise LegacyFormatError(f"{self.path}: unexpected persistent id {pid!r} (not a tensor storage)")
        _, storage_type, key, _device, numel = pid[:5]
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _load(file, path: Path):
    try:
        return _Unpickler(file, path).load()
    except LegacyFormatError:
        raise
    except Exception as error:
        raise LegacyFormatError(f"{path}: not a PyTorch legacy checkpoint ({type(error).__name__}: {error})") from error


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a legacy ``torch.save`` file as ``{name: numpy array}`` in the file's order
    (float32 stays float32; integer counters such as ``num_batches_tracked`` are int64 arrays).
    Raises :class:`LegacyFormatError` naming the file when it is not one (the zip format included)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise LegacyFormatError(f"{path}: this is PyTorch's zip format (torch.save since PyTorch 1.6), not the "
                                "legacy format this reader handles")
    stream = io.BytesIO(data)
    if _load(stream, path) != MAGIC_NUMBER:
        raise LegacyFormatError(f"{path}: not a PyTorch legacy checkpoint (wrong magic number)")
    if (version := _load(stream, path)) != PROTOCOL_VERSION:
        raise LegacyFormatError(f"{path}: legacy protocol version {version}, expected {PROTOCOL_VERSION}")
    sys_info = _load(stream, path)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise LegacyFormatError(f"{path}: written on a big-endian machine, which this reader does not handle")
    state = _load(stream, path)
    keys = _load(stream, path)
    if not isinstance(state, dict):
        raise LegacyFormatError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    storages = _read_storages(data, stream.tell(), keys, state, path)
    return {name: _materialise(name, ref, storages, path) for name, ref in state.items()
            if isinstance(ref, _TensorRef)}


def _read_storages(data: bytes, position: int, keys: list, state: dict, path: Path) -> dict[str, np.ndarray]:
    """Each storage's elements (one flat array per key), read in the order of ``keys``."""
    refs = {ref.storage.key: ref.storage for ref in state.values() if isinstance(ref, _TensorRef)}
    storages = {}
    for key in keys:
        ref = refs.get(str(key))
        if ref is None:
            raise LegacyFormatError(f"{path}: storage {key!r} is listed but no tensor uses it")
        if position + 8 > len(data):
            raise LegacyFormatError(f"{path}: the file ends before storage {key!r} (truncated)")
        numel = int(np.frombuffer(data, "<i8", 1, position)[0])
        position += 8
        if numel != ref.numel or position + numel * ref.dtype.itemsize > len(data):
            raise LegacyFormatError(f"{path}: storage {key!r} holds {numel} elements where {ref.numel} were "
                                    "announced, or the file is truncated")
        storages[ref.key] = np.frombuffer(data, ref.dtype, numel, position)
        position += numel * ref.dtype.itemsize
    return storages


def _materialise(name: str, ref: _TensorRef, storages: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """The tensor ``name`` as a new contiguous array: its view (offset, shape, stride) of its storage."""
    storage = storages.get(ref.storage.key)
    if storage is None:
        raise LegacyFormatError(f"{path}: tensor {name!r} uses storage {ref.storage.key!r}, whose bytes are missing")
    if len(ref.shape) != len(ref.stride):
        raise LegacyFormatError(f"{path}: tensor {name!r} has shape {ref.shape} but strides {ref.stride}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride) if n > 0)
    if ref.offset < 0 or (all(ref.shape) and last >= len(storage)):
        raise LegacyFormatError(f"{path}: tensor {name!r} reaches past the end of its storage")
    if not all(ref.shape):
        return np.zeros(ref.shape, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[ref.offset:], ref.shape,
                                           [s * storage.itemsize for s in ref.stride], writeable=False)
    return np.array(view)

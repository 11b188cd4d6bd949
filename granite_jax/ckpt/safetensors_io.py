"""Minimal safetensors reader/writer on NumPy (bfloat16 and float8 included).

The `safetensors` package's NumPy backend has no bfloat16 or float8, so we
speak the (simple) format directly: 8-byte little-endian header length, a
JSON header {name: {dtype, shape, data_offsets}}, then the raw bytes.
Reading memory-maps the file; writing streams one tensor at a time from a
plan made up front (names, shapes, dtypes), so an export never holds two
copies of the model in host memory.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ml_dtypes
import numpy as np

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def dtype_name(dtype: Any) -> str:
  dt = np.dtype(dtype)
  if dt not in _NAMES:
    raise ValueError(f"safetensors: unsupported dtype {dt}")
  return _NAMES[dt]


class SafetensorsFile:
  """Lazy reader: `keys()`, `shape(name)`, `get(name)` (a read-only view of the mmap)."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    if size < 8:
      raise ValueError(f"{path}: not a safetensors file ({size} bytes, truncated or empty)")
    self._mm = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(self._mm[:8]))
    if 8 + n > size:
      raise ValueError(f"{path}: truncated safetensors file (header of {n} bytes, file of {size})")
    try:
      header = json.loads(bytes(self._mm[8:8 + n]))
    except ValueError as e:
      raise ValueError(f"{path}: not a safetensors file ({e})") from e
    self.metadata = header.pop("__metadata__", {}) or {}
    self._entries = header
    self._base = 8 + n
    end = max((e["data_offsets"][1] for e in header.values()), default=0)
    if self._base + end > size:
      raise ValueError(f"{path}: truncated safetensors file ({size} bytes, its header needs "
                       f"{self._base + end})")

  def keys(self) -> list[str]:
    return list(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    if name not in self._entries:
      raise KeyError(f"{self.path}: no tensor {name!r}")
    e = self._entries[name]
    if e["dtype"] not in _DTYPES:
      raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {e['dtype']}")
    lo, hi = e["data_offsets"]
    return self._mm[self._base + lo:self._base + hi].view(_DTYPES[e["dtype"]]).reshape(e["shape"])


Spec = tuple[str, tuple[int, ...], Any]  # name, shape, dtype


def write_file(path: str, specs: Iterable[Spec], tensors: Iterator[tuple[str, np.ndarray]],
               metadata: dict[str, str] | None = None, on_tensor: Callable[[int], None] | None = None):
  """Writes `tensors` (in `specs` order, produced one at a time) to `path`."""
  specs = list(specs)
  header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
  offset = 0
  for name, shape, dtype in specs:
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    header[name] = {"dtype": dtype_name(dtype), "shape": list(shape), "data_offsets": [offset, offset + size]}
    offset += size
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)  # 8-byte alignment of the data, as the reference writer does
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw)
    for name, shape, dtype in specs:
      got_name, arr = next(tensors)
      arr = np.ascontiguousarray(arr)
      if got_name != name or arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
        raise ValueError(f"{path}: expected {name} {tuple(shape)} {np.dtype(dtype)}, "
                         f"got {got_name} {arr.shape} {arr.dtype}")
      f.write(arr.tobytes())
      if on_tensor:
        on_tensor(arr.nbytes)
  os.replace(tmp, path)

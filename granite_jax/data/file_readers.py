"""Random-access readers of one data file each: ArrayRecord, JSONL, Parquet.

A reader has `len()` and `text(i) -> str`; a record it cannot turn into text
raises `BadRecord` with the reason, and the caller (`sources.TextSource`)
decides whether to skip it or raise with file + index.
"""
from __future__ import annotations

import json
import mmap
import os
import threading
from collections import OrderedDict

import numpy as np


class BadRecord(Exception):
  """A record that is not UTF-8 text or a JSON object with a string `text` field."""


def text_of_json(obj: object) -> str:
  if not isinstance(obj, dict):
    raise BadRecord(f"expected a JSON object, got {type(obj).__name__}")
  text = obj.get("text")
  if not isinstance(text, str):
    raise BadRecord(f"JSON object has no string 'text' field (keys: {sorted(obj)[:8]})")
  return text


class ArrayRecordReader:
  """Records are UTF-8 text, or a JSON object with a `text` field."""

  def __init__(self, path: str):
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    self.path = path
    self._src = ArrayRecordDataSource([path])

  def __len__(self) -> int:
    return len(self._src)

  def text(self, i: int) -> str:
    raw = self._src[i]
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise BadRecord(f"not valid UTF-8: {e}") from None
    if text.startswith("{"):
      # Only a JSON object carrying `text` is unwrapped; other text starting
      # with "{" (code, say) is taken verbatim.
      try:
        obj = json.loads(text)
      except ValueError:
        return text
      if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return obj["text"]
    return text


class JsonlReader:
  """One JSON object per line; a newline-offset index makes it random access."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    if size == 0:
      self._starts_N = self._ends_N = np.zeros(0, np.int64)
    else:
      with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        nl = np.flatnonzero(np.frombuffer(m, np.uint8) == ord("\n")).astype(np.int64)
      ends = nl if len(nl) and nl[-1] == size - 1 else np.append(nl, size)  # last line may lack "\n"
      self._starts_N = np.concatenate([[0], ends[:-1] + 1])
      self._ends_N = ends
    self._fd = None
    self._lock = threading.Lock()

  def __getstate__(self):  # picklable for worker processes: reopen the fd there
    state = dict(self.__dict__)
    state["_fd"], state["_lock"] = None, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._starts_N)

  def text(self, i: int) -> str:
    if self._fd is None:
      with self._lock:
        if self._fd is None:
          self._fd = os.open(self.path, os.O_RDONLY)
    start, end = int(self._starts_N[i]), int(self._ends_N[i])
    line = os.pread(self._fd, end - start, start)
    if not line.strip():
      return ""  # blank line: empty document, dropped downstream
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise BadRecord(f"invalid JSON on line {i + 1}: {e}") from None
    return text_of_json(obj)

  def __del__(self):
    if getattr(self, "_fd", None) is not None:
      os.close(self._fd)


class ParquetReader:
  """`text` column of a Parquet file; row groups are read whole and cached (LRU)."""

  _CACHE_GROUPS = 4

  def __init__(self, path: str, column: str = "text"):
    import pyarrow.parquet as pq
    self.path, self.column = path, column
    self._file = pq.ParquetFile(path)
    names = self._file.schema_arrow.names
    if column not in names:
      raise ValueError(f"{path}: Parquet file has no {column!r} column (columns: {names})")
    rows_G = [self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)]
    self._group_starts_G = np.concatenate([[0], np.cumsum(rows_G)]).astype(np.int64)
    self._cache: OrderedDict[int, list] = OrderedDict()
    self._lock = threading.Lock()

  def __getstate__(self):
    return {"path": self.path, "column": self.column}

  def __setstate__(self, state):
    self.__init__(state["path"], state["column"])

  def __len__(self) -> int:
    return int(self._group_starts_G[-1])

  def _group(self, g: int) -> list:
    with self._lock:
      if g in self._cache:
        self._cache.move_to_end(g)
        return self._cache[g]
      values = self._file.read_row_group(g, columns=[self.column]).column(0).to_pylist()
      self._cache[g] = values
      if len(self._cache) > self._CACHE_GROUPS:
        self._cache.popitem(last=False)
      return values

  def text(self, i: int) -> str:
    g = int(np.searchsorted(self._group_starts_G, i, side="right")) - 1
    value = self._group(g)[i - int(self._group_starts_G[g])]
    if value is None:
      raise BadRecord(f"{self.column!r} is null")
    if isinstance(value, bytes):
      try:
        return value.decode("utf-8")
      except UnicodeDecodeError as e:
        raise BadRecord(f"not valid UTF-8: {e}") from None
    if not isinstance(value, str):
      raise BadRecord(f"{self.column!r} is {type(value).__name__}, not a string")
    return value


READERS = {".arrayrecord": ArrayRecordReader, ".array_record": ArrayRecordReader,
           ".jsonl": JsonlReader, ".parquet": ParquetReader}

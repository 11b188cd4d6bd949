"""Text sources: a path (file, directory or glob) -> one random-access source of documents.

`TextSource` concatenates the supported files found at the path and returns
each record as a `str`; unreadable records are skipped (returned as "", which
the pipeline filters) or raised with file + record index (`on_bad_record`).
"""
from __future__ import annotations

import collections
import glob
import logging
import os

import grain
import numpy as np

from granite_jax.data.file_readers import READERS, BadRecord

ON_BAD_RECORD = ("skip", "raise")

# Records skipped under on_bad_record="skip", per file, for the training metrics. Module state
# because the sources run inside grain pipelines the training loop only sees as iterators;
# it belongs to one run: building a run's training iterator resets it (reset_skipped_records).
_SKIPPED: "collections.Counter[str]" = collections.Counter()


def count_skipped(path: str) -> None:
  _SKIPPED[path] += 1


def skipped_records() -> int:
  """Records skipped since the current run's training iterator was built."""
  return sum(_SKIPPED.values())


def reset_skipped_records() -> None:
  _SKIPPED.clear()


def _supported(path: str) -> bool:
  return os.path.isfile(path) and os.path.splitext(path)[1].lower() in READERS


def path_exists(path: str) -> bool:
  """Local paths are checked here; `s3://` / `gs://` ones when the run opens them (data/store.py)."""
  if "://" in path:
    return True
  path = os.path.expanduser(path)
  return os.path.exists(path) or bool(glob.glob(path, recursive=True))


def resolve_files(path: str) -> list[str]:
  """Sorted data files at `path` (a file, a directory searched recursively, or a glob)."""
  path = os.path.expanduser(path)
  if os.path.isfile(path):
    if not _supported(path):
      raise ValueError(f"{path}: unsupported file type; expected one of {sorted(READERS)}")
    return [path]
  if os.path.isdir(path):
    found = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    files = [f for f in found if _supported(f)]
    if not files:
      raise FileNotFoundError(f"{path}: directory holds no {'/'.join(sorted(READERS))} files")
    return files
  matches = sorted(glob.glob(path, recursive=True))
  if not matches:
    raise FileNotFoundError(f"{path}: no such file, directory or glob match")
  files = [f for m in matches for f in (resolve_files(m) if os.path.isdir(m) else [m]) if _supported(f)]
  if not files:
    raise FileNotFoundError(f"{path}: glob matches no {'/'.join(sorted(READERS))} files")
  return files


class TextSource:
  """Random-access documents (str) of all files at a path, in sorted file order."""

  def __init__(self, path: str, on_bad_record: str = "raise"):
    if on_bad_record not in ON_BAD_RECORD:
      raise ValueError(f"on_bad_record={on_bad_record!r} must be one of {ON_BAD_RECORD}")
    self.path, self.on_bad_record = path, on_bad_record
    self.files = resolve_files(path)
    self._readers = [READERS[os.path.splitext(f)[1].lower()](f) for f in self.files]
    self._starts_F = np.concatenate([[0], np.cumsum([len(r) for r in self._readers])]).astype(np.int64)
    self._warned: set[str] = set()

  def __len__(self) -> int:
    return int(self._starts_F[-1])

  def __getitem__(self, index: int) -> str:
    if not 0 <= index < len(self):
      raise IndexError(f"{self.path}: index {index} out of range [0, {len(self)})")
    f = int(np.searchsorted(self._starts_F, index, side="right")) - 1
    reader, local = self._readers[f], index - int(self._starts_F[f])
    try:
      return reader.text(local)
    except BadRecord as e:
      msg = f"{reader.path}: bad record {local}: {e}"
      if self.on_bad_record == "raise":
        raise ValueError(msg + " (set data.on_bad_record='skip' to drop such records)") from None
      count_skipped(reader.path)
      if reader.path not in self._warned:  # one warning per file, not per record
        self._warned.add(reader.path)
        logging.warning("skipping %s (further bad records in this file are skipped silently)", msg)
      return ""

  def __repr__(self) -> str:
    return f"TextSource({self.path!r}, files={len(self.files)}, records={len(self)})"


def open_text_source(path: str, on_bad_record: str = "raise") -> TextSource:
  return TextSource(path, on_bad_record)


def text_dataset(path: str, on_bad_record: str = "raise") -> grain.MapDataset:
  """Grain MapDataset of the documents (str) at `path`."""
  return grain.MapDataset.source(TextSource(path, on_bad_record))

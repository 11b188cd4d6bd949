"""Atomic ArrayRecord writing (used by the demo corpus and tests)."""

import os
from collections.abc import Iterable

from array_record.python.array_record_module import ArrayRecordWriter


def write_arrayrecord(path: str, records: Iterable[bytes | str]) -> str:
  """Writes `records` to `path` via temp file + rename, so readers never see a half file.

  group_size:1 keeps every record independently addressable, which makes
  shuffled random access cheap.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  try:
    for rec in records:
      writer.write(rec.encode("utf-8") if isinstance(rec, str) else rec)
  finally:
    writer.close()
  os.replace(tmp, path)
  return path

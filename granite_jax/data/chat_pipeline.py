"""SFT conversations: where a run's come from (`sft_sources`) and how a file of them is read.

Chat JSONL/Parquet is tokenized once into a chat token store (tokens + loss mask: only assistant
content and its <|end_of_text|> are trainable; data/tokenize.py), and the run reads that store in
its global order (data/order.py `PackedRows`: whole conversations packed per epoch).
"""
from __future__ import annotations

import json
import os
from typing import Any

from granite_jax.data import config as data_config
from granite_jax.data.sources import count_skipped, resolve_files


class ConversationSource:
  """Random access to conversations ({"messages": [...], "tools"?, "documents"?}) in JSONL or Parquet."""

  def __init__(self, path: str, on_bad_record: str = "raise"):
    self.path, self.on_bad_record = path, on_bad_record
    self.files = resolve_files(path)
    self._rows: list[tuple[str, int]] = []
    self._cache: dict[str, Any] = {}
    for f in self.files:
      ext = os.path.splitext(f)[1].lower()
      if ext == ".jsonl":
        with open(f, "rb") as fh:
          offsets = [0]
          for line in fh:
            offsets.append(offsets[-1] + len(line))
        self._cache[f] = offsets
        self._rows += [(f, i) for i in range(len(offsets) - 1)]
      elif ext == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(f).to_pylist()
        self._cache[f] = table
        self._rows += [(f, i) for i in range(len(table))]
      else:
        raise ValueError(f"{f}: SFT data must be .jsonl or .parquet")

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> dict | None:
    f, i = self._rows[index]
    try:
      if isinstance(self._cache[f], list) and not isinstance(self._cache[f][0], int):
        obj = dict(self._cache[f][i])
        for k in ("messages", "tools", "documents"):
          if isinstance(obj.get(k), str):
            obj[k] = json.loads(obj[k])
      else:
        start, end = self._cache[f][i], self._cache[f][i + 1]
        with open(f, "rb") as fh:
          fh.seek(start)
          obj = json.loads(fh.read(end - start))
      _check(obj)
      return obj
    except (ValueError, KeyError, TypeError) as e:
      if self.on_bad_record == "raise":
        raise ValueError(f"{f}: bad record {i}: {e} (set data.on_bad_record='skip' to drop such records)") \
            from None
      count_skipped(f)
      return None


def _check(obj: Any) -> None:
  if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
    raise ValueError("expected an object with a non-empty 'messages' list")
  for m in obj["messages"]:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
      raise ValueError("every message needs a string 'role'")
    if not isinstance(m.get("content", ""), str):
      raise ValueError(f"message content must be a string, got {type(m.get('content')).__name__}")


def sft_sources(data_cfg, split: str) -> str:
  key = "sources" if split == "train" else "eval_sources"
  path = data_config.field(data_cfg, "sft", {}).get(key, "") if data_config.field(data_cfg, "sft") else ""
  if path:
    if "://" not in path and not os.path.exists(path) and not resolve_files(path):  # remote: checked on open
      raise ValueError(f"data.sft.{key}={path!r}: no such file, directory or glob match")
    return path
  from granite_jax.data.demo_chat import ensure_demo_sft
  return ensure_demo_sft(data_config.cache_dir(data_cfg))[split]

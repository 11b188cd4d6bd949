"""SFT input pipeline: chat JSONL/Parquet -> Granite chat format -> packed batches with a loss mask.

Only assistant content and its <|end_of_text|> are trainable (`loss_mask`);
samples are packed with segment ids so no token attends across samples.
Each epoch is a fresh deterministic shuffle (grain reshuffles per epoch with
seed + epoch), and the iterator state is checkpointed with the train state,
so a run resumes mid-epoch.
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import numpy as np

from granite_jax.data import config as data_config
from granite_jax.data.chat_template import encode_chat
from granite_jax.data.sources import count_skipped, reset_skipped_records, resolve_files
from granite_jax.data.tokenizer import PAD, get_tokenizer


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


class Encode(grain.transforms.Map):
  def __init__(self, tok, seq_len: int):
    self.tok, self.seq_len = tok, seq_len

  def map(self, sample: dict | None) -> dict[str, np.ndarray]:
    if sample is None:
      return {"tokens": np.zeros(0, np.int32), "loss_mask": np.zeros(0, np.int32)}
    ids, mask = encode_chat(self.tok, sample["messages"], sample.get("tools"), sample.get("documents"))
    # Packing needs inputs no longer than a row: the tail of a long conversation is dropped.
    return {"tokens": ids[: self.seq_len], "loss_mask": mask[: self.seq_len].astype(np.int32)}


def _has_target(ex: dict) -> bool:
  return bool(ex["loss_mask"][1:].any())  # at least one trainable next-token prediction


def _rename(ex: dict) -> dict:
  return {"tokens": ex["tokens"], "loss_mask": ex["loss_mask"], "segment_ids": ex["tokens_segment_ids"],
          "positions": ex["tokens_positions"]}


def sft_sources(data_cfg, split: str) -> str:
  key = "sources" if split == "train" else "eval_sources"
  path = data_config.field(data_cfg, "sft", {}).get(key, "") if data_config.field(data_cfg, "sft") else ""
  if path:
    if not os.path.exists(path) and not resolve_files(path):
      raise ValueError(f"data.sft.{key}={path!r}: no such file, directory or glob match")
    return path
  from granite_jax.data.demo_chat import ensure_demo_sft
  return ensure_demo_sft(data_config.cache_dir(data_cfg))[split]


def packed_dataset(examples: grain.MapDataset, *, seq_len: int, batch_size: int, seed: int, split: str,
                   process_index: int, process_count: int, num_epochs: int | None, encode, keep,
                   pad_id: int) -> grain.IterDataset:
  """records -> (this process's shard, shuffle, repeat, encode, filter) -> first-fit packed rows.

  Shared by `make_iterator` and the step count (data/chat_steps.py), which replays it on token
  lengths only: both see exactly the same rows.
  """
  ds = examples[process_index::process_count]
  if split == "train":
    ds = ds.shuffle(seed)
  ds = ds.repeat(num_epochs).map(encode).filter(keep)
  docs = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return grain.experimental.FirstFitPackIterDataset(
      docs, length_struct={"tokens": seq_len, "loss_mask": seq_len}, num_packing_bins=max(batch_size, 16),
      seed=seed, shuffle_bins=split == "train", padding_struct={"tokens": pad_id, "loss_mask": 0})


def make_iterator(data_cfg, *, seq_len: int, batch_size: int, seed: int, split: str = "train",
                  process_index: int = 0, process_count: int = 1, num_epochs: int | None = None):
  """Iterator of {"tokens", "segment_ids", "positions", "loss_mask"}: int32 [batch_size, seq_len]."""
  if split == "train":
    reset_skipped_records()  # a new run (or its resume) counts its own skipped records
  tok = get_tokenizer(data_cfg)
  src = ConversationSource(sft_sources(data_cfg, split), data_config.on_bad_record(data_cfg))
  packed = packed_dataset(grain.MapDataset.source(src), seq_len=seq_len, batch_size=batch_size, seed=seed,
                          split=split, process_index=process_index, process_count=process_count,
                          num_epochs=num_epochs, encode=Encode(tok, seq_len), keep=_has_target,
                          pad_id=tok.token_to_id(PAD) or 0)
  return iter(packed.map(_rename).batch(batch_size, drop_remainder=True))

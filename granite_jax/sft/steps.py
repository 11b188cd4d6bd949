"""SFT step count from the data: the packed rows of `train.epochs` passes, divided by the batch.

One counting pass tokenizes every conversation once and stores its packed length (0 = dropped:
no trainable token) in `<cache_dir>/sft_counts/lengths_<key>.npy`, keyed by the source files
(path, size, mtime), the tokenizer (hash of its JSON) and seq_len. The row count then replays
the very pipeline of `sft.data.make_iterator` (`packed_dataset`: same shard, shuffle, repeat,
filter and first-fit packing) on zero arrays of those lengths, so the number of batches is
exactly what the iterator yields: the schedule ends where the data does, not a batch early or late.
"""
from __future__ import annotations

import hashlib
import json
import os

import grain
import numpy as np

from granite_jax.data import config as data_config
from granite_jax.data.pipeline import get_tokenizer
from granite_jax.data.sources import resolve_files
from granite_jax.sft.data import ConversationSource, Encode, _has_target, packed_dataset, sft_sources

_VERSION = "sft_lengths_v1"


def _key(files: list[str], tok, seq_len: int, on_bad: str) -> str:
  stats = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
  tok_hash = hashlib.sha1(tok.to_str().encode()).hexdigest()
  blob = json.dumps([_VERSION, stats, tok_hash, seq_len, on_bad])
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def record_lengths(data_cfg, seq_len: int) -> np.ndarray:
  """int32 [n_records]: tokens each conversation puts into packing (0 = filtered out), cached."""
  tok = get_tokenizer(data_cfg)
  path = sft_sources(data_cfg, "train")
  on_bad = data_config.on_bad_record(data_cfg)
  cache = os.path.join(data_config.cache_dir(data_cfg), "sft_counts",
                       f"lengths_{_key(resolve_files(path), tok, seq_len, on_bad)}.npy")
  if os.path.exists(cache):
    return np.load(cache)
  src, encode = ConversationSource(path, on_bad), Encode(tok, seq_len)
  lengths = np.zeros(len(src), np.int32)
  for i in range(len(src)):
    ex = encode.map(src[i])
    lengths[i] = len(ex["tokens"]) if _has_target(ex) else 0
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  tmp = f"{cache}.tmp.{os.getpid()}.npy"
  np.save(tmp, lengths)
  os.replace(tmp, cache)
  return lengths


class _Zeros(grain.transforms.Map):
  """A record's length -> an example of that length (the packer looks at lengths only)."""

  def map(self, n):
    n = int(n)
    return {"tokens": np.zeros(n, np.int32), "loss_mask": np.ones(n, np.int32)}


def _nonempty(ex) -> bool:
  return len(ex["tokens"]) > 0


def count_batches(lengths: np.ndarray, *, seq_len: int, batch_size: int, seed: int, epochs: int,
                  process_index: int = 0, process_count: int = 1) -> int:
  """Full batches of `batch_size` rows that `make_iterator(num_epochs=epochs)` yields on this process."""
  packed = packed_dataset(grain.MapDataset.source(lengths), seq_len=seq_len, batch_size=batch_size,
                          seed=seed, split="train", process_index=process_index,
                          process_count=process_count, num_epochs=epochs, encode=_Zeros(),
                          keep=_nonempty, pad_id=0)
  rows = sum(1 for _ in packed)
  return rows // batch_size


def sft_steps(data_cfg, *, seq_len: int, global_batch: int, seed: int, epochs: int,
              process_index: int = 0, process_count: int = 1) -> int:
  """Optimizer steps of `epochs` passes over the SFT data: the batches every process can make."""
  if not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"train.epochs={epochs!r} must be an integer >= 1 to derive train.steps from the data")
  lengths = record_lengths(data_cfg, seq_len)
  local = count_batches(lengths, seq_len=seq_len, batch_size=global_batch // process_count, seed=seed,
                        epochs=epochs, process_index=process_index, process_count=process_count)
  if process_count > 1:  # each process packs its own shard; all stop at the shortest
    from jax.experimental import multihost_utils
    local = int(np.min(multihost_utils.process_allgather(np.int64(local))))
  if local < 1:
    raise ValueError(f"data.sft.sources: {int((lengths > 0).sum())} usable conversations pack into fewer "
                     f"rows than one batch of train.global_batch={global_batch} x {epochs} epoch(s)")
  return local

"""SFT step count from the data: the packed rows of `train.epochs` passes, divided by the batch.

One counting pass tokenizes every conversation once and stores its packed length (0 = dropped:
no trainable token) in `<cache_dir>/sft_counts/lengths_<key>.npy`, keyed by the source files
(path, size, mtime), the tokenizer (hash of its JSON) and seq_len. The row count then replays
the pipeline of `data.chat_pipeline.make_iterator` on those lengths: grain's own shard/shuffle/repeat for
the order, and grain's first-fit packing algorithm for the rows, so the number of batches is
exactly what the iterator yields (a test compares them): the schedule ends where the data does.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from grain._src.python.experimental.index_shuffle.python import index_shuffle_module as index_shuffle

from granite_jax.data import config as data_config
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.data.sources import resolve_files
from granite_jax.data.chat_pipeline import ConversationSource, Encode, _has_target, sft_sources

_VERSION = "sft_lengths_v1"  # bump when Encode or the chat template changes what a record packs to


def _key(files: list[str], tok, seq_len: int, on_bad: str) -> str:
  stats = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
  tok_hash = hashlib.sha1(tok.to_str().encode()).hexdigest()
  blob = json.dumps([_VERSION, stats, tok_hash, seq_len, on_bad])
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _lengths_path(data_cfg, seq_len: int) -> str:
  tok = get_tokenizer(data_cfg)
  path = sft_sources(data_cfg, "train")
  key = _key(resolve_files(path), tok, seq_len, data_config.on_bad_record(data_cfg))
  return os.path.join(data_config.cache_dir(data_cfg), "sft_counts", f"lengths_{key}.npy")


def _save_atomic(path: str, write) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)


def record_lengths(data_cfg, seq_len: int) -> np.ndarray:
  """int32 [n_records]: tokens each conversation puts into packing (0 = filtered out), cached."""
  cache = _lengths_path(data_cfg, seq_len)
  if os.path.exists(cache):
    return np.load(cache)
  tok = get_tokenizer(data_cfg)
  src = ConversationSource(sft_sources(data_cfg, "train"), data_config.on_bad_record(data_cfg))
  encode = Encode(tok, seq_len)
  lengths = np.zeros(len(src), np.int32)
  for i in range(len(src)):
    ex = encode.map(src[i])
    lengths[i] = len(ex["tokens"]) if _has_target(ex) else 0
  _save_atomic(cache, lambda f: np.save(f, lengths))
  return lengths


def record_order(n_records: int, *, seed: int, epochs: int, process_index: int = 0,
                 process_count: int = 1) -> np.ndarray:
  """Record indices in the order `packed_dataset` reads them: `range(n)[pi::pc].shuffle(seed).repeat(e)`.

  Computed with grain's own index permutation (what `ShuffleMapDataset` calls per element, with
  seed + epoch), without the dataset layers around it (10x faster; a test checks equality).
  """
  m = len(range(process_index, n_records, process_count))
  out = np.empty(m * epochs, np.int64)
  for e in range(epochs):
    s = (seed + e) % 2**32
    out[e * m:(e + 1) * m] = [index_shuffle.index_shuffle(j, max_index=m - 1, seed=s, rounds=4)
                              for j in range(m)]
  return process_index + process_count * out


def first_fit_rows(lengths_in_order: np.ndarray, *, seq_len: int, num_bins: int) -> int:
  """Rows grain's FirstFitPackIterDataset makes of inputs of these lengths (0 = filtered out).

  The same algorithm (first bin with room; when none has room, emit all bins and start a new
  round with the element; a partial last round emits its non-empty bins), on lengths only:
  ~100x faster than packing zero arrays through grain, for the same count.
  """
  free = np.full(num_bins, seq_len, np.int64)
  rows = 0
  for n in lengths_in_order[lengths_in_order > 0].tolist():
    i = int(np.argmax(free >= n))
    if free[i] < n:  # fits nowhere: this round's bins (all non-empty) become rows
      rows += num_bins
      free[:] = seq_len
      i = 0
    free[i] -= n
  return rows + int(np.count_nonzero(free < seq_len))


def count_batches(lengths: np.ndarray, *, seq_len: int, batch_size: int, seed: int, epochs: int,
                  process_index: int = 0, process_count: int = 1) -> int:
  """Full batches of `batch_size` rows that `make_iterator(num_epochs=epochs)` yields on this process."""
  order = record_order(len(lengths), seed=seed, epochs=epochs, process_index=process_index,
                       process_count=process_count)
  rows = first_fit_rows(lengths[order], seq_len=seq_len, num_bins=max(batch_size, 16))
  return rows // batch_size


def sft_steps(data_cfg, *, seq_len: int, global_batch: int, seed: int, epochs: int,
              process_index: int = 0, process_count: int = 1) -> int:
  """Optimizer steps of `epochs` passes over the SFT data: the batches every process can make."""
  if not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"train.epochs={epochs!r} must be an integer >= 1 to derive train.steps from the data")
  lengths = record_lengths(data_cfg, seq_len)
  local_batch = global_batch // process_count
  # The replay takes minutes for millions of conversations: its result is cached too.
  cache = _lengths_path(data_cfg, seq_len).replace(
      ".npy", f"_seed{seed}_ep{epochs}_p{process_index}of{process_count}_b{local_batch}.json")
  if os.path.exists(cache):
    with open(cache) as f:
      local = int(json.load(f)["batches"])
  else:
    local = count_batches(lengths, seq_len=seq_len, batch_size=local_batch, seed=seed, epochs=epochs,
                          process_index=process_index, process_count=process_count)
    _save_atomic(cache, lambda f: f.write(json.dumps({"batches": local}).encode()))
  if process_count > 1:  # each process packs its own shard; all stop at the shortest
    from jax.experimental import multihost_utils
    local = int(np.min(multihost_utils.process_allgather(np.int64(local))))
  if local < 1:
    raise ValueError(f"data.sft.sources: {int((lengths > 0).sum())} usable conversations pack into fewer "
                     f"rows than one batch of train.global_batch={global_batch} x {epochs} epoch(s)")
  return local

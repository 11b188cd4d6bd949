"""The training/eval input pipeline: mixture of domains -> packed [batch, seq_len] batches.

Per domain: documents (shard per process, shuffle, repeat) -> tokenize + EOS -> split into
seq_len pieces (a document longer than a row becomes several pieces, each its own segment;
no token is dropped). Domains are mixed by TOKEN share (`token_mix.py`: a weight is the
fraction of trained tokens, not of documents; keyed by domain, so a checkpoint restores into a
changed mixture), first-fit packed into rows with segment ids / positions, batched, and
prefetched by one thread. The returned iterator is checkpointable (`get_state`/`set_state`,
or `grain.checkpoint.CheckpointSave/Restore`).
"""
from __future__ import annotations

import atexit
import weakref
import zlib
from typing import Any

import grain
import numpy as np
import tokenizers

from granite_jax.data import config, sources
from granite_jax.data.config import mixture_weights, resolve_sources  # noqa: F401 - public API
from granite_jax.data.sources import text_dataset
from granite_jax.data.token_mix import TokenMixIterDataset
from granite_jax.data.tokenizer import EOS, PAD, get_tokenizer

_PREFETCH_BATCHES = 2  # one background thread; the host has few cores


def split_ids(ids: list[int], seq_len: int) -> list[list[int]]:
  """Consecutive pieces of at most seq_len tokens (only the last one may be shorter)."""
  return [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]


class SplitTokenize(grain.experimental.FlatMapTransform):
  """str -> [{"tokens": int32[<= seq_len], "domain": int32}, ...]: the document + EOS in row-sized pieces.

  Packing needs every input to fit one row, so a long document is split, not truncated: each
  piece is its own segment (positions restart at 0, no attention across the cut); the last
  piece ends with EOS. One lost target per cut (the first token of a piece is not predicted).
  """

  max_fan_out = 1 << 30  # unused by the iterator flat-map; documents may be any length

  def __init__(self, tok: tokenizers.Tokenizer, eos_id: int, seq_len: int, domain_index: int):
    self.tok, self.eos_id, self.seq_len, self.domain_index = tok, eos_id, seq_len, domain_index

  def flat_map(self, text: str) -> list[dict[str, np.ndarray]]:
    if not text:
      return []
    ids = self.tok.encode(text, add_special_tokens=False).ids
    ids.append(self.eos_id)
    d = np.int32(self.domain_index)
    return [{"tokens": np.asarray(p, np.int32), "domain": d} for p in split_ids(ids, self.seq_len)]


def _domain_seed(seed: int, domain: str) -> int:
  return (seed * 1_000_003 + zlib.crc32(domain.encode())) % 2**32


def _check_args(seq_len, batch_size, split, process_index, process_count, num_epochs):
  if seq_len <= 0 or batch_size <= 0:
    raise ValueError(f"seq_len={seq_len} and batch_size={batch_size} must be > 0")
  if split not in config.SPLITS:
    raise ValueError(f"split={split!r} must be one of {config.SPLITS}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
  if num_epochs is not None and num_epochs <= 0:
    raise ValueError(f"num_epochs={num_epochs} must be None (repeat forever) or > 0")


def document_dataset(data_cfg: Any, tok: tokenizers.Tokenizer, *, seq_len: int, seed: int,
                     split: str = "train", process_index: int = 0, process_count: int = 1,
                     num_epochs: int | None = None) -> grain.IterDataset:
  """Mixed stream of document pieces {"tokens": int32[L <= seq_len], "domain": int32}.

  `domain` indexes `list(mixture_weights(data_cfg))`; domains are mixed by token share.
  Exposed for tests and for inspecting the mixture before packing.
  """
  _check_args(seq_len, 1, split, process_index, process_count, num_epochs)
  weights = mixture_weights(data_cfg)
  paths = resolve_sources(data_cfg, split)
  bad = config.on_bad_record(data_cfg)
  eos_id = tok.token_to_id(EOS)
  if eos_id is None:
    raise ValueError(f"data.tokenizer has no {EOS!r} token (needed as EOS)")
  per_domain = {}
  for i, (domain, path) in enumerate(paths.items()):
    ds = text_dataset(path, bad)
    if len(ds) < process_count:
      raise ValueError(f"data source {path!r} ({domain}) has {len(ds)} records, fewer than "
                       f"process_count={process_count}")
    ds = ds[process_index::process_count]  # disjoint records per process
    if split == "train":
      ds = ds.shuffle(_domain_seed(seed, domain))  # reshuffled every epoch by repeat()
    ds = ds.repeat(num_epochs).filter(bool)
    # Sequential reads per domain: many domains x threads would oversubscribe the host.
    docs = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    # Split on the iterator: its state is (document position, piece index), so resume is exact.
    per_domain[domain] = grain.experimental.FlatMapIterDataset(docs, SplitTokenize(tok, eos_id, seq_len, i))
  return TokenMixIterDataset(per_domain, weights)


def make_iterator(data_cfg: Any, *, seq_len: int, batch_size: int, seed: int, split: str = "train",
                  process_index: int = 0, process_count: int = 1,
                  num_epochs: int | None = None) -> grain.DatasetIterator:
  """Iterator of {"tokens", "segment_ids", "positions"}: int32 numpy arrays [batch_size, seq_len].

  segment_ids: 1, 2, ... per packed document within a row, 0 = padding.
  positions: index within the document (0 at its start), 0 for padding.
  Eval (split="eval") reads the held-out files in a fixed order (no shuffle and
  no bin shuffle), so a fresh eval iterator always yields the same batches.
  num_epochs=None repeats every domain forever; with a number, the stream ends
  when the first domain runs out (grain's mix semantics); one domain with
  num_epochs=1 yields each of its tokens exactly once (batch_size=1: no
  remainder is dropped).
  """
  _check_args(seq_len, batch_size, split, process_index, process_count, num_epochs)
  if split == "train":
    sources.reset_skipped_records()  # a new run (or its resume) counts its own skipped records
  tok = get_tokenizer(data_cfg)
  docs = document_dataset(data_cfg, tok, seq_len=seq_len, seed=seed, split=split,
                          process_index=process_index, process_count=process_count, num_epochs=num_epochs)
  pad_id = tok.token_to_id(PAD)
  packed = grain.experimental.FirstFitPackIterDataset(
      docs.map(_tokens_only),
      length_struct={"tokens": seq_len},
      num_packing_bins=max(batch_size, 16),
      seed=seed,
      shuffle_bins=split == "train",
      padding_struct={"tokens": 0 if pad_id is None else pad_id},
  )
  batched = packed.map(_rename).batch(batch_size, drop_remainder=True)
  it = iter(grain.experimental.ThreadPrefetchIterDataset(batched, prefetch_buffer_size=_PREFETCH_BATCHES))
  _LIVE_ITERATORS.add(it)
  return it


# A prefetch thread still reading (C++) while the interpreter tears down aborts
# the process ("terminate called without an active exception"); stop them first.
_LIVE_ITERATORS: "weakref.WeakSet[grain.DatasetIterator]" = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
  for it in list(_LIVE_ITERATORS):
    close = getattr(it, "close", None)
    if close is not None:
      close()
      # grain's __del__ calls close() again during teardown, when module globals are gone.
      it.close = lambda: None


def _tokens_only(ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"tokens": ex["tokens"]}  # named (not a lambda) so the pipeline stays picklable


def _rename(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"tokens": row["tokens"].astype(np.int32), "segment_ids": row["tokens_segment_ids"],
          "positions": row["tokens_positions"]}

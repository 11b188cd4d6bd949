"""Writes one shard of a token store front to back, in bounded memory.

Documents arrive in order; tokens (and the loss mask) are buffered and
written one whole stored object (store_io.FILE_TOKENS tokens) at a time, each
exactly once, so the files depend only on the tokens: a shard rewritten after
a crash is byte-for-byte the one an uninterrupted run writes. The array's
length is unknown until the end, so it starts unbounded and is shrunk (a
metadata rewrite) before the last, partial object is written.
"""
from __future__ import annotations

import numpy as np
import tensorstore as ts

from granite_jax.data import store_io
from granite_jax.data.store_io import FILE_TOKENS, UNBOUNDED, shard_key


class ShardWriter:
  def __init__(self, store: str, name: str, with_mask: bool, kv: store_io.Kv | None = None):
    self.store, self.name, self.with_mask = store, name, with_mask
    kv = kv or store_io.Kv(store)
    kv.delete_prefix(shard_key(name, ""))  # what a killed run left of this shard
    leaves = ("tokens", "loss_mask") if with_mask else ("tokens",)
    self._arrays = {leaf: ts.open(store_io.array_spec(store, name, leaf, UNBOUNDED), create=True).result()
                    for leaf in leaves}
    self._buf: dict[str, list[np.ndarray]] = {leaf: [] for leaf in leaves}
    self._buffered = 0
    self._written = 0  # tokens already in the arrays (a multiple of FILE_TOKENS)
    self._lengths: list[np.ndarray] = []
    self._pending: list[ts.Future] = []

  def add(self, tokens: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Documents given as their tokens back to back (int32) and their lengths."""
    if int(np.sum(lengths)) != len(tokens):
      raise ValueError(f"shard {self.name}: lengths sum to {int(np.sum(lengths))}, not {len(tokens)} tokens")
    if (mask is not None) != self.with_mask:
      raise ValueError(f"shard {self.name}: a loss mask is {'required' if self.with_mask else 'unexpected'}")
    self._lengths.append(np.asarray(lengths, np.int64))
    self._buf["tokens"].append(np.asarray(tokens, np.int32))
    if mask is not None:
      self._buf["loss_mask"].append(np.asarray(mask, np.uint8))
    self._buffered += len(tokens)
    if self._buffered >= FILE_TOKENS:
      self._flush(final=False)

  def _flush(self, final: bool) -> None:
    for f in self._pending:  # one object's writes in flight while the next is tokenized
      f.result()
    self._pending = []
    whole = self._buffered if final else self._buffered - self._buffered % FILE_TOKENS
    for leaf, parts in self._buf.items():
      data = np.concatenate(parts) if parts else np.zeros(0, store_io.ARRAYS[leaf])
      self._buf[leaf] = [data[whole:]] if whole < len(data) else []
      if whole:
        arr = self._arrays[leaf]
        self._pending.append(arr[self._written:self._written + whole].write(data[:whole]))
    self._written += whole
    self._buffered -= whole

  @property
  def tokens(self) -> int:
    return self._written + self._buffered

  def finish(self) -> tuple[int, int]:
    """Commits everything; returns (docs, tokens). The caller writes done.json after this."""
    for f in self._pending:
      f.result()
    self._pending = []
    total = self.tokens
    for leaf, arr in self._arrays.items():
      self._arrays[leaf] = arr.resize(exclusive_max=[total], resize_metadata_only=True).result()
    self._flush(final=True)
    for f in self._pending:
      f.result()
    lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
    ends = ts.open(store_io.array_spec(self.store, self.name, "doc_ends", len(lengths)), create=True).result()
    if len(lengths):
      ends.write(np.cumsum(lengths)).result()
    return len(lengths), total


def write_shard(store: str, name: str, tokens: np.ndarray, lengths: np.ndarray,
                mask: np.ndarray | None = None, kv: store_io.Kv | None = None) -> tuple[int, int]:
  """One shard from arrays in memory (tests, small builds); returns (docs, tokens)."""
  writer = ShardWriter(store, name, mask is not None, kv)
  writer.add(tokens, lengths, mask)
  return writer.finish()

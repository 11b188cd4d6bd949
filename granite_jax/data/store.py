"""`TokenStore`: random access to a token store (built by data/tokenize.py; layout in store_io.py).

A store is read-only once its manifest exists, so shard arrays are opened
from the manifest's shapes without reading their metadata, never rechecked,
and chunks read once stay in a TensorStore cache pool shared by every store of the process. Open handles
are kept in a bounded LRU; TensorStore's file driver holds no file descriptor
between reads, so a store of any number of shards reads under a small
`ulimit -n`. A TokenStore pickles as its path and manifest and reopens lazily
(Grain worker processes).
"""
from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np
import tensorstore as ts

from granite_jax.data import store_io
from granite_jax.data.store_io import DONE, FORMAT, MANIFEST, PLAN, shard_key
from granite_jax.data.tokenize import build_store  # noqa: F401 - the store's Python build API

__all__ = ["TokenStore", "build_store", "store_exists"]


def store_exists(path: str) -> bool:
  """True when `path` holds a complete token store (its manifest.json)."""
  return store_io.Kv(path).read_json(MANIFEST) is not None


def _load_manifest(path: str) -> dict[str, Any]:
  kv = store_io.Kv(path)
  manifest = kv.read_json(MANIFEST)
  if manifest is None:
    plan = kv.read_json(PLAN)
    if plan is None:
      raise FileNotFoundError(f"{kv.path}: no token store here (no {MANIFEST}); build one with "
                              "python -m granite_jax.data.tokenize")
    n = len(plan["sources"])
    done = sum(d is not None for d in kv.read_json_many(
        [shard_key(store_io.shard_name(i), DONE) for i in range(n)]))
    raise ValueError(f"{kv.path}: token store incomplete, manifest pending: {done} of {n} shards done "
                     "(rerun the tokenize job to finish it)")
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{kv.path}/{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  if manifest.get("layout") != store_io.LAYOUT:  # arrays are opened without reading their metadata
    raise ValueError(f"{kv.path}/{MANIFEST}: layout {manifest.get('layout')}, this code reads {store_io.LAYOUT}")
  return manifest


_CONTEXTS: dict[int, ts.Context] = {}
_CONTEXTS_LOCK = threading.Lock()


def _context(cache_bytes: int) -> ts.Context:
  """One cache pool per process (per size), shared by every shard of every store: repeated chunks
  are memory reads, and a mixture of many stores does not hold many pools."""
  with _CONTEXTS_LOCK:
    if cache_bytes not in _CONTEXTS:
      _CONTEXTS[cache_bytes] = ts.Context({"cache_pool": {"total_bytes_limit": cache_bytes}})
    return _CONTEXTS[cache_bytes]


class _LRU:
  """A bounded, thread-safe least-recently-used map; `weight` bounds the total, not the count."""

  def __init__(self, capacity: int, weight=lambda v: 1):
    self.capacity, self.weight = capacity, weight
    self._items: collections.OrderedDict = collections.OrderedDict()
    self._total = 0
    self._lock = threading.Lock()

  def get(self, key, make):
    with self._lock:
      if key in self._items:
        self._items.move_to_end(key)
        return self._items[key]
    value = make()  # outside the lock: may do I/O
    with self._lock:
      if key not in self._items:
        self._items[key] = value
        self._total += self.weight(value)
        while self._total > self.capacity and len(self._items) > 1:
          _, old = self._items.popitem(last=False)
          self._total -= self.weight(old)
      return self._items[key]


class TokenStore:
  """Documents of a token store, by shard: tokens, loss mask (chat) and document ends."""

  def __init__(self, path: str, *, cache_bytes: int = 256 << 20, max_open: int = 1024,
               doc_ends_bytes: int = 256 << 20, manifest: dict | None = None):
    self.path = store_io.normalize(path)
    self.manifest = manifest if manifest is not None else _load_manifest(self.path)
    self._options = {"cache_bytes": cache_bytes, "max_open": max_open, "doc_ends_bytes": doc_ends_bytes}
    m = self.manifest
    self.kind: str = m["kind"]
    self.tokenizer: dict[str, Any] = dict(m["tokenizer"])
    self.num_shards = len(m["shards"])
    self.shard_docs = np.array([s["docs"] for s in m["shards"]], np.int64)
    self.shard_tokens = np.array([s["tokens"] for s in m["shards"]], np.int64)
    self.num_docs = int(self.shard_docs.sum())
    self.num_tokens = int(self.shard_tokens.sum())
    self.sources = [s["path"] for s in m["sources"]]
    self._names = [s["name"] for s in m["shards"]]
    self._reset()

  def _reset(self):
    self._handles = _LRU(self._options["max_open"])
    self._doc_ends = _LRU(self._options["doc_ends_bytes"], weight=lambda a: a.nbytes)

  def __getstate__(self):
    return {"path": self.path, "manifest": self.manifest, "options": self._options}

  def __setstate__(self, state):
    self.__init__(state["path"], manifest=state["manifest"], **state["options"])

  def __repr__(self) -> str:
    return (f"TokenStore({self.path!r}, kind={self.kind}, shards={self.num_shards}, docs={self.num_docs}, "
            f"tokens={self.num_tokens})")

  # -- opening ---------------------------------------------------------------------------------------

  def _ctx(self) -> ts.Context:
    return _context(self._options["cache_bytes"])

  def _shard(self, s: int) -> int:
    if not 0 <= s < self.num_shards:
      raise IndexError(f"{self.path}: shard {s} out of range [0, {self.num_shards})")
    return int(s)

  def _array(self, s: int, leaf: str) -> ts.TensorStore:
    shape = int(self.shard_docs[s] if leaf == "doc_ends" else self.shard_tokens[s])
    spec = store_io.array_spec(self.path, self._names[s], leaf, shape)
    return self._handles.get((s, leaf), lambda: ts.open(
        spec, open=True, assume_metadata=True, read=True, context=self._ctx()).result())

  # -- reading ---------------------------------------------------------------------------------------

  def doc_ends(self, s: int) -> np.ndarray:
    """int64 [docs of shard s]: document i spans tokens [doc_ends[i-1] (0 for i=0), doc_ends[i])."""
    s = self._shard(s)

    def load():
      ends = self._array(s, "doc_ends").read().result() if self.shard_docs[s] else np.zeros(0, np.int64)
      ends.setflags(write=False)  # shared by every caller
      return ends
    return self._doc_ends.get(s, load)

  def _check_range(self, s: int, start: int, stop: int) -> None:
    if not 0 <= start <= stop <= self.shard_tokens[s]:
      raise IndexError(f"{self.path}: shard {s} range [{start}, {stop}) outside its "
                       f"{int(self.shard_tokens[s])} tokens")

  def _read(self, s: int, leaf: str, start: int, stop: int) -> np.ndarray:
    s = self._shard(s)
    start, stop = int(start), int(stop)
    self._check_range(s, start, stop)
    if start == stop:
      return np.zeros(0, store_io.ARRAYS[leaf])
    return self._array(s, leaf)[start:stop].read().result()

  def read(self, s: int, start: int, stop: int) -> np.ndarray:
    """int32 [stop - start]: tokens start..stop of shard s."""
    return self._read(s, "tokens", start, stop)

  def read_mask(self, s: int, start: int, stop: int) -> np.ndarray:
    """uint8 [stop - start]: the loss mask (1 = trained on) of those tokens; chat stores only."""
    if self.kind != "chat":
      raise ValueError(f"{self.path}: a {self.kind} store has no loss mask (only chat stores do)")
    return self._read(s, "loss_mask", start, stop)

  def read_ranges(self, s: int, starts, stops, *, leaf: str = "tokens") -> list[np.ndarray]:
    """Tokens (or `leaf="loss_mask"`) of many ranges of shard s, read concurrently."""
    s = self._shard(s)
    starts = np.asarray(starts, np.int64).reshape(-1)
    stops = np.asarray(stops, np.int64).reshape(-1)
    if starts.shape != stops.shape:
      raise ValueError(f"read_ranges: {len(starts)} starts but {len(stops)} stops")
    if leaf == "loss_mask" and self.kind != "chat":
      raise ValueError(f"{self.path}: a {self.kind} store has no loss mask (only chat stores do)")
    for a, b in zip(starts, stops):
      self._check_range(s, int(a), int(b))
    if not len(starts):
      return []
    lo, hi = int(starts.min()), int(stops.max())
    arr = self._array(s, leaf) if hi > lo else None
    if arr is not None and hi - lo <= 2 * int((stops - starts).sum()) + store_io.READ_TOKENS:
      span = arr[lo:hi].read().result()  # dense ranges: one read, then slices
      return [span[a - lo:b - lo].copy() for a, b in zip(starts, stops)]
    futures = [arr[int(a):int(b)].read() if b > a else None for a, b in zip(starts, stops)]
    empty = np.zeros(0, store_io.ARRAYS[leaf])
    return [f.result() if f is not None else empty for f in futures]

  def check_tokenizer(self, fingerprint: str, what: str = "the run's tokenizer") -> None:
    """Raises unless `fingerprint` is the store's tokenizer fingerprint."""
    mine = self.tokenizer.get("fingerprint")
    if fingerprint != mine:
      raise ValueError(f"{self.path}: token store was built with tokenizer {mine} "
                       f"({self.tokenizer.get('path')}), but {what} has fingerprint {fingerprint}; "
                       "retokenize with the same tokenizer")

"""One global order: row g of a phase's training stream is a pure function of (data seed, g).

Global batch b holds rows g = b * B + r, r < B. Nothing here depends on how many processes read
the rows or which ones: each process asks for the rows its devices hold, and a run resumes on
any process count from the step alone (no iterator state).

1. Which domain row g comes from (`Mixture`): a fixed pattern of P = 2**16 slots in which domain k
   holds q_k ~= w_k P slots (largest remainder, every domain at least one), spread evenly. Rows of
   domain k before g = (g // P) q_k + before[g % P, k]: a closed form, nothing replayed. Text rows
   are full (only the last row of a domain's epoch has padding), so a row share is a token share.
2. Which window row c of a domain is (`WindowRows`, token stores of text): epoch e = c // R with
   R = ceil(N / L) rows per epoch; its window p = a per-epoch Feistel permutation of c % R
   (random access, nothing materialized). The epoch's stream is the domain's shards in a
   per-epoch permuted order, each shard's EOS-terminated documents in stored order, concatenated;
   window p is stream tokens [pL, min(pL + L, N)). So every token of a domain is in exactly one
   row per epoch; a document crossing a window edge (or longer than a row) is split there, each
   piece its own segment (positions from 0, no attention across the cut), never truncated.
3. Conversations (`PackedRows`, chat stores for SFT) are packed whole, not windowed: a reply
   must see its prompt. Each epoch permutes the conversations, splits any longer than a row into
   row-sized pieces, and packs them next-fit in that order; rows carry the stored loss mask.

Why windows for text and not first-fit packing of shuffled documents: first-fit is a sequential
pass (a resume replays it, a process must see every row), and random access to a per-epoch
document permutation needs its prefix sums, O(documents) per epoch per process (10T tokens is
~10^10 documents). Windows cost O(shards) per epoch and waste no padding; documents next to each
other in a shard share rows in every epoch (the rows themselves are reshuffled).
"""
from __future__ import annotations

import collections
import functools
import zlib
from typing import Any

import numpy as np
from grain._src.python.experimental.index_shuffle.python import index_shuffle_module as _index_shuffle

MIX_PERIOD = 1 << 16


def sub_seed(*parts: Any) -> int:
  """A uint32 seed from ints and strings (stable across processes and Python versions)."""
  ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) % 2**32 for p in parts]
  return int(np.random.SeedSequence(ints).generate_state(1)[0])


def feistel(i: int, n: int, seed: int) -> int:
  """A random-access permutation of range(n) (grain's index shuffle)."""
  return 0 if n <= 1 else int(_index_shuffle.index_shuffle(int(i), max_index=n - 1, seed=seed, rounds=4))


class Mixture:
  """Row g -> (domain index, rows of that domain before g) for fixed token shares."""

  def __init__(self, weights: list[float], period: int = MIX_PERIOD):
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or not len(w) or np.any(~(w > 0)):
      raise ValueError(f"mixture weights must be > 0, got {weights}")
    if period < len(w):
      raise ValueError(f"mixture period {period} is shorter than the {len(w)} domains")
    w = w / w.sum()
    q = np.maximum(np.floor(w * period).astype(np.int64), 1)
    while q.sum() > period:  # only when minimums pushed it over: take from the largest
      q[np.argmax(q)] -= 1
    rest = period - q.sum()
    if rest:  # largest remainders first, ties to the earlier domain
      q[np.argsort(-(w * period - q), kind="stable")[:rest]] += 1
    self.quota_K = q
    # Domain k's j-th slot sits at (j + 1/2) / q_k of the period: every domain spread evenly.
    at = np.concatenate([(np.arange(n) + 0.5) / n for n in q])
    dom = np.concatenate([np.full(n, k, np.int32) for k, n in enumerate(q)])
    self.slot_P = dom[np.argsort(at, kind="stable")]
    onehot = np.zeros((period, len(q)), np.int32)
    onehot[np.arange(period), self.slot_P] = 1
    self.before_PK = np.cumsum(onehot, axis=0) - onehot  # slots of k before slot t in the period
    self.period = period

  def locate(self, g_R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g_R = np.asarray(g_R, np.int64)
    t_R = g_R % self.period
    k_R = self.slot_P[t_R]
    return k_R, (g_R // self.period) * self.quota_K[k_R] + self.before_PK[t_R, k_R]

  def rows_before(self, g: int) -> np.ndarray:
    """int64[K]: rows of each domain among rows 0..g-1."""
    return (g // self.period) * self.quota_K + self.before_PK[g % self.period]


def _segments(starts: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
  """segment_ids (1, 2, ...) and positions (from 0) of n tokens whose segments start at `starts`."""
  starts_S = np.asarray(starts, np.int64)
  seg_T = np.searchsorted(starts_S, np.arange(n), side="right")
  return seg_T.astype(np.int32), (np.arange(n) - starts_S[seg_T - 1]).astype(np.int32)


def _padded(parts: dict[str, np.ndarray], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  out = {}
  for name, x in parts.items():
    row = np.full(seq_len, pad_id if name == "tokens" else 0, np.int32)
    row[:len(x)] = x
    out[name] = row
  return out


class WindowRows:
  """Rows of one text token store: windows of seq_len tokens over a per-epoch shard order."""

  def __init__(self, store: Any, seq_len: int, seed: int, *, shuffle: bool = True):
    self.store, self.seq_len, self.seed, self.shuffle = store, seq_len, seed, shuffle
    self.tokens_S = np.asarray(store.shard_tokens, np.int64)
    self.num_tokens = int(self.tokens_S.sum())
    if self.num_tokens == 0:
      raise ValueError(f"token store {store.path} holds no tokens (sources: {', '.join(store.sources[:5])}"
                       f"{' ...' if len(store.sources) > 5 else ''}): every record empty or bad?")
    self.pad_id = int(store.tokenizer["pad_id"])

  def rows_per_epoch(self, epoch: int = 0) -> int:
    return -(-self.num_tokens // self.seq_len)

  def epoch_of(self, c: int) -> tuple[int, int]:
    return divmod(int(c), self.rows_per_epoch())

  @functools.lru_cache(maxsize=4)
  def _shard_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(self.tokens_S)
    order = np.random.default_rng(sub_seed(self.seed, "shards", epoch)).permutation(n) if self.shuffle \
        else np.arange(n)
    return order, np.concatenate([[0], np.cumsum(self.tokens_S[order])])

  def row(self, c: int) -> dict[str, np.ndarray]:
    epoch, i = self.epoch_of(c)
    p = feistel(i, self.rows_per_epoch(), sub_seed(self.seed, "rows", epoch)) if self.shuffle else i
    a, b = p * self.seq_len, min((p + 1) * self.seq_len, self.num_tokens)
    order, starts = self._shard_order(epoch)
    j = int(np.searchsorted(starts, a, side="right")) - 1
    toks, seg_starts, n = [], [], 0
    while a < b:
      s, lo = int(order[j]), int(starts[j])
      la, lb = a - lo, min(b, int(starts[j + 1])) - lo
      if lb > la:
        toks.append(np.asarray(self.store.read(s, la, lb), np.int32))
        ends = self.store.doc_ends(s)
        # A piece starts at la and at every document start strictly inside (la, lb).
        inner = ends[np.searchsorted(ends, la, side="right"):np.searchsorted(ends, lb, side="left")]
        seg_starts += [n] + [n + int(e) - la for e in inner]
        n += lb - la
        a = lo + lb
      j += 1
    tokens = np.concatenate(toks)
    seg, pos = _segments(seg_starts, n)
    return _padded(dict(tokens=tokens, segment_ids=seg, positions=pos), self.seq_len, self.pad_id)


class PackedRows:
  """Rows of one chat token store: whole conversations packed next-fit in a per-epoch order."""

  def __init__(self, store: Any, seq_len: int, seed: int, *, shuffle: bool = True):
    self.store, self.seq_len, self.seed, self.shuffle = store, seq_len, seed, shuffle
    self.pad_id = int(store.tokenizer["pad_id"])
    ends = [np.asarray(store.doc_ends(s), np.int64) for s in range(store.num_shards)]
    self.doc_shard = np.concatenate([np.full(len(e), s, np.int32) for s, e in enumerate(ends)]) \
        if ends else np.zeros(0, np.int32)
    self.doc_start = np.concatenate([np.concatenate([[0], e[:-1]]) for e in ends]) if ends else np.zeros(0)
    self.doc_len = np.concatenate([np.diff(np.concatenate([[0], e])) for e in ends]) if ends else np.zeros(0)
    if not len(self.doc_len) or self.doc_len.sum() == 0:
      raise ValueError(f"token store {store.path} holds no conversations (sources: "
                       f"{', '.join(store.sources[:5])}): every record empty or bad?")
    self._rows_cum = [0]  # rows before each planned epoch

  @functools.lru_cache(maxsize=2)
  def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row_start[R+1] into pieces, piece doc, piece offset, piece length) for one epoch."""
    n, L = len(self.doc_len), self.seq_len
    order = np.random.default_rng(sub_seed(self.seed, "docs", epoch)).permutation(n) if self.shuffle \
        else np.arange(n)
    lens = self.doc_len[order]
    order, lens = order[lens > 0], lens[lens > 0]
    pieces = -(-lens // L)
    p_doc = np.repeat(order, pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    p_off = (np.arange(len(p_doc)) - first) * L
    p_len = np.minimum(self.doc_len[p_doc] - p_off, L)
    row_start, fill = [0], 0
    for k, ln in enumerate(p_len.tolist()):  # next-fit: one pass, ~1 s per 4M pieces
      if fill + ln > L:
        row_start.append(k)
        fill = 0
      fill += ln
    row_start.append(len(p_len))
    return np.asarray(row_start, np.int64), p_doc, p_off, p_len

  def rows_per_epoch(self, epoch: int = 0) -> int:
    return len(self._plan(epoch)[0]) - 1

  def epoch_of(self, c: int) -> tuple[int, int]:
    c = int(c)
    while self._rows_cum[-1] <= c:
      self._rows_cum.append(self._rows_cum[-1] + self.rows_per_epoch(len(self._rows_cum) - 1))
    e = int(np.searchsorted(self._rows_cum, c, side="right")) - 1
    return e, c - self._rows_cum[e]

  def rows_in_epochs(self, epochs: int) -> int:
    return sum(self.rows_per_epoch(e) for e in range(epochs))

  def row(self, c: int) -> dict[str, np.ndarray]:
    epoch, i = self.epoch_of(c)
    row_start, p_doc, p_off, p_len = self._plan(epoch)
    toks, masks, seg_starts, n = [], [], [], 0
    for k in range(int(row_start[i]), int(row_start[i + 1])):
      d = int(p_doc[k])
      s, a = int(self.doc_shard[d]), int(self.doc_start[d] + p_off[k])
      toks.append(np.asarray(self.store.read(s, a, a + int(p_len[k])), np.int32))
      masks.append(np.asarray(self.store.read_mask(s, a, a + int(p_len[k])), np.int32))
      seg_starts.append(n)
      n += int(p_len[k])
    seg, pos = _segments(seg_starts, n)
    return _padded(dict(tokens=np.concatenate(toks), loss_mask=np.concatenate(masks), segment_ids=seg,
                        positions=pos), self.seq_len, self.pad_id)


class GlobalOrder:
  """The training (or eval) rows of a phase: domains mixed by share, each a row source."""

  def __init__(self, sources: dict[str, Any], weights: dict[str, float]):
    if set(sources) != set(weights) or not sources:
      raise ValueError(f"domains of the sources {sorted(sources)} and weights {sorted(weights)} differ")
    self.names = list(sources)
    self.sources = [sources[n] for n in self.names]
    self.mixture = Mixture([weights[n] for n in self.names])

  def rows(self, g_R) -> dict[str, np.ndarray]:
    """[len(g_R), seq_len] int32 arrays of global rows g_R."""
    k_R, c_R = self.mixture.locate(np.asarray(g_R, np.int64))
    rows = [self.sources[k].row(c) for k, c in zip(k_R.tolist(), c_R.tolist())]
    return {name: np.stack([r[name] for r in rows]) for name in rows[0]}

  def batch(self, b: int, global_batch: int, row_ids=None) -> dict[str, np.ndarray]:
    """Rows `row_ids` (default: all) of global batch b."""
    ids = np.arange(global_batch) if row_ids is None else np.asarray(row_ids, np.int64)
    return self.rows(b * global_batch + ids)

  def epochs(self, rows_done: int) -> dict[str, float]:
    """Epochs of each domain consumed by the first `rows_done` rows of the stream."""
    before = self.mixture.rows_before(int(rows_done))
    out = {}
    for name, src, c in zip(self.names, self.sources, before.tolist()):
      e, i = src.epoch_of(c)
      out[name] = e + i / max(src.rows_per_epoch(e), 1)
    return out


class EpochWatch:
  """Says once when a domain starts its second epoch (and each later one)."""

  def __init__(self):
    self.seen: collections.Counter[str] = collections.Counter()

  def news(self, epochs: dict[str, float]) -> list[str]:
    out = []
    for name, e in epochs.items():
      if int(e) > self.seen[name]:
        self.seen[name] = int(e)
        out.append(f"domain {name} starts epoch {int(e) + 1} (its data repeats from here)")
    return out

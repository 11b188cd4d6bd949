"""The global order (data/order.py) on in-memory stores whose every token is unique (its own index)."""
import numpy as np
import pytest

from granite_jax.data import order


class MemStore:
  """TokenStore's read API over lists of documents per shard (token value = global token index)."""

  def __init__(self, doc_lens_per_shard, *, chat=False, pad_id=0, offset=1000):
    self.path, self.sources, self.kind = "mem://", ["mem.jsonl"], "chat" if chat else "text"
    self.tokenizer = {"pad_id": pad_id, "eos_id": 1, "fingerprint": "x"}
    self._ends, self._toks, self._mask, nxt = [], [], [], offset
    for lens in doc_lens_per_shard:
      n = int(sum(lens))
      self._ends.append(np.cumsum(lens).astype(np.int64))
      self._toks.append(np.arange(nxt, nxt + n, dtype=np.int32))
      self._mask.append((self._toks[-1] % 3 == 0).astype(np.uint8))
      nxt += n
    self.num_shards = len(doc_lens_per_shard)
    self.shard_tokens = np.asarray([len(t) for t in self._toks], np.int64)
    self.shard_docs = np.asarray([len(e) for e in self._ends], np.int64)
    self.num_tokens, self.reads = int(self.shard_tokens.sum()), 0

  def doc_ends(self, s):
    return self._ends[s]

  def read(self, s, a, b):
    assert 0 <= a <= b <= self.shard_tokens[s], (s, a, b)
    self.reads += 1
    return self._toks[s][a:b]

  def read_mask(self, s, a, b):
    return self._mask[s][a:b]

  def docs(self):
    """Every document's tokens, as a reference."""
    return [t[s:e] for t, ends in zip(self._toks, self._ends) for s, e in zip(np.r_[0, ends[:-1]], ends)]


def _lens(rng, shards, docs, hi):
  return [rng.integers(1, hi, size=rng.integers(0, docs + 1)).tolist() for _ in range(shards)]


def _pieces(rows):
  """(tokens of each segment piece) over rows, from segment ids; positions must restart at 0."""
  out = []
  for r in range(rows["tokens"].shape[0]):
    seg, pos, tok = rows["segment_ids"][r], rows["positions"][r], rows["tokens"][r]
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      assert np.array_equal(pos[idx], np.arange(len(idx)))
      assert np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))  # contiguous
      out.append(tok[idx])
  return out


@pytest.mark.parametrize("seq_len", [7, 16, 64])
@pytest.mark.parametrize("shuffle", [True, False])
def test_windows_cover_every_token_once_per_epoch(seq_len, shuffle):
  rng = np.random.default_rng(seq_len)
  store = MemStore(_lens(rng, 6, 12, 90) + [[]] + [[200]])  # an empty shard and a doc > a row
  src = order.WindowRows(store, seq_len, seed=3, shuffle=shuffle)
  R = src.rows_per_epoch()
  assert R == -(-store.num_tokens // seq_len)
  for epoch in range(2):
    rows = [src.row(epoch * R + i) for i in range(R)]
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    pieces = _pieces(stacked)
    seen = np.sort(np.concatenate(pieces))
    np.testing.assert_array_equal(seen, np.arange(1000, 1000 + store.num_tokens))  # each token once
    assert (stacked["segment_ids"] == 0).sum() == R * seq_len - store.num_tokens  # padding only at the tail
    # A piece never spans two documents, and consecutive tokens of a document stay in order.
    doc_of = np.zeros(1000 + store.num_tokens, np.int64)
    for i, d in enumerate(store.docs()):
      doc_of[d] = i
    for p in pieces:
      assert len(set(doc_of[p])) == 1 and np.all(np.diff(p) == 1)


def test_epochs_reshuffle_and_seed_changes_order():
  store = MemStore(_lens(np.random.default_rng(0), 5, 20, 40))
  a = order.WindowRows(store, 16, seed=1)
  b = order.WindowRows(store, 16, seed=2)
  R = a.rows_per_epoch()
  first = [a.row(i)["tokens"][0] for i in range(R)]
  second = [a.row(R + i)["tokens"][0] for i in range(R)]
  assert first != second  # rows reshuffled, shards reordered (so the cuts move too)
  assert first != [b.row(i)["tokens"][0] for i in range(R)]
  assert all(np.array_equal(a.row(i)["tokens"], order.WindowRows(store, 16, seed=1).row(i)["tokens"])
             for i in range(0, 3 * R, 7))


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.59, 0.2, 0.07, 0.105, 0.02, 0.015], [1.0], [3, 1e-4]])
def test_mixture_rows_match_token_shares(weights):
  mix = order.Mixture(weights, period=4096)
  n = 3 * 4096 + 123
  k, c = mix.locate(np.arange(n))
  w = np.asarray(weights) / np.sum(weights)
  counts = np.zeros(len(w), np.int64)
  for kk in range(len(w)):  # each domain's rows are numbered 0, 1, 2, ... in stream order
    np.testing.assert_array_equal(c[k == kk], np.arange((k == kk).sum()))
  for T in range(0, n, 97):
    counts = np.bincount(k[:T], minlength=len(w))
    np.testing.assert_array_equal(mix.rows_before(T), counts)
    # Quantized to the period (q/P) and spread evenly: within 2 rows of the share, plus rounding.
    assert np.all(np.abs(counts - w * T) <= 2 + T * np.abs(mix.quota_K / 4096 - w))
  assert np.all(mix.quota_K >= 1) and mix.quota_K.sum() == 4096


def test_global_order_batches_are_row_selections():
  rng = np.random.default_rng(1)
  srcs = {"a": order.WindowRows(MemStore(_lens(rng, 3, 10, 50)), 32, 5),
          "b": order.WindowRows(MemStore(_lens(rng, 2, 10, 50), offset=10**6), 32, 6)}
  go = order.GlobalOrder(srcs, {"a": 0.7, "b": 0.3})
  full = go.batch(4, 8)
  part = go.batch(4, 8, row_ids=[6, 1])
  for k in full:
    np.testing.assert_array_equal(part[k], full[k][[6, 1]])
  np.testing.assert_array_equal(go.rows([4 * 8 + 6])["tokens"][0], full["tokens"][6])
  ep = go.epochs(10_000)
  assert ep["a"] > 1 and ep["b"] > 1
  watch = order.EpochWatch()
  assert len(watch.news(ep)) == 2 and watch.news(ep) == []


def test_packed_chat_rows_keep_conversations_whole():
  lens = [[5, 9, 30, 3], [12, 7], [16]]
  store = MemStore(lens, chat=True)
  src = order.PackedRows(store, 16, seed=0)
  R0 = src.rows_per_epoch(0)
  rows = [src.row(i) for i in range(R0)]
  stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  pieces = _pieces(stacked)
  np.testing.assert_array_equal(np.sort(np.concatenate(pieces)), np.arange(1000, 1000 + store.num_tokens))
  # Only the 30-token conversation is split (into 16 + 14); every other one is one piece.
  assert sorted(len(p) for p in pieces) == sorted([5, 9, 16, 14, 3, 12, 7, 16])
  for r in rows:  # the mask travels with its tokens
    m = r["segment_ids"] > 0
    np.testing.assert_array_equal(r["loss_mask"][m], (r["tokens"][m] % 3 == 0).astype(np.int32))
  e, i = src.epoch_of(R0 + 1)
  assert (e, i) == (1, 1) and src.rows_in_epochs(2) == R0 + src.rows_per_epoch(1)


def test_empty_store_is_an_error_naming_sources():
  with pytest.raises(ValueError, match="holds no tokens.*mem.jsonl"):
    order.WindowRows(MemStore([[], []]), 8, 0)

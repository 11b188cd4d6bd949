"""Reading token stores: ranges, masks, document ends, errors, pickling, open files, throughput."""
import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from granite_jax.data import store_io
from granite_jax.data.store import TokenStore, store_exists
from granite_jax.data.store_writer import write_shard
from granite_jax.data.tokenize import manifest_of
from tests.data.store_helpers import direct_store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _shard(rng, docs, max_len, vocab=50_000):
  lengths = rng.integers(1, max_len, docs).astype(np.int64)
  return rng.integers(0, vocab, int(lengths.sum())).astype(np.int32), lengths


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
  rng = np.random.default_rng(0)
  # Shard 0 spans three stored objects (2^20 tokens each), shard 1 is small, shard 2 empty.
  shards = [_shard(rng, 900, 6000), _shard(rng, 7, 50), (np.zeros(0, np.int32), np.zeros(0, np.int64))]
  root = str(tmp_path_factory.mktemp("store"))
  direct_store(root, shards)
  return root, shards


def test_reads_equal_what_was_written(text_store):
  root, shards = text_store
  store = TokenStore(root)
  assert (store.kind, store.num_shards) == ("text", 3) and store.path == root
  assert store.shard_tokens.tolist() == [len(t) for t, _ in shards] and store.shard_tokens[0] > 2 << 20
  assert store.shard_docs.tolist() == [len(n) for _, n in shards] and store.shard_docs.dtype == np.int64
  assert (store.num_docs, store.num_tokens) == (sum(len(n) for _, n in shards), sum(len(t) for t, _ in shards))
  assert store.tokenizer == {"fingerprint": "0123456789abcdef", "eos_id": 1, "pad_id": 0, "vocab_size": 50000,
                             "path": "/tok.json"}
  rng = np.random.default_rng(1)
  for s, (tokens, lengths) in enumerate(shards):
    ends = store.doc_ends(s)
    assert ends.dtype == np.int64 and ends.tolist() == np.cumsum(lengths).tolist()
    assert store.doc_ends(s) is ends  # cached
    n = len(tokens)
    starts = rng.integers(0, n + 1, 40)
    stops = np.minimum(starts + rng.integers(0, 9000, 40), n)
    for a, b in zip(starts, stops):
      got = store.read(s, a, b)
      assert got.dtype == np.int32 and got.tolist() == tokens[a:b].tolist()
    for lo_hi in [(starts, stops), (np.sort(starts)[:5], np.sort(starts)[:5] + (n > 0))]:  # sparse, dense
      got = store.read_ranges(s, *lo_hi)
      assert [g.tolist() for g in got] == [tokens[a:b].tolist() for a, b in zip(*lo_hi)]
  assert store.read_ranges(0, [], []) == []
  assert store.read(2, 0, 0).shape == (0,)


def test_bad_reads_name_the_store(text_store):
  root, shards = text_store
  store = TokenStore(root)
  with pytest.raises(IndexError, match=rf"{root}: shard 1 range \[0, 10000\) outside its"):
    store.read(1, 0, 10_000)
  with pytest.raises(IndexError, match="shard 3 out of range"):
    store.read(3, 0, 1)
  with pytest.raises(ValueError, match="text store has no loss mask"):
    store.read_mask(0, 0, 1)


def test_chat_store_reads_the_mask(tmp_path):
  rng = np.random.default_rng(2)
  tokens, lengths = _shard(rng, 30, 100)
  mask = rng.integers(0, 2, len(tokens)).astype(np.uint8)
  direct_store(str(tmp_path), [(tokens, lengths, mask)], kind="chat")
  store = TokenStore(str(tmp_path))
  assert store.kind == "chat"
  got = store.read_mask(0, 5, 700)
  assert got.dtype == np.uint8 and got.tolist() == mask[5:700].tolist()
  assert [m.tolist() for m in store.read_ranges(0, [0, 10], [3, 20], leaf="loss_mask")] == \
      [mask[0:3].tolist(), mask[10:20].tolist()]


def test_missing_or_incomplete_store(tmp_path):
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'none'}: no token store here"):
    TokenStore(str(tmp_path / "none"))
  assert not store_exists(str(tmp_path / "none"))
  kv = store_io.Kv(str(tmp_path / "half"))
  kv.write_json(store_io.PLAN, {"sources": [{"path": "a", "size": 1}] * 3})
  kv.write_json("shards/00001/done.json", {})
  with pytest.raises(ValueError, match="half: token store incomplete, manifest pending: 1 of 3 shards done"):
    TokenStore(str(tmp_path / "half"))


def test_pickles_and_reopens(text_store):
  root, shards = text_store
  store = TokenStore(root)
  store.read(0, 0, 10)
  copy = pickle.loads(pickle.dumps(store))
  assert copy.read(0, 100, 5000).tolist() == shards[0][0][100:5000].tolist()
  assert copy.doc_ends(1).tolist() == np.cumsum(shards[1][1]).tolist() and copy.manifest == store.manifest


def _many_shards(root: str, n: int, templates: int = 10) -> None:
  """n shards: `templates` written by the real writer, the rest links to them (fast)."""
  kv = store_io.Kv(root)
  dones = []
  for s in range(n):
    name = store_io.shard_name(s)
    t = s % templates
    if s < templates:
      tokens = np.arange(1000 * t, 1000 * t + 40 + t, dtype=np.int32)
      write_shard(root, name, tokens, np.array([10, 30 + t]), kv=kv)
    else:
      os.symlink(store_io.shard_name(t), os.path.join(root, "shards", name))
    dones.append({"shard": name, "source": f"/d/{name}.jsonl", "size": 0, "records": 2, "docs": 2,
                  "tokens": 40 + t, "skipped": 0})
  plan = {"format": store_io.FORMAT, "kind": "text", "text_field": "text",
          "tokenizer": {"fingerprint": "f" * 16, "eos_id": 1, "pad_id": 0, "vocab_size": 10_000, "path": "t"}}
  kv.write_json(store_io.MANIFEST, manifest_of(plan, dones))


def test_open_files_stay_bounded_with_10000_shards(tmp_path):
  root = str(tmp_path / "many")
  _many_shards(root, 10_000)
  script = textwrap.dedent(f"""
      import os, resource
      import numpy as np
      resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
      from granite_jax.data.store import TokenStore
      store = TokenStore({root!r}, max_open=64)
      rng = np.random.default_rng(0)
      most = 0
      for s in rng.integers(0, store.num_shards, 3000):
        t = int(s) % 10
        assert store.read(s, 5, 40 + t).tolist() == list(range(1000 * t + 5, 1000 * t + 40 + t)), s
        assert store.doc_ends(s).tolist() == [10, 40 + t], s
        most = max(most, len(os.listdir("/proc/self/fd")))
      print("most open fds", most)
      """)
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.split()[-1]) < 64  # TensorStore holds no file between reads


@pytest.mark.slow
def test_random_row_read_throughput(tmp_path, capsys):
  """Rows of 4096 tokens at random positions of a 64M-token local store, one thread of Python."""
  rng = np.random.default_rng(3)
  shards = [_shard(rng, 4000, 8000) for _ in range(4)]
  direct_store(str(tmp_path), shards)
  store = TokenStore(str(tmp_path))
  rows, n = 4096, 3000
  picks = [(int(s), int(rng.integers(0, store.shard_tokens[s] - rows))) for s in rng.integers(0, 4, n)]
  for s, a in picks[:200]:  # warm the handles
    store.read(s, a, a + rows)
  t = time.perf_counter()
  for s, a in picks:
    store.read(s, a, a + rows)
  serial = n * rows / (time.perf_counter() - t)
  t = time.perf_counter()
  for s in range(4):
    starts = np.array([a for s2, a in picks if s2 == s])
    store.read_ranges(s, starts, starts + rows)
  batched = n * rows / (time.perf_counter() - t)
  with capsys.disabled():
    print(f"\nrandom {rows}-token rows: read() {serial / 1e6:.1f}M tokens/s, read_ranges {batched / 1e6:.1f}M tokens/s")
  assert serial > 1e6

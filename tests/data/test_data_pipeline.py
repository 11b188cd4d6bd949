"""The run's data path: config -> token stores (text tokenized once) -> global order -> batches.

References are independent: the tokenizer's own ids of each document + EOS, and the documents'
concatenation in file order.
"""
import json
import threading
import time

import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.data import batches as batches_lib
from granite_jax.data import pipeline
from granite_jax.data.tokenizer import EOS, PAD, get_tokenizer

SEQ = 64
WORDS = ("the model reads long documents and every token of them counts once while rows are cut "
         "into windows of text from books code papers and the web").split()


def _texts(rng, n_docs, n_words):
  return [" ".join(rng.choice(WORDS, size=max(1, int(rng.integers(n_words // 2, 3 * n_words // 2)))))
          for _ in range(n_docs)]


def _write(path, texts, field="text"):
  path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
  return str(path)


def _stream(tok, texts):
  eos = tok.token_to_id(EOS)
  return np.concatenate([[*tok.encode(t, add_special_tokens=False).ids, eos] for t in texts]).astype(np.int32)


def _rows(order, n):
  return order.rows(np.arange(n))


def _real_tokens(rows):
  return np.concatenate([t[s > 0] for t, s in zip(rows["tokens"], rows["segment_ids"])])


@pytest.fixture
def texts_cfg(data_cfg, tmp_path):
  rng = np.random.default_rng(0)
  texts = _texts(rng, 20, 8) + _texts(rng, 5, 150) + _texts(rng, 2, 500)  # some span many rows
  path = _write(tmp_path / "mine.jsonl", texts)
  data_cfg.mixture, data_cfg.sources, data_cfg.eval_sources = {"math": 1}, {"math": path}, {"math": path}
  return data_cfg, texts


def test_rows_shapes_dtypes_and_segments(data_cfg, demo_tok):
  order = pipeline.make_order(data_cfg, seq_len=SEQ, seed=0)
  b = order.batch(3, 8)
  assert set(b) == {"tokens", "segment_ids", "positions"}
  for v in b.values():
    assert v.shape == (8, SEQ) and v.dtype == np.int32
  for seg, pos in zip(b["segment_ids"], b["positions"]):
    starts = np.flatnonzero(np.diff(np.r_[0, seg]) != 0)
    assert seg[0] == 1 and np.all(np.diff(seg) >= 0)
    assert np.all(pos[starts] == 0) and np.all(np.diff(pos)[np.diff(seg) == 0] == 1)


def test_eval_order_is_the_documents_in_file_order(texts_cfg, demo_tok):
  """Held-out rows, in order, are exactly the tokenizer's ids of each document + EOS, cut every SEQ."""
  cfg, texts = texts_cfg
  want = _stream(demo_tok, texts)
  order = pipeline.make_order(cfg, seq_len=SEQ, seed=0, split="eval")
  R = order.sources[0].rows_per_epoch()
  assert R == -(-len(want) // SEQ)
  rows = _rows(order, R)
  np.testing.assert_array_equal(_real_tokens(rows), want)
  pad = rows["segment_ids"] == 0
  assert pad.sum() == R * SEQ - len(want) and np.all(rows["tokens"][pad] == demo_tok.token_to_id(PAD))
  # Segments end at EOS or at a row edge: documents are split there, never truncated.
  eos = demo_tok.token_to_id(EOS)
  for t, s in zip(rows["tokens"], rows["segment_ids"]):
    for k in range(1, s.max()):
      assert t[s == k][-1] == eos


def test_train_epoch_is_a_permutation_of_the_windows(texts_cfg):
  """Every token exactly once per epoch: the shuffled epochs hold the same windows as the eval order."""
  cfg, _ = texts_cfg
  ev = pipeline.make_order(cfg, seq_len=SEQ, seed=0, split="eval")
  tr = pipeline.make_order(cfg, seq_len=SEQ, seed=5)
  R = ev.sources[0].rows_per_epoch()
  want = sorted(map(bytes, _rows(ev, R)["tokens"]))
  e0, e1 = tr.rows(np.arange(R))["tokens"], tr.rows(np.arange(R, 2 * R))["tokens"]
  assert sorted(map(bytes, e0)) == want and sorted(map(bytes, e1)) == want
  assert not np.array_equal(e0, e1)  # reshuffled each epoch
  assert tr.epochs(R + R // 2)["math"] == pytest.approx(1.5, abs=1 / R)


def test_token_shares_follow_the_mixture(data_cfg):
  order = pipeline.make_order(data_cfg, seq_len=SEQ, seed=0)
  n = 4000
  k, _ = order.mixture.locate(np.arange(n))
  rows = order.rows(np.arange(n))
  real = (rows["segment_ids"] > 0).sum(1)
  weights = pipeline.mixture_weights(data_cfg)
  total = real.sum()
  for i, (d, w) in enumerate(weights.items()):
    assert abs(real[k == i].sum() / total - w) < 0.003, d


def test_seeds_and_phases(data_cfg):
  a = pipeline.make_order(data_cfg, seq_len=SEQ, seed=7).batch(0, 4)
  b = pipeline.make_order(data_cfg, seq_len=SEQ, seed=7).batch(0, 4)
  c = pipeline.make_order(data_cfg, seq_len=SEQ, seed=8).batch(0, 4)
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert not np.array_equal(a["tokens"], c["tokens"])
  cfg = lambda name, seed=-1: ConfigDict(dict(name=name, train=dict(seed=0), data=dict(seed=seed)))
  assert pipeline.data_seed(cfg("phase1")) != pipeline.data_seed(cfg("phase2"))  # each phase its own
  assert pipeline.data_seed(cfg("phase1", 3)) == pipeline.data_seed(cfg("phase2", 3)) == 3


def test_text_is_tokenized_once_into_the_cache(texts_cfg, capsys):
  cfg, _ = texts_cfg
  pipeline.make_order(cfg, seq_len=SEQ, seed=0)
  assert "tokenizing data.sources.math" in capsys.readouterr().out
  pipeline.make_order(cfg, seq_len=SEQ + 1, seed=1)  # another shape and seed: the same store
  assert "tokenizing" not in capsys.readouterr().out


def test_custom_text_field(data_cfg, demo_tok, tmp_path):
  texts = [f"document number {i} in the body field" for i in range(9)]
  path = _write(tmp_path / "body.jsonl", texts, field="body")
  data_cfg.mixture, data_cfg.sources, data_cfg.text_field = {"math": 1}, {"math": path}, "body"
  order = pipeline.make_order(data_cfg, seq_len=SEQ, seed=0, split="train")
  R = order.sources[0].rows_per_epoch()
  got = np.sort(_real_tokens(_rows(order, R)))
  np.testing.assert_array_equal(got, np.sort(_stream(demo_tok, texts)))


def test_all_bad_domain_stops_naming_its_files(data_cfg, tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text("not json\n{\"no_text\": 1}\n")
  data_cfg.mixture, data_cfg.sources, data_cfg.on_bad_record = {"math": 1}, {"math": str(path)}, "skip"
  with pytest.raises(ValueError, match=r"data.sources.math=.*: no tokens .*bad.jsonl"):
    pipeline.make_order(data_cfg, seq_len=SEQ, seed=0)


def test_store_of_another_tokenizer_is_refused(data_cfg, texts_cfg, tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers

  from granite_jax.data.store import build_store
  from granite_jax.data.tok_spec import load_tokenizer_spec
  cfg, _ = texts_cfg
  other = Tokenizer(models.WordLevel({"<|pad|>": 0, "<|end_of_text|>": 1, "[UNK]": 2}, unk_token="[UNK]"))
  other.pre_tokenizer = pre_tokenizers.Whitespace()
  other.save(str(tmp_path / "other.json"))
  spec = load_tokenizer_spec(str(tmp_path / "other.json"))
  build_store([cfg.sources["math"]], str(tmp_path / "store"), spec)
  cfg.sources = {"math": str(tmp_path / "store")}
  with pytest.raises(ValueError, match=f"{spec.fingerprint}.*|.*{spec.fingerprint}"):
    pipeline.make_order(cfg, seq_len=SEQ, seed=0)


@pytest.mark.parametrize("change, message", [
    (dict(mixture={"math": -1, "code": 1}), "data.mixture.math=-1 must be >= 0"),
    (dict(mixture={"math": 0, "code": 0}), "data.mixture: all weights are zero"),
    (dict(mixture={}), "data.mixture is empty"),
    (dict(mixture={"math": "a lot"}), "data.mixture.math='a lot' must be a finite number"),
    (dict(mixture={"recipes": 1}), "data.sources.recipes is not set"),
    (dict(mixture={"math": 1}, sources={"math": "/nonexistent/x.jsonl"}),
     "data.sources.math='/nonexistent/x.jsonl': no such file"),
    (dict(on_bad_record="ignore"), "data.on_bad_record='ignore'"),
])
def test_config_validation_errors_name_the_field(data_cfg, change, message):
  for k, v in change.items():
    data_cfg[k] = v
  with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(").replace("*", r"\*")):
    pipeline.make_order(data_cfg, seq_len=SEQ, seed=0)


def test_eval_of_custom_source_needs_eval_source(data_cfg, tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"text": "x"}\n')
  data_cfg.mixture, data_cfg.sources = {"math": 1}, {"math": str(path)}
  with pytest.raises(ValueError, match="data.eval_sources.math is not set"):
    pipeline.resolve_sources(data_cfg, split="eval")
  data_cfg.eval_sources = {"math": str(path)}
  assert pipeline.resolve_sources(data_cfg, split="eval") == {"math": str(path)}


def test_zero_weight_domains_dropped_and_demo_paths_resolved(data_cfg):
  data_cfg.mixture = {"math": 2, "books": 0, "code": 2}
  assert pipeline.mixture_weights(data_cfg) == {"code": 0.5, "math": 0.5}
  paths = pipeline.resolve_sources(data_cfg)
  assert list(paths) == ["code", "math"] and paths["math"].endswith("math.train.arrayrecord")


def test_get_tokenizer_explicit_path(data_cfg, demo_tokenizer_path, tmp_path):
  data_cfg.tokenizer = demo_tokenizer_path
  assert get_tokenizer(data_cfg).get_vocab_size() == 4096
  data_cfg.tokenizer = str(tmp_path / "missing.json")
  with pytest.raises(FileNotFoundError, match="missing.json"):
    get_tokenizer(data_cfg)


class _SlowOrder:
  """Rows that take `delay` seconds to read (a stalled object store)."""

  def __init__(self, delay):
    self.delay = delay
    self.release = threading.Event()  # set: the stall ends (the read-ahead thread must not outlive the test)

  def batch(self, b, B, rows):
    self.release.wait(self.delay)
    return {"tokens": np.full((len(rows), 4), b, np.int32)}


def test_loader_reads_steps_in_order_and_stops_on_request_during_a_stall():
  ld = batches_lib.Loader(_SlowOrder(0.0), 4, np.arange(4), start=5, stop=8)
  assert [int(ld.get(s)["tokens"][0, 0]) for s in (5, 6, 7)] == [5, 6, 7]
  with pytest.raises(StopIteration):
    ld.get(8)
  ld.close()
  stop = threading.Event()
  stalled = _SlowOrder(600.0)
  ld = batches_lib.Loader(stalled, 4, np.arange(4), start=0, stop_requested=stop.is_set)
  threading.Timer(0.5, stop.set).start()
  t0 = time.perf_counter()
  try:
    with pytest.raises(batches_lib.StopRequested):
      ld.get(0)
    assert time.perf_counter() - t0 < 3.0
  finally:
    stalled.release.set()  # else the interpreter's exit waits for the stalled read (600 s)
    ld.close()


def test_local_rows_and_to_global_cover_the_mesh():
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sh = NamedSharding(mesh, P("data", None))
  rows = batches_lib.local_rows(sh, 8, 5)
  np.testing.assert_array_equal(rows, np.arange(8))  # one process holds every row
  full = np.arange(40, dtype=np.int32).reshape(8, 5)
  perm = np.array([3, 0, 7, 1, 6, 2, 5, 4])  # rows handed over in any order
  out = batches_lib.to_global({"x": full[perm]}, perm, sh, 8)["x"]
  np.testing.assert_array_equal(np.asarray(out), full)

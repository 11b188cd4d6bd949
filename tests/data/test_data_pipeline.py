import collections
import json

import grain
import numpy as np
import pytest

from granite_jax.data import pipeline
from granite_jax.data.tokenizer import EOS, PAD, get_tokenizer

SEQ, BATCH = 128, 16  # BATCH == number of packing bins: one batch is one packing round


def _batches(it, n):
  return [next(it) for _ in range(n)]


def _segments(batch):
  """All packed documents of a batch, as tuples of token ids."""
  out = []
  for tokens_T, seg_T in zip(batch["tokens"], batch["segment_ids"]):
    for s in range(1, seg_T.max() + 1):
      out.append(tuple(tokens_T[seg_T == s].tolist()))
  return out


def test_batch_shapes_and_dtypes(data_cfg):
  b = next(pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=4, seed=0))
  assert set(b) == {"tokens", "segment_ids", "positions"}
  for v in b.values():
    assert v.shape == (4, SEQ) and v.dtype == np.int32


def test_mixture_token_shares_match_weights(data_cfg, demo_tok):
  weights = pipeline.mixture_weights(data_cfg)
  assert sum(weights.values()) == pytest.approx(1.0)
  assert weights["math"] == pytest.approx(0.35)
  it = iter(pipeline.document_dataset(data_cfg, demo_tok, seq_len=SEQ, seed=0))
  tokens = collections.Counter()
  for _ in range(5_000):
    ex = next(it)
    tokens[int(ex["domain"])] += len(ex["tokens"])
  total = sum(tokens.values())
  for i, (domain, w) in enumerate(weights.items()):
    assert abs(tokens[i] / total - w) < 0.005, (domain, tokens[i] / total, w)


def test_packing_is_consistent_and_lossless(data_cfg, demo_tok):
  it = pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=BATCH, seed=3)
  batch = next(it)
  tokens, seg, pos = batch["tokens"], batch["segment_ids"], batch["positions"]
  pad = seg == 0
  assert (pos[pad] == 0).all() and (tokens[pad] == demo_tok.token_to_id(PAD)).all()
  for seg_T, pos_T in zip(seg, pos):
    n = seg_T.max()
    assert n >= 1
    used = seg_T[seg_T > 0]
    assert (np.diff(used) >= 0).all() and set(used.tolist()) == set(range(1, n + 1))
    for s in range(1, n + 1):
      np.testing.assert_array_equal(pos_T[seg_T == s], np.arange((seg_T == s).sum()))
    assert (seg_T[used.size:] == 0).all()  # padding only at the end of a row
  # The first packing round holds exactly the first documents of the stream.
  segments = _segments(batch)
  docs = iter(pipeline.document_dataset(data_cfg, demo_tok, seq_len=SEQ, seed=3))
  expected = [tuple(next(docs)["tokens"].tolist()) for _ in range(len(segments))]
  assert collections.Counter(segments) == collections.Counter(expected)
  eos = demo_tok.token_to_id(EOS)
  assert all(s[-1] == eos or len(s) == SEQ for s in segments)
  assert any(len(s) == SEQ for s in expected)  # some documents were split


def test_a_runs_training_iterator_resets_the_skip_count(data_cfg):
  from granite_jax.data import sources
  sources.count_skipped("earlier_run.jsonl")
  pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=4, seed=0, split="eval")
  assert sources.skipped_records() == 1  # eval iterators of the same run keep the count
  pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=4, seed=0)
  assert sources.skipped_records() == 0  # a new run starts from zero


def test_same_seed_same_batches_other_seed_differs(data_cfg):
  a = _batches(pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=4, seed=7), 3)
  b = _batches(pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=4, seed=7), 3)
  c = next(pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=4, seed=8))
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.array_equal(a[0]["tokens"], c["tokens"])


def test_processes_read_disjoint_documents(data_cfg, demo_tok):
  """Two processes split the documents between them: together they read exactly what one reads."""
  import collections
  data_cfg.mixture = {"math": 1}
  def pieces(pi, pc):
    it = iter(pipeline.document_dataset(data_cfg, demo_tok, seq_len=SEQ, seed=0, split="eval",
                                        process_index=pi, process_count=pc, num_epochs=1))
    return collections.Counter(tuple(ex["tokens"].tolist()) for ex in it)
  d0, d1, one = pieces(0, 2), pieces(1, 2), pieces(0, 1)
  assert d0 + d1 == one
  assert min(sum(d0.values()), sum(d1.values())) >= 0.4 * sum(one.values())  # an even split


def test_checkpoint_resume_gives_identical_batches(data_cfg):
  kw = dict(seq_len=SEQ, batch_size=4, seed=11)
  it = pipeline.make_iterator(data_cfg, **kw)
  _batches(it, 5)
  state = it.get_state()
  state = json.loads(json.dumps(state))  # must survive serialization (grain stores it as JSON)
  expected = _batches(it, 4)
  resumed = pipeline.make_iterator(data_cfg, **kw)
  resumed.set_state(state)
  for x, y in zip(expected, _batches(resumed, 4)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_grain_checkpoint_handler_round_trip(data_cfg, tmp_path):
  kw = dict(seq_len=SEQ, batch_size=2, seed=5)
  it = pipeline.make_iterator(data_cfg, **kw)
  _batches(it, 2)
  (tmp_path / "ckpt").mkdir()  # orbax creates it in real runs
  grain.checkpoint.CheckpointHandler().save(tmp_path / "ckpt", item=it)
  expected = next(it)
  resumed = pipeline.make_iterator(data_cfg, **kw)
  grain.checkpoint.CheckpointHandler().restore(tmp_path / "ckpt", item=resumed)
  np.testing.assert_array_equal(expected["tokens"], next(resumed)["tokens"])


def test_eval_split_is_deterministic_and_held_out(data_cfg):
  kw = dict(seq_len=SEQ, batch_size=4, seed=0, split="eval")
  a, b = next(pipeline.make_iterator(data_cfg, **kw)), next(pipeline.make_iterator(data_cfg, **dict(kw, seed=1)))
  np.testing.assert_array_equal(a["tokens"], b["tokens"])  # no shuffling in eval
  train = next(pipeline.make_iterator(data_cfg, **dict(kw, split="train")))
  assert not np.array_equal(a["tokens"], train["tokens"])


def test_custom_jsonl_source_single_epoch(data_cfg, demo_tok, tmp_path):
  texts = [f"custom document number {i}" for i in range(30)]
  path = tmp_path / "mine.jsonl"
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  data_cfg.mixture = {"math": 1}
  data_cfg.sources = {"math": str(path)}
  it = pipeline.make_iterator(data_cfg, seq_len=64, batch_size=1, seed=0, num_epochs=1)
  segments = [s for b in it for s in _segments(b)]
  eos = demo_tok.token_to_id(EOS)
  got = sorted(demo_tok.decode(list(s[:-1])) for s in segments)
  assert all(s[-1] == eos for s in segments)
  assert len(segments) <= 30 and set(got) <= set(texts) and len(got) >= 25  # last partial batch may drop


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
    pipeline.make_iterator(data_cfg, seq_len=SEQ, batch_size=2, seed=0)


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


def test_plain_dict_config_works(demo_cache):
  cfg = {"mixture": {"long_cot": 1, "books": 1}, "sources": {}, "tokenizer": "", "cache_dir": demo_cache}
  b = next(pipeline.make_iterator(cfg, seq_len=256, batch_size=2, seed=0))
  assert b["tokens"].shape == (2, 256)

"""No token lost, and mixture weights are token shares.

Long documents are split into seq_len pieces (each its own segment); one epoch over a source
yields each of its tokens exactly once, checked against the tokenizer's own output of every
document; domains whose documents differ 50x in length get their weight in *tokens*.
"""
import collections
import json

import numpy as np
import pytest

from granite_jax.data import pipeline
from granite_jax.data.tokenizer import EOS

WORDS = ("the model reads long documents and every token of them counts once while the packer "
         "fills rows with pieces of text from books code papers and the web").split()


def _texts(rng, n_docs, n_words):
  return [" ".join(rng.choice(WORDS, size=max(1, int(rng.integers(n_words // 2, 3 * n_words // 2)))))
          for _ in range(n_docs)]


def _write(path, texts):
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  return str(path)


def _segments(batch):
  out = []
  for tokens_T, seg_T in zip(batch["tokens"], batch["segment_ids"]):
    out += [tuple(tokens_T[seg_T == s].tolist()) for s in range(1, seg_T.max() + 1)]
  return out


def _expected_pieces(tok, texts, T):
  """The reference: the tokenizer's ids of each document + EOS, cut every T tokens."""
  eos = tok.token_to_id(EOS)
  out = []
  for t in texts:
    ids = [*tok.encode(t, add_special_tokens=False).ids, eos]
    out += [tuple(ids[i:i + T]) for i in range(0, len(ids), T)]
  return out


@pytest.mark.parametrize("split, process_count", [("train", 1), ("eval", 1), ("train", 2)])
def test_one_epoch_yields_every_token_exactly_once(data_cfg, demo_tok, tmp_path, split, process_count):
  T = 64
  rng = np.random.default_rng(0)
  texts = _texts(rng, 12, 8) + _texts(rng, 6, 150) + _texts(rng, 2, 600)  # up to ~20 rows long
  path = _write(tmp_path / "mine.jsonl", texts)
  data_cfg.mixture, data_cfg.sources, data_cfg.eval_sources = {"math": 1}, {"math": path}, {"math": path}
  got = []
  for pi in range(process_count):
    it = pipeline.make_iterator(data_cfg, seq_len=T, batch_size=1, seed=0, split=split, num_epochs=1,
                                process_index=pi, process_count=process_count)
    got += [s for b in it for s in _segments(b)]
  want = _expected_pieces(demo_tok, texts, T)
  assert max(len(demo_tok.encode(t).ids) for t in texts) > 10 * T  # some documents span many rows
  assert sum(map(len, got)) == sum(map(len, want))
  assert collections.Counter(got) == collections.Counter(want)


def test_token_shares_follow_weights_for_50x_longer_documents(data_cfg, demo_tok, tmp_path):
  T, B = 128, 16  # B == packing bins: each batch is one packing round, i.e. the next run of pieces
  rng = np.random.default_rng(1)
  lengths = {"short": 12, "mid": 120, "long": 600}  # words per document: 50x from short to long
  weights = {"short": 0.5, "mid": 0.2, "long": 0.3}
  texts = {d: _texts(rng, 400 if d == "short" else 60, n) for d, n in lengths.items()}
  data_cfg.mixture = weights
  data_cfg.sources = {d: _write(tmp_path / f"{d}.jsonl", t) for d, t in texts.items()}
  doc_tokens = {d: np.mean([len(demo_tok.encode(t).ids) for t in ts]) for d, ts in texts.items()}
  assert doc_tokens["long"] > 40 * doc_tokens["short"]
  # Which domain each piece comes from: the unpacked stream of the same seed, in the same order.
  docs = iter(pipeline.document_dataset(data_cfg, demo_tok, seq_len=T, seed=5))
  names = list(pipeline.mixture_weights(data_cfg))
  origin = {}
  it = pipeline.make_iterator(data_cfg, seq_len=T, batch_size=B, seed=5)
  tokens = collections.Counter()
  for _ in range(30):
    for seg in _segments(next(it)):
      while seg not in origin:
        ex = next(docs)
        origin[tuple(ex["tokens"].tolist())] = names[int(ex["domain"])]
      tokens[origin[seg]] += len(seg)
  total = sum(tokens.values())
  shares = {d: tokens[d] / total for d in weights}
  assert total > 50_000
  for d, w in weights.items():
    assert abs(shares[d] - w) < 0.01, shares  # within 1 point, in the packed training rows
  # Document shares would have given the long domain ~85% of the tokens.
  doc_share_long = 0.3 * doc_tokens["long"] / sum(weights[d] * doc_tokens[d] for d in weights)
  assert doc_share_long > 0.8


def test_resume_inside_a_split_document(data_cfg, tmp_path):
  rng = np.random.default_rng(2)
  path = _write(tmp_path / "long.jsonl", _texts(rng, 8, 300))  # each document ~5 rows of 64
  data_cfg.mixture, data_cfg.sources = {"books": 1}, {"books": path}
  kw = dict(seq_len=64, batch_size=1, seed=3)
  it = pipeline.make_iterator(data_cfg, **kw)
  for _ in range(7):  # stops between two pieces of one document
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  want = [next(it)["tokens"] for _ in range(12)]
  resumed = pipeline.make_iterator(data_cfg, **kw)
  resumed.set_state(state)
  for w in want:
    np.testing.assert_array_equal(next(resumed)["tokens"], w)


def test_checkpoint_restores_into_a_changed_mixture(data_cfg, demo_tok):
  data_cfg.mixture = {"math": 1, "code": 1}
  it = iter(pipeline.document_dataset(data_cfg, demo_tok, seq_len=64, seed=0))
  for _ in range(40):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  names = list(pipeline.mixture_weights(data_cfg))
  rest = [next(it) for _ in range(200)]
  want = {d: [tuple(ex["tokens"].tolist()) for ex in rest if names[int(ex["domain"])] == d][:10]
          for d in ("math", "code")}
  data_cfg.mixture = {"math": 1, "code": 1, "cc": 2}  # a domain added: the others resume where they were
  it2 = iter(pipeline.document_dataset(data_cfg, demo_tok, seq_len=64, seed=0))
  it2.set_state(state)
  names2 = list(pipeline.mixture_weights(data_cfg))
  got = collections.defaultdict(list)
  for _ in range(400):
    ex = next(it2)
    got[names2[int(ex["domain"])]].append(tuple(ex["tokens"].tolist()))
  for d in ("math", "code"):
    assert got[d][:10] == want[d]
  assert got["cc"]  # the new domain is mixed in

"""Long-range copy eval: document layout, and the ratio against a NumPy forward pass of a fixed tiny model."""
import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.data import demo_corpus
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.data.sources import text_dataset
from granite_jax.eval import copy_ratio
from granite_jax.eval.__main__ import copy_distances
from granite_jax.model import preset
from granite_jax.train.state import init_params
from tests.reference import granite_forward


@pytest.fixture(scope="module")
def tok_texts(demo_cache_dir):
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))
  paths = demo_corpus.ensure_demo_corpus(demo_cache_dir, "eval")
  return tok, [t for t in text_dataset(paths["books"]) if t]


def test_docs_repeat_the_span_at_the_distance(tok_texts):
  tok, texts = tok_texts
  docs = copy_ratio.make_docs(tok, texts, 120, n_docs=5, seed=3)
  B, T = docs.tokens_BT.shape
  assert B == 5 and T == 16 + 120 + docs.span_len_B.max() + 1
  for b in range(B):
    f, r, n = docs.first_B[b], docs.repeat_B[b], docs.span_len_B[b]
    assert r - f == 120 and n >= 20
    np.testing.assert_array_equal(docs.tokens_BT[b, f:f + n], docs.tokens_BT[b, r:r + n])
    words = tok.decode(docs.tokens_BT[b, f:f + n].tolist()).split()
    assert 20 <= len(words) <= 50, words
    assert n <= 60  # at most distance / 2
  with pytest.raises(ValueError, match="distance=10"):
    copy_ratio.make_docs(tok, texts, 10)


def test_ratio_from_losses_exact():
  loss = np.ones((2, 40), np.float32)
  docs = copy_ratio.CopyDocs(np.zeros((2, 41), np.int32), np.array([2, 5]), np.array([20, 25]), np.array([4, 3]))
  loss[0, 20:23] = 0.5  # repeat tokens 1..3 of row 0, predicted at 20, 21, 22
  loss[1, 25:27] = 0.2
  loss[0, 23] = 9.0     # past the span: ignored
  loss[0, 2:5] = 2.0    # first occurrence of row 0
  got = copy_ratio.ratio_from_losses(loss, docs)
  first = (3 * 2.0 + 2 * 1.0) / 5
  repeat = (3 * 0.5 + 2 * 0.2) / 5
  assert got["first_loss"] == pytest.approx(first) and got["repeat_loss"] == pytest.approx(repeat)
  assert got["ratio"] == pytest.approx(repeat / first)


def test_copy_ratio_matches_numpy(tok_texts):
  tok, texts = tok_texts
  cfg = preset("tiny", vocab_size=tok.get_vocab_size(), d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
               head_dim=8, d_ff=32)
  # Scaled up so the logits are far from uniform: a wrong position or token shows in the losses.
  params = jax.tree.map(lambda x: x * 8.0, init_params(cfg, jax.random.PRNGKey(0)))
  docs = copy_ratio.make_docs(tok, texts, 120, n_docs=3, seed=1)
  got = copy_ratio.copy_ratio(params, cfg, docs, batch=2)
  # Reference: a mask over the predicted positions, NumPy forward and log-softmax in float64.
  host = jax.device_get(params)
  num = {"first": 0.0, "repeat": 0.0}
  cnt = {"first": 0, "repeat": 0}
  for b, row in enumerate(docs.tokens_BT):
    lg = granite_forward(host, cfg, row).astype(np.float64)
    nll = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1) - lg[np.arange(len(row)), np.r_[row[1:], 0]]
    for name, start in (("first", docs.first_B[b]), ("repeat", docs.repeat_B[b])):
      target = np.zeros(len(row), bool)  # tokens start+1 .. start+n-1 of the row
      target[start + 1:start + docs.span_len_B[b]] = True
      predicted_at = np.flatnonzero(target) - 1
      num[name] += nll[predicted_at].sum()
      cnt[name] += len(predicted_at)
  first, repeat = num["first"] / cnt["first"], num["repeat"] / cnt["repeat"]
  np.testing.assert_allclose([got["first_loss"], got["repeat_loss"], got["ratio"]],
                             [first, repeat, repeat / first], rtol=2e-4)


def test_default_distances():
  assert copy_distances("", 256, 1024) == [128, 512]
  assert copy_distances("", 256, 256) == [128]
  assert copy_distances("100,300", 256, 1024) == [100, 300]
  assert copy_distances("none", 256, 1024) == []
  with pytest.raises(SystemExit, match="--copy-distances"):
    copy_distances("a,b", 256, 1024)

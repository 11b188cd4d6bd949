"""NIAH task generation and scoring; loss by position bucket against NumPy."""
import random

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.data import demo_corpus
from granite_jax.data.sources import text_dataset
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.eval import niah, perplexity
from granite_jax.model import preset
from granite_jax.model.params import init_params
from tests.reference import granite_forward


@pytest.fixture(scope="module")
def tok_texts(demo_cache_dir):
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))
  paths = demo_corpus.ensure_demo_corpus(demo_cache_dir, "eval")
  return tok, [t for t in text_dataset(paths["books"]) if t]


@pytest.mark.parametrize("kind", niah.KINDS)
def test_tasks_fit_length_and_hold_their_needles(tok_texts, kind):
  tok, texts = tok_texts
  for depth in (0.0, 0.5, 1.0):
    t = niah.make_task(kind, tok, texts, 1024, depth, random.Random(1))
    n = len(tok.encode(t.prompt).ids)
    assert 700 < n <= 1024, n
    for a in t.answers:
      assert a in t.prompt
    if kind != "vt":
      body = t.prompt.split("\nQuestion:")[0]
      where = body.index("special magic number") / len(body)
      assert abs(where - depth) < 0.2, (where, depth)


def test_copy_task_ends_with_the_needles_words(tok_texts):
  tok, texts = tok_texts
  t = niah.make_task("niah_copy", tok, texts, 512, 0.5, random.Random(2))
  (value,) = t.answers
  body, tail = t.prompt.split("\nQuestion:")
  needle_prefix = body[:body.index(f" {value}.")]
  words = needle_prefix.split()[-9:]  # "One of the special magic numbers for KEY is:"
  assert words[:7] == "One of the special magic numbers for".split() and words[-1] == "is:"
  assert tail.endswith(" ".join(words)) and value not in tail
  with pytest.raises(ValueError, match="niah_copy"):
    niah.make_task("nope", tok, texts, 512, 0.5, random.Random(2))


def test_suite_spreads_depths(tok_texts):
  tok, texts = tok_texts
  suite = niah.make_suite(tok, texts, 512, depths=5, per_depth=1, kinds=("niah_single",))
  assert [t.depth for t in suite] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_score_counts_found_values():
  assert niah.score("is 1234567 and 7654321", ["1234567", "7654321", "1111111"]) == pytest.approx(2 / 3)
  assert niah.score("nothing", ["1234567"]) == 0.0


def test_bucket_losses_match_numpy():
  cfg = preset("tiny", vocab_size=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32)
  params = init_params(cfg, jax.random.PRNGKey(0))
  tokens = np.random.default_rng(0).integers(0, 64, (2, 17)).astype(np.int32)
  got = perplexity.bucket_losses(params, cfg, tokens, n_buckets=2)
  losses = []
  for row in tokens:
    lg = granite_forward(jax.device_get(params), cfg, row)
    lz = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    losses.append(lz[:-1] - lg[np.arange(16), row[1:]])
  per_pos = np.mean(losses, axis=0)
  np.testing.assert_allclose(got, [per_pos[0:8].mean(), per_pos[8:16].mean()], rtol=1e-4)

"""Shared fixtures: the demo corpus + tokenizer are built once per test session."""
import ml_collections
import pytest

from granite_jax.data.demo_corpus import ensure_demo_corpus
from granite_jax.data.tokenizer import DEMO_VOCAB_SIZE, load_tokenizer, train_demo_tokenizer

PHASE2_MIXTURE = {"math": 35, "code": 30, "cc_hq": 12, "synthetic": 9, "technical": 10,
                  "multilingual": 3, "domain": 1}


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("granite_cache"))
  ensure_demo_corpus(cache, "train")
  ensure_demo_corpus(cache, "eval")
  return cache


@pytest.fixture(scope="session")
def demo_tokenizer_path(demo_cache):
  return train_demo_tokenizer(demo_cache, ensure_demo_corpus(demo_cache, "train"), DEMO_VOCAB_SIZE)


@pytest.fixture(scope="session")
def demo_tok(demo_tokenizer_path):
  return load_tokenizer(demo_tokenizer_path)


@pytest.fixture
def data_cfg(demo_cache, demo_tokenizer_path):
  """Phase-2-like mixture over the demo corpus (tokenizer "" = the demo tokenizer)."""
  return ml_collections.ConfigDict({
      "mixture": dict(PHASE2_MIXTURE), "sources": {}, "eval_sources": {}, "tokenizer": "",
      "cache_dir": demo_cache, "on_bad_record": "raise"})

"""Test session setup: 8 fake CPU devices so sharded tests run anywhere.

Tests that want one device build their mesh from `jax.devices()[:1]`.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_cache_dir(tmp_path_factory):
  """The demo corpus and tokenizer, generated once per test session."""
  from ml_collections import ConfigDict

  from granite_jax.data.tokenizer import get_tokenizer

  cache = str(tmp_path_factory.mktemp("demo_cache"))
  cfg = ConfigDict(dict(mixture={"cc": 1.0}, sources={}, tokenizer="", cache_dir=cache,
                        on_bad_record="raise"))
  get_tokenizer(cfg)  # builds the corpus and trains the tokenizer
  return cache

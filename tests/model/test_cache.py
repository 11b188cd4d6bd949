"""The KV-cache path of the decoder (per-layer cache arrays updated in place) against the full forward."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.model import Granite, preset
from granite_jax.model.cache import init_cache
from granite_jax.model.decoder import decode_params
from granite_jax.model.params import init_params

CFG = preset("tiny", vocab_size=96, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
             d_ff=48, embedding_multiplier=3.0, attention_multiplier=0.2, residual_multiplier=0.7,
             logits_scaling=0.5, rope_theta=500.0, init_std=0.1)
B, T = 2, 10
CHUNKS = [(0, 5), (5, 6), (6, 7), (7, 9), (9, 10)]  # prefill, 1-token steps, a 2-token step


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


def _tokens():
  return jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, CFG.vocab_size)


def _cached_logits(cfg, params, toks, slots=12):
  """Logits of every position, fed chunk by chunk through the cache (one jitted step per chunk)."""
  model = Granite(cfg)
  step = jax.jit(lambda p, t, pos, c, i: model.apply({"params": p}, t, positions=pos, cache=c,
                                                      cache_index=i))
  cache, out = init_cache(cfg, B, slots), []
  for a, b in CHUNKS:
    pos = jnp.broadcast_to(jnp.arange(a, b), (B, b - a))
    logits, cache = step(params, toks[:, a:b], pos, cache, a)
    out.append(logits)
  return jnp.concatenate(out, axis=1), cache


@pytest.mark.parametrize("split", [False, True], ids=["stacked", "decode_params"])
def test_cached_steps_equal_full_forward(params, split):
  toks = _tokens()
  full = Granite(CFG).apply({"params": params}, toks)
  got, cache = _cached_logits(CFG, decode_params(CFG, params) if split else params, toks)
  np.testing.assert_allclose(np.asarray(got), np.asarray(full), atol=2e-5, rtol=1e-5)
  assert len(cache["k"]) == len(cache["v"]) == CFG.n_layers
  seg = np.asarray(cache["segment_ids"])
  assert (seg[:, :T] == 1).all() and (seg[:, T:] == 0).all()  # unwritten slots stay empty
  assert not np.asarray(cache["k"][0])[:, :, T:].any()


def test_decode_params_bf16_matches_stacked(params):
  cfg = dataclasses.replace(CFG, dtype="bfloat16")
  dp = decode_params(cfg, params)
  assert len(dp["layers"]) == cfg.n_layers
  assert {x.dtype for x in jax.tree.leaves(dp)} == {jnp.dtype(jnp.bfloat16)}
  toks = _tokens()
  a, _ = _cached_logits(cfg, params, toks)
  b, _ = _cached_logits(cfg, dp, toks)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)  # same casts, earlier


def test_last_only(params):
  toks = _tokens()
  model = Granite(CFG)
  full = model.apply({"params": params}, toks)
  last = model.apply({"params": params}, toks, last_only=True)
  np.testing.assert_allclose(np.asarray(last), np.asarray(full[:, -1:]), atol=1e-6)
  cached, _ = model.apply({"params": params}, toks, cache=init_cache(CFG, B, T), cache_index=0,
                          last_only=True)
  assert cached.shape == (B, 1, CFG.vocab_size)
  np.testing.assert_allclose(np.asarray(cached), np.asarray(full[:, -1:]), atol=2e-5)


def test_cache_path_needs_initialized_params():
  with pytest.raises(ValueError, match="initialized parameters"):
    Granite(CFG).init(jax.random.PRNGKey(0), _tokens(), cache=init_cache(CFG, B, T), cache_index=0)

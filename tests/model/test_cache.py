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


@pytest.mark.parametrize("impl,block,T_", [("xla", 512, 12), ("jax", 512, 12), ("blockwise", 4, 12),
                                           ("blockwise", 8, 12), ("allgather", 4, 8)])
def test_prefill_runs_the_training_kernel_with_the_cache_paths_result(params, impl, block, T_):
  """A static cache_index of 0 attends over the prompt's own keys (model/attention.py); a traced 0
  takes the dense path over the whole cache. Left-padded rows: padding is segment 0, positions
  start at each row's first real token. Logits and the written cache must agree."""
  cfg = dataclasses.replace(CFG, attention_impl=impl, attention_block=block)
  toks = jax.random.randint(jax.random.PRNGKey(2), (3, T_), 0, CFG.vocab_size)
  pad = jnp.array([0, 3, T_ - 2])
  slot = jnp.arange(T_)
  seg = (slot[None] >= pad[:, None]).astype(jnp.int32)
  pos = jnp.maximum(slot[None] - pad[:, None], 0)
  model = Granite(cfg)
  run = lambda i: model.apply({"params": params}, toks * seg, segment_ids=seg, positions=pos,
                              cache=init_cache(cfg, 3, T_ + 5), cache_index=i)
  (new, new_cache), (old, old_cache) = run(0), jax.jit(run)(jnp.int32(0))
  real = np.asarray(seg, bool)  # padding rows' outputs are never read
  np.testing.assert_allclose(np.asarray(new)[real], np.asarray(old)[real], atol=3e-5, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new_cache), jax.tree.leaves(old_cache)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-5, rtol=1e-5)
  # And both match the plain forward of each row's real tokens alone.
  for r in range(3):
    n = T_ - int(pad[r])
    alone = model.apply({"params": params}, toks[r:r + 1, T_ - n:])
    np.testing.assert_allclose(np.asarray(new)[r, T_ - n:], np.asarray(alone)[0], atol=3e-5, rtol=1e-5)


def test_prefill_kernel_choice():
  from granite_jax.model.attention import prefill_impl
  c = lambda impl, block=512: dataclasses.replace(CFG, attention_impl=impl, attention_block=block)
  assert prefill_impl(c("cudnn"), 2048) == "cudnn" and prefill_impl(c("cudnn"), 2040) == "jax"
  assert prefill_impl(c("blockwise", 256), 2048) == "blockwise" and prefill_impl(c("blockwise", 256), 200) == "blockwise"
  assert prefill_impl(c("blockwise", 256), 1000) == "jax"
  assert prefill_impl(c("ring", 256), 2048) == prefill_impl(c("allgather", 256), 512) == "blockwise"
  assert prefill_impl(c("xla"), 2040) == "xla"

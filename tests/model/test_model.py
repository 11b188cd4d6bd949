"""Granite model: shapes, NumPy parity, causality, packing, scan/remat invariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.model import Granite, preset
from granite_jax.model.params import init_params
from tests.reference import granite_forward

CFG = preset("tiny", vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
             d_ff=48, embedding_multiplier=3.0, attention_multiplier=0.2,
             residual_multiplier=0.7, logits_scaling=2.5, rope_theta=500.0)


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def forward():
  model = Granite(CFG)
  return jax.jit(lambda p, t, s, q: model.apply({"params": p}, t, segment_ids=s, positions=q))


def _tokens(B, T, seed=0):
  return np.random.default_rng(seed).integers(0, CFG.vocab_size, (B, T)).astype(np.int32)


def _ones(B, T):
  return np.ones((B, T), np.int32), np.tile(np.arange(T, dtype=np.int32), (B, 1))


def test_shapes_and_param_count(params, forward):
  tokens = _tokens(2, 16)
  logits = forward(params, tokens, *_ones(2, 16))
  assert logits.shape == (2, 16, CFG.vocab_size) and logits.dtype == jnp.float32
  assert sum(x.size for x in jax.tree.leaves(params)) == CFG.num_params()
  assert params["layers"]["attn"]["q"].shape == (2, 32, 4, 8)  # leading layer axis from nn.scan


def test_matches_numpy_reference(params, forward):
  tokens = _tokens(1, 12)
  got = np.asarray(forward(params, tokens, *_ones(1, 12)))[0]
  want = granite_forward(jax.device_get(params), CFG, tokens[0])
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=1e-4)


def test_untied_head_matches_reference():
  cfg = preset("tiny", vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
               head_dim=8, d_ff=24, tie_embeddings=False, logits_scaling=3.0)
  p = init_params(cfg, jax.random.PRNGKey(1))
  assert "lm_head" in p
  tokens = _tokens(1, 6) % 50
  got = np.asarray(Granite(cfg).apply({"params": p}, tokens))[0]
  np.testing.assert_allclose(got, granite_forward(jax.device_get(p), cfg, tokens[0]), atol=1e-5, rtol=1e-4)


def test_nope_matches_reference():
  cfg = preset("tiny", **{**CFG.to_dict(), "position_embedding": "nope"})
  p = init_params(cfg, jax.random.PRNGKey(2))
  tokens = _tokens(1, 10)
  got = np.asarray(Granite(cfg).apply({"params": p}, tokens))[0]
  want = granite_forward(jax.device_get(p), cfg, tokens[0])
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=1e-4)


def test_causal_future_tokens_do_not_change_past(params, forward):
  tokens = _tokens(1, 16)
  base = np.asarray(forward(params, tokens, *_ones(1, 16)))
  changed = tokens.copy()
  changed[0, 9:] = (changed[0, 9:] + 5) % CFG.vocab_size
  out = np.asarray(forward(params, changed, *_ones(1, 16)))
  np.testing.assert_array_equal(out[0, :9], base[0, :9])  # bitwise: no leak at all
  assert np.abs(out[0, 9:] - base[0, 9:]).max() > 1e-3  # and the change is visible


def test_packed_equals_separate_sequences(params, forward):
  lens = [5, 7, 4]
  docs = [_tokens(1, n, seed=i)[0] for i, n in enumerate(lens)]
  tokens = np.concatenate(docs)[None]
  seg = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lens)])[None].astype(np.int32)
  pos = np.concatenate([np.arange(n) for n in lens])[None].astype(np.int32)
  packed = np.asarray(forward(params, tokens, seg, pos))[0]
  start = 0
  for d in docs:
    alone = np.asarray(forward(params, d[None], *_ones(1, len(d))))[0]
    np.testing.assert_allclose(packed[start:start + len(d)], alone, atol=1e-5, rtol=1e-5)
    start += len(d)


@pytest.mark.parametrize("policy", ["none", "dots_saveable"])
def test_remat_policy_does_not_change_values_or_grads(params, policy):
  tokens = _tokens(2, 8)
  def loss(cfg, p):
    return jnp.mean(Granite(cfg).apply({"params": p}, tokens) ** 2)
  base_l, base_g = jax.value_and_grad(lambda p: loss(CFG, p))(params)
  cfg = preset("tiny", **{**CFG.to_dict(), "remat_policy": policy})
  l, g = jax.value_and_grad(lambda p: loss(cfg, p))(params)
  np.testing.assert_allclose(l, base_l, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, base_g)


def test_unknown_preset_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    preset("huge")

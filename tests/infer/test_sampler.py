"""KV-cache sampler against the full (no-cache) forward pass and a NumPy top-k/top-p filter."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.infer.sampler import (argmax, filter_logits, generate, left_pad, make_sampler,
                                       pick_tokens)
from granite_jax.model import Granite, preset
from granite_jax.model.params import init_params
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train.state import param_shardings

CFG = preset("tiny", vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
             d_ff=48, embedding_multiplier=3.0, attention_multiplier=0.2, residual_multiplier=0.7,
             logits_scaling=0.5, rope_theta=500.0, init_std=0.1)
T_REF = 32  # every reference forward pads to this length: one compile
N_NEW = 6
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 7, 30], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def full_logprobs():
  """Rows of token lists -> log_softmax of the no-cache forward, [B, T_REF, V] (right-padded)."""
  model = Granite(CFG)
  fwd = jax.jit(lambda p, t, s: jax.nn.log_softmax(model.apply({"params": p}, t, segment_ids=s)))

  def run(params, rows):
    toks = np.zeros((len(rows), T_REF), np.int32)
    seg = np.zeros((len(rows), T_REF), np.int32)
    for b, r in enumerate(rows):
      toks[b, :len(r)], seg[b, :len(r)] = r, 1
    return np.asarray(fwd(params, toks, seg))
  return run


@pytest.fixture(scope="module")
def greedy(params):
  return generate(params, CFG, PROMPTS, N_NEW)


def _check_against_full(params, full_logprobs, prompts, out, atol=1e-4):
  """Each generated token's log-prob equals the full forward's; returns per-token ranks."""
  toks, lps, lens = (np.asarray(out[k]) for k in ("tokens", "logprobs", "lengths"))
  rows = [list(p) + list(toks[b, :lens[b]]) for b, p in enumerate(prompts)]
  ref = full_logprobs(params, rows)
  ranks = []
  for b, p in enumerate(prompts):
    for t in range(lens[b]):
      row_V = ref[b, len(p) + t - 1]
      np.testing.assert_allclose(lps[b, t], row_V[toks[b, t]], atol=atol)
      ranks.append(int(np.sum(row_V > row_V[toks[b, t]])))
  return ranks


def test_greedy_equals_argmax_of_full_forward(params, full_logprobs, greedy):
  toks, lens = np.asarray(greedy["tokens"]), np.asarray(greedy["lengths"])
  assert toks.shape == (3, N_NEW) and list(lens) == [N_NEW] * 3
  rows = [p + list(toks[b]) for b, p in enumerate(PROMPTS)]
  ref = full_logprobs(params, rows)
  for b, p in enumerate(PROMPTS):
    want = ref[b, len(p) - 1:len(p) + N_NEW - 1].argmax(-1)
    np.testing.assert_array_equal(toks[b], want, err_msg=f"prompt {b}")
  assert set(_check_against_full(params, full_logprobs, PROMPTS, greedy)) == {0}


def test_prompt_padding_does_not_change_output(params, greedy):
  # The same prompt alone (different left padding) decodes to the same tokens.
  alone = generate(params, CFG, [PROMPTS[0]], N_NEW)
  np.testing.assert_array_equal(np.asarray(alone["tokens"])[0], np.asarray(greedy["tokens"])[0])
  np.testing.assert_allclose(np.asarray(alone["logprobs"])[0], np.asarray(greedy["logprobs"])[0],
                             atol=1e-5)


def test_stop_token_ends_row(params, greedy):
  stop = int(np.asarray(greedy["tokens"])[1, 2])
  out = generate(params, CFG, PROMPTS, N_NEW, stop_ids=(stop,))
  toks, lps, lens = (np.asarray(out[k]) for k in ("tokens", "logprobs", "lengths"))
  g = np.asarray(greedy["tokens"])
  for b in range(3):
    hits = np.nonzero(g[b] == stop)[0]
    n = hits[0] + 1 if len(hits) else N_NEW
    assert lens[b] == n  # the stop token is kept and counted
    np.testing.assert_array_equal(toks[b, :n], g[b, :n])
    assert (toks[b, n:] == 0).all() and (lps[b, n:] == 0).all()


def test_top_k_1_is_greedy(params, greedy):
  out = generate(params, CFG, PROMPTS, N_NEW, temperature=1.0, top_k=1,
                 rng=jax.random.PRNGKey(3))
  np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(greedy["tokens"]))


def test_sampling_stays_in_top_k_and_reports_logprobs(params, full_logprobs):
  T = 0.7
  out = generate(params, CFG, PROMPTS, N_NEW, temperature=T, top_k=3, samples_per_prompt=4,
                 rng=jax.random.PRNGKey(1))
  assert np.asarray(out["tokens"]).shape == (12, N_NEW)
  prompts = [p for p in PROMPTS for _ in range(4)]  # prompt-major rows
  toks, lens = np.asarray(out["tokens"]), np.asarray(out["lengths"])
  rows = [list(p) + list(toks[b, :lens[b]]) for b, p in enumerate(prompts)]
  ref = full_logprobs(params, rows)
  distinct = set()
  for b, p in enumerate(prompts):
    for t in range(lens[b]):
      row_V = ref[b, len(p) + t - 1]
      assert np.sum(row_V > row_V[toks[b, t]]) < 3  # rank within the top 3
      want = row_V[toks[b, t]] / T - np.logaddexp.reduce(row_V / T)  # log_softmax(logits / T)
      np.testing.assert_allclose(out["logprobs"][b, t], want, atol=1e-4)
    distinct.add(tuple(toks[b]))
  assert len(distinct) > 3  # samples of one prompt differ


def test_plain_temperature_sampling_reports_logprobs(params, full_logprobs):
  # top_k = 0 and top_p = 1 skip the filter: the draw is from the whole softmax(logits / T).
  T = 1.3
  out = generate(params, CFG, PROMPTS, N_NEW, temperature=T, samples_per_prompt=4,
                 rng=jax.random.PRNGKey(2))
  prompts = [p for p in PROMPTS for _ in range(4)]
  toks, lens = np.asarray(out["tokens"]), np.asarray(out["lengths"])
  ref = full_logprobs(params, [list(p) + list(toks[b, :lens[b]]) for b, p in enumerate(prompts)])
  for b, p in enumerate(prompts):
    for t in range(lens[b]):
      row_V = ref[b, len(p) + t - 1]
      want = row_V[toks[b, t]] / T - np.logaddexp.reduce(row_V / T)
      np.testing.assert_allclose(out["logprobs"][b, t], want, atol=1e-4)
  assert len({tuple(r) for r in toks}) > 3


def test_split_layers_off_gives_same_samples(params, greedy):
  fn = make_sampler(CFG, max_new_tokens=N_NEW, split_layers=False)
  padded, lens = left_pad(PROMPTS)
  out = fn(params, padded, lens, jax.random.PRNGKey(0), jnp.float32(0), jnp.float32(1), jnp.int32(0))
  np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(greedy["tokens"]))
  np.testing.assert_allclose(np.asarray(out["logprobs"]), np.asarray(greedy["logprobs"]), atol=1e-5)


def _ref_pick(logits_BV, key, temperature, top_p, top_k):
  """pick_tokens without branches: every path computed, then selected (the former code)."""
  greedy = temperature <= 0
  scaled_BV = logits_BV / jnp.where(greedy, 1.0, temperature)
  logp_BV = jax.nn.log_softmax(scaled_BV, axis=-1)
  sampled_B = jax.random.categorical(key, filter_logits(scaled_BV, top_k, top_p), axis=-1)
  tok_B = jnp.where(greedy, jnp.argmax(logits_BV, axis=-1), sampled_B).astype(jnp.int32)
  return tok_B, jnp.take_along_axis(logp_BV, tok_B[:, None], axis=-1)[:, 0]


@pytest.mark.parametrize("temperature,top_p,top_k",
                         [(0.0, 1.0, 0), (0.0, 0.5, 3), (0.7, 1.0, 0), (1.0, 1.0, 5), (0.8, 0.9, 0),
                          (0.5, 0.3, 4)])
def test_pick_tokens_branches_match_unbranched(temperature, top_p, top_k):
  logits = jax.random.normal(jax.random.PRNGKey(0), (8, 50)) * 3
  args = (jnp.float32(temperature), jnp.float32(top_p), jnp.int32(top_k))
  for seed in range(3):
    key = jax.random.PRNGKey(seed)
    got, want = jax.jit(pick_tokens)(logits, key, *args), jax.jit(_ref_pick)(logits, key, *args)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), atol=1e-6)


def test_argmax_matches_jnp_argmax():
  x = np.random.default_rng(0).integers(-3, 3, (6, 40)).astype(np.float32)  # many ties
  x[1, :] = -np.inf
  x[2, 7] = x[2, 30] = np.nan
  x[3, 5] = np.inf
  x[4, :] = 1.0
  np.testing.assert_array_equal(np.asarray(jax.jit(argmax)(jnp.asarray(x))),
                                np.asarray(jnp.argmax(jnp.asarray(x), axis=-1)))


def _np_filter(logits, top_k, top_p):
  out = logits.copy()
  for b, row in enumerate(logits):
    order = np.argsort(-row, kind="stable")
    keep = np.zeros(len(row), bool)
    k = len(row) if top_k <= 0 else min(top_k, len(row))
    p = np.exp(row[order[:k]] - row[order[:k]].max())
    p /= p.sum()
    mass = 0.0
    for j in range(k):
      if j > 0 and mass >= top_p and top_p < 1:  # the top token always stays
        break
      keep[order[j]] = True
      mass += p[j]
    out[b, ~keep] = -np.inf
  return out


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.5), (4, 0.3), (0, 0.0), (50, 0.9)])
def test_filter_logits_matches_numpy(top_k, top_p):
  logits = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32) * 2
  got = np.asarray(filter_logits(jnp.asarray(logits), jnp.int32(top_k), jnp.float32(top_p)))
  np.testing.assert_array_equal(got, _np_filter(logits, top_k, top_p))


def test_left_pad_from_right_padded_array():
  arr = np.array([[4, 5, 0, 0], [1, 2, 3, 9]], np.int32)
  padded, lens = left_pad(arr, lengths=[2, 4], bucket=4)
  np.testing.assert_array_equal(padded, [[0, 0, 4, 5], [1, 2, 3, 9]])
  np.testing.assert_array_equal(lens, [2, 4])
  with pytest.raises(ValueError, match="prompt_tokens"):
    left_pad([[1], []])


def test_sharded_sampler_matches_single_device(params, greedy):
  mesh = make_mesh((2, 1, 2), devices=jax.devices()[:4])
  shardings = param_shardings(CFG, mesh)
  sharded = jax.device_put(params, shardings)
  fn = make_sampler(CFG, max_new_tokens=N_NEW, mesh=mesh, param_shardings=shardings)
  prompts = PROMPTS + [[3, 3]]  # batch divisible by the data axis
  padded, lens = left_pad(prompts)
  out = fn(sharded, padded, lens, jax.random.PRNGKey(0), jnp.float32(0), jnp.float32(1),
           jnp.int32(0))
  np.testing.assert_array_equal(np.asarray(out["tokens"])[:3], np.asarray(greedy["tokens"]))
  np.testing.assert_allclose(np.asarray(out["logprobs"])[:3], np.asarray(greedy["logprobs"]),
                             atol=1e-5)

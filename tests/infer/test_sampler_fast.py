"""The fast engine (infer/engine.py) against the single-program sampler and exact NumPy distributions.

Chunks of 6 steps and length buckets of 8 slots, so a 20-token decode runs several chunk
programs, grows the generated KV and compacts the batch at tiny sizes.
"""
import jax
import numpy as np
import pytest

from granite_jax.infer.draw import inverse_cdf
from granite_jax.infer.engine import Engine
from granite_jax.infer.sampler import generate, left_pad, make_sampler
from granite_jax.model import Granite, preset
from granite_jax.model.params import init_params
from granite_jax.sharding.mesh import make_mesh

# init_std 0.3: greedy continuations that change token to token (a wrong position or KV shows).
CFG = preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
             d_ff=48, embedding_multiplier=1.0, attention_multiplier=0.2, residual_multiplier=0.7,
             logits_scaling=0.5, rope_theta=500.0, init_std=0.3)
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 7, 30], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
N_NEW = 20


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


def _engine(N=N_NEW, **kw):
  return Engine(CFG, max_new_tokens=N, chunk=6, length_bucket=8, **kw)


def _run(eng, params, prompts, *, temperature=0.0, top_p=1.0, top_k=0, budgets=None, rng=0):
  padded, lens = left_pad(prompts)
  out = eng(params, padded, lens, jax.random.PRNGKey(rng), temperature, top_p, top_k, budgets)
  return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def _program(params, prompts, stop_ids=(), G=1):
  fn = make_sampler(CFG, max_new_tokens=N_NEW, stop_ids=stop_ids, samples_per_prompt=G)
  padded, lens = left_pad(prompts)
  out = fn(params, padded, lens, jax.random.PRNGKey(0), np.float32(0), np.float32(1), np.int32(0))
  return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def _assert_same(got, want, atol=1e-5):
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_array_equal(got["lengths"], want["lengths"])
  np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=atol)


def test_greedy_equals_the_single_program_sampler(params):
  want = _program(params, PROMPTS, G=2)
  assert len({tuple(r) for r in want["tokens"][:, 4:]}) == 3  # not a constant continuation
  _assert_same(_run(_engine(samples_per_prompt=2), params, PROMPTS), want)
  # Stop ids end rows at different steps: the batch is compacted to the rows still live.
  stops = (int(want["tokens"][0, 6]),)
  want = _program(params, PROMPTS, stop_ids=stops, G=2)
  assert len(set(want["lengths"])) == 3 and N_NEW in want["lengths"], want["lengths"]
  _assert_same(_run(_engine(samples_per_prompt=2, stop_ids=stops), params, PROMPTS), want)


def test_shared_prefill_equals_repeated_prompts(params):
  # G samples of one prefill vs the prompt repeated G times (G = 1): request b*G + g has the
  # same keys in both, so the draws match token for token.
  G = 4
  kw = dict(temperature=1.0, rng=7)
  shared = _run(_engine(samples_per_prompt=G), params, PROMPTS, **kw)
  repeated = _run(_engine(samples_per_prompt=1), params, [p for p in PROMPTS for _ in range(G)], **kw)
  assert len({tuple(r) for r in shared["tokens"]}) == 3 * G  # the G samples differ
  _assert_same(shared, repeated)


def test_row_budgets_and_stop_ids_are_honoured(params):
  G = 4
  full = _run(_engine(samples_per_prompt=G), params, PROMPTS, temperature=1.0)
  assert (full["lengths"] == N_NEW).all()
  budgets = np.random.default_rng(0).integers(0, N_NEW + 1, 3 * G)
  budgets[:2] = [0, N_NEW]
  stop = int(np.bincount(full["tokens"][:, :N_NEW // 2].ravel()).argmax())  # a common token
  out = _run(_engine(samples_per_prompt=G, stop_ids=(stop,)), params, PROMPTS, temperature=1.0,
             budgets=budgets)
  for q in range(3 * G):
    hits = np.flatnonzero(full["tokens"][q] == stop)
    n = min(budgets[q], hits[0] + 1 if len(hits) else N_NEW)  # the stop token is kept
    assert out["lengths"][q] == n, (q, budgets[q], out["lengths"][q], n)
    np.testing.assert_array_equal(out["tokens"][q, :n], full["tokens"][q, :n])
    np.testing.assert_allclose(out["logprobs"][q, :n], full["logprobs"][q, :n], atol=1e-5)
    assert (out["tokens"][q, n:] == 0).all() and (out["logprobs"][q, n:] == 0).all()
  assert 0 < (out["lengths"] < budgets).sum() < 3 * G  # some rows stopped on the id, some on budget


def _np_probs(logits_V, temperature, top_k, top_p):
  """float64 softmax(logits / T) restricted to the top-k tokens and the top-p nucleus."""
  z = logits_V.astype(np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-p, kind="stable")
  keep = np.zeros(len(p), bool)
  k = len(p) if top_k <= 0 else top_k
  mass = 0.0
  for j in order[:k]:
    if mass >= top_p and top_p < 1:
      break
    keep[j], mass = True, mass + p[j]
  p = np.where(keep, p, 0.0)
  return p / p.sum()


def _chi2_ok(counts, probs, n):
  """Pearson's chi-square of counts vs n * probs (bins with expectation < 5 pooled) below the
  p = 1e-4 critical value (Wilson-Hilferty); no draw outside the support."""
  assert counts[probs == 0].sum() == 0, "a token of probability 0 was drawn"
  e = n * probs
  big = e >= 5
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(e[big], e[~big].sum())
  obs, exp = obs[exp > 0], exp[exp > 0]
  stat, df = float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1
  z = 3.719  # the standard normal's 1 - 1e-4 quantile
  crit = df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3
  return stat < crit, (stat, crit, df)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.3, 0, 1.0), (0.8, 8, 0.9)])
def test_sampled_tokens_follow_the_exact_softmax(params, temperature, top_k, top_p):
  """First token vs the softmax of a plain (no-cache) forward, second token vs its exact
  marginal sum_a p(a) p(. | a), over n draws of one prompt (its G samples share one prefill)."""
  prompt, n, V = PROMPTS[1], 3000, CFG.vocab_size
  out = _run(Engine(CFG, max_new_tokens=2, samples_per_prompt=n), params, [prompt],
             temperature=temperature, top_k=top_k, top_p=top_p, rng=3)
  seqs = np.array([prompt + [a] for a in range(V)], np.int32)  # every first token a
  logits = np.asarray(Granite(CFG).apply({"params": params}, seqs), np.float64)
  p1 = _np_probs(logits[0, len(prompt) - 1], temperature, top_k, top_p)
  p2 = np.stack([_np_probs(logits[a, len(prompt)], temperature, top_k, top_p) for a in range(V)])
  for t, probs in ((0, p1), (1, p1 @ p2)):
    ok, info = _chi2_ok(np.bincount(out["tokens"][:, t], minlength=V), probs, n)
    assert ok, f"token {t}: chi-square {info}"


def test_inverse_cdf_hits_every_bucket_edge():
  # weights 0 and > 0 across block edges: u = 0 takes the first token with weight, u -> 1 the last.
  w = np.zeros((1, 300), np.float32)
  w[0, [0, 127, 128, 255, 299]] = [0.0, 1.0, 2.0, 0.5, 0.25]
  w = np.repeat(w, 4, 0)
  total = w[0].sum()
  u = np.array([0.0, 0.999999, 1.0 / total, 3.0 / total], np.float32)
  np.testing.assert_array_equal(np.asarray(inverse_cdf(w, u)), [127, 299, 128, 255])


def test_generate_and_make_sampler_pick_the_engine(params):
  fast = generate(params, CFG, PROMPTS, N_NEW, max_new_per_row=[3, 0, 5])
  program = generate(params, CFG, PROMPTS, N_NEW, engine="program")
  np.testing.assert_array_equal(np.asarray(fast["lengths"]), [3, 0, 5])
  np.testing.assert_array_equal(np.asarray(fast["tokens"])[0, :3], np.asarray(program["tokens"])[0, :3])
  assert isinstance(make_sampler(CFG, max_new_tokens=4, engine="fast"), Engine)
  one = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  assert isinstance(make_sampler(CFG, max_new_tokens=4, engine="fast", mesh=one), Engine)
  many = make_mesh((2, 1, 1), devices=jax.devices()[:2])  # several devices: the single program
  assert not isinstance(make_sampler(CFG, max_new_tokens=4, engine="fast", mesh=many), Engine)
  with pytest.raises(ValueError, match="engine"):
    make_sampler(CFG, max_new_tokens=4, engine="nope")

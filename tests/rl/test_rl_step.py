"""RL train step: the gradient does not depend on how the batch is split (1x8, 2x4, 8x1 micro-batches
x data shards) to 1e-6, because token-mean divides by the global token count; without old_logp
(ppo_epochs=1: no separate forward) the update equals the one with old_logp from jit_logprobs."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from granite_jax.model import Granite, preset
from granite_jax.rl.loss import policy_loss
from granite_jax.rl.step import ROW_FIELDS, jit_logprobs, jit_rl_train_step, response_logprobs, rl_batch_shardings
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib

CFG = preset("tiny", vocab_size=128, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
B, T = 8, 24
LOSS_KW = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.05, agg="token-mean", dual_clip=None)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, CFG.vocab_size, (B, T)).astype(np.int32)
  seg = np.zeros((B, T), np.int32)
  mask = np.zeros((B, T), np.float32)
  for b in range(B):  # very uneven response lengths, so per-micro-batch means would differ
    plen, rlen = int(rng.integers(3, 8)), int(rng.integers(1, T - 8))
    seg[b, :plen + rlen] = 1
    mask[b, plen - 1:plen + rlen - 1] = 1
  tokens *= seg
  positions = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
  params = state_lib.init_params(CFG, jax.random.PRNGKey(0))
  logp, _ = response_logprobs(params, dict(tokens=tokens, segment_ids=seg, positions=positions), Granite(CFG))
  logp = np.asarray(logp)
  # Off-policy old log-probs so that both clips bind somewhere.
  old = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32) * mask
  ref = (logp + rng.normal(0, 0.2, (B, T))).astype(np.float32) * mask
  adv = rng.normal(0, 1, B).astype(np.float32)
  sampler = (logp + rng.normal(0, 0.1, (B, T))).astype(np.float32) * mask
  return dict(tokens=tokens, segment_ids=seg, positions=positions, mask=mask, advantages_B=adv,
              advantages=(adv[:, None] * seg).astype(np.float32), old_logp=old, ref_logp=ref,
              sampler_logp=sampler)


def _update(mesh, accum, batch, loss_kw=LOSS_KW):
  batch = {k: v for k, v in batch.items() if k in ROW_FIELDS}
  tx = optax.sgd(1.0)
  sh = state_lib.state_shardings(CFG, mesh, tx)
  state = state_lib.make_init_fn(CFG, tx, sh)(jax.random.PRNGKey(0))
  before = jax.device_get(state.params)
  fn = jit_rl_train_step(CFG, mesh, tx, optax.constant_schedule(1.0), sh, loss_kw=loss_kw,
                         grad_accum=accum, fields=tuple(batch))
  new, m = fn(state, jax.device_put(batch, rl_batch_shardings(mesh, tuple(batch))))
  return jax.tree.map(lambda a, b: a - b, before, jax.device_get(new.params)), jax.device_get(m)


def test_loss_matches_policy_loss_on_the_full_batch(batch):
  params = state_lib.init_params(CFG, jax.random.PRNGKey(0))
  logp, ent = response_logprobs(params, batch, Granite(CFG))
  want, wm = policy_loss(logp, batch["old_logp"], batch["ref_logp"], batch["advantages_B"], batch["mask"],
                         entropy_BT=ent, sampler_logp_BT=batch["sampler_logp"], **LOSS_KW)
  _, m = _update(make_mesh((1, 1, 1), devices=jax.devices()[:1]), 1, batch)
  np.testing.assert_allclose(m["loss"], want, rtol=1e-6)
  for k in ("kl", "clip_frac_low", "clip_frac_high", "entropy", "logp_diff"):
    np.testing.assert_allclose(m[k], wm[k], rtol=1e-5, atol=1e-7)
  assert m["clip_frac_low"] > 0 and m["clip_frac_high"] > 0 and m["skipped"] == 0


def test_gradient_is_split_invariant(batch):
  ref, m_ref = _update(make_mesh((1, 1, 1), devices=jax.devices()[:1]), 8, batch)
  for shape, accum in (((2, 1, 1), 4), ((8, 1, 1), 1)):
    mesh = make_mesh(shape, devices=jax.devices()[: shape[0]])
    g, m = _update(mesh, accum, batch)
    np.testing.assert_allclose(m["loss"], m_ref["loss"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m["kl"], m_ref["kl"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g, ref)


def test_nonfinite_advantages_skip_the_update(batch):
  bad = dict(batch, advantages=np.full((B, T), np.nan, np.float32))
  g, m = _update(make_mesh((1, 1, 1), devices=jax.devices()[:1]), 1, bad)
  assert m["skipped"] == 1
  assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(g))


@pytest.mark.parametrize("agg", ["token-mean"])  # (the aggregation is not what this is about)
def test_no_old_logprob_forward_gives_the_same_update(batch, agg):
  """ppo_epochs=1: old_logp from a separate forward (jit_logprobs, as rollout.py did) vs none (the
  step's own log-probs, stop_gradient): the same loss, metrics and parameter update."""
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  params = state_lib.init_params(CFG, jax.random.PRNGKey(0))
  layout = {k: batch[k] for k in ("tokens", "segment_ids", "positions")}
  old = np.asarray(jax.device_get(jit_logprobs(CFG, mesh, state_lib.state_shardings(
      CFG, mesh, optax.sgd(1.0)).params)(params, layout)))
  kw = dict(LOSS_KW, agg=agg)
  with_old = dict(batch, old_logp=old)
  without = {k: v for k, v in batch.items() if k != "old_logp"}
  g_ref, m_ref = _update(mesh, 2, with_old, kw)
  g, m = _update(mesh, 2, without, kw)
  assert m["ratio"] == 1.0 and m["clip_frac_low"] == 0 and m["clip_frac_high"] == 0
  np.testing.assert_allclose(m_ref["ratio"], 1.0, atol=1e-6)
  for k in ("loss", "pg_loss", "kl", "entropy", "logp_diff", "grad_norm"):
    np.testing.assert_allclose(m[k], m_ref[k], rtol=1e-5, atol=1e-7, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-5), g, g_ref)
  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(g)) > 1e-4  # a real update

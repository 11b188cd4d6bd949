"""One-step-off-policy rollouts: the truncated-importance-sampling loss and its gradient against a
NumPy computation of the formula; off (no tis_cap) nothing changes; the prefetching runner hands
each step the batch sampled with the previous version's params, copied before the train step
donates them."""
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.rl.loss import policy_loss
from granite_jax.rl.off_policy import Rollouts
from granite_jax.rl.step import batch_fields, needs_old_logp

B, T = 5, 7
KW = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.05, dual_clip=None)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.1, 3.0, (B, T))
  old = logp + rng.normal(0, 0.3, (B, T))
  sampler = old + rng.normal(0, 0.8, (B, T))  # stale: many weights above the cap of 2
  ref = logp + rng.normal(0, 0.3, (B, T))
  adv = rng.normal(0, 1, B)
  mask = (np.arange(T)[None] < rng.integers(1, T + 1, B)[:, None]).astype(np.float64)
  mask[2] = 0  # a row without trained tokens
  return logp, old, ref, sampler, adv, mask


def _np_tis(logp, old, ref, sampler, adv, mask, cap, agg):
  """(loss, d loss / d logp) of  sum_t w_t pg_t + kl_coef kl_t  aggregated, in float64:
  w = min(exp(old - sampler), cap); pg = max(-A r, -A clip(r)), r = exp(logp - old); kl k3."""
  A = adv[:, None]
  w = np.minimum(np.exp(old - sampler), cap)
  r = np.exp(logp - old)
  unclipped, clipped = -A * r, -A * np.clip(r, 1 - KW["eps_low"], 1 + KW["eps_high"])
  pg = np.maximum(unclipped, clipped)
  d = ref - logp
  kl = np.exp(d) - d - 1
  loss_t = (w * pg + KW["kl_coef"] * kl) * mask
  # d/dlogp: the max takes the unclipped branch's slope -A r where it is the larger, else 0.
  dpg = np.where(unclipped >= clipped, -A * r, 0.0)
  grad_t = (w * dpg + KW["kl_coef"] * (1 - np.exp(d))) * mask
  if agg == "token-mean":
    return loss_t.sum() / mask.sum(), grad_t / mask.sum()
  n_seq = (mask.sum(1) > 0).sum()
  per = np.maximum(mask.sum(1, keepdims=True), 1)
  return (loss_t.sum(1) / per[:, 0]).sum() / n_seq, grad_t / per / n_seq


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_tis_loss_and_gradient_match_numpy(agg):
  logp, old, ref, sampler, adv, mask = _batch()
  cap = 2.0
  f = lambda lp: policy_loss(lp, old.astype(np.float32), ref.astype(np.float32), adv.astype(np.float32),
                             mask, agg=agg, sampler_logp_BT=sampler.astype(np.float32), tis_cap=cap, **KW)
  (loss, m), g = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp, jnp.float32))
  want, want_g = _np_tis(logp, old, ref, sampler, adv, mask, cap, agg)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(g, want_g, atol=1e-6, rtol=1e-4)
  keep = mask > 0
  w = np.minimum(np.exp(old - sampler), cap)
  np.testing.assert_allclose(m["tis_weight"], w[keep].mean(), rtol=1e-5)
  np.testing.assert_allclose(m["tis_clip_frac"], (np.exp(old - sampler) > cap)[keep].mean(), rtol=1e-5)
  np.testing.assert_allclose(m["logp_diff"], np.abs(old - sampler)[keep].mean(), rtol=1e-5)
  assert 0 < m["tis_clip_frac"] < 1  # the cap binds on some tokens, not all


def test_off_means_unchanged():
  """No tis_cap (off_policy_steps=0): sampler log-probs only feed the logp_diff metric; and with
  weights all 1 (sampler == old) the TIS loss is the plain one."""
  logp, old, ref, sampler, adv, mask = (jnp.asarray(x, jnp.float32) for x in _batch(1))
  plain = lambda lp, **kw: policy_loss(lp, old, ref, adv, mask, **KW, **kw)[0]
  cases = (dict(sampler_logp_BT=sampler), dict(sampler_logp_BT=old, tis_cap=2.0))
  for kw in cases:
    np.testing.assert_allclose(plain(logp, **kw), plain(logp), rtol=1e-7)
    np.testing.assert_allclose(jax.grad(lambda lp: plain(lp, **kw))(logp), jax.grad(plain)(logp), rtol=1e-7)
  on, off = ConfigDict(dict(ppo_epochs=1, kl_coef=0.0, off_policy_steps=0)), \
      ConfigDict(dict(ppo_epochs=1, kl_coef=0.0, off_policy_steps=1))
  assert not needs_old_logp(on) and needs_old_logp(off)
  assert "old_logp" not in batch_fields(on) and "old_logp" in batch_fields(off)
  assert "ref_logp" not in batch_fields(on)
  with pytest.raises(ValueError, match="sampler_logp"):
    policy_loss(logp, old, ref, adv, mask, tis_cap=2.0)


def test_runner_lags_one_version_and_survives_donation():
  """take(params_k, k) returns the batch sampled with params_{k-1} (k >= 1; k = 0 on-policy), and
  the background sampling reads its own copy while the caller donates the original."""
  seen, threads = [], set()

  def generate(params, step):
    time.sleep(0.05)  # still sampling when the caller's train step donates `params`
    threads.add(threading.get_ident())
    seen.append((step, float(params["w"][0])))
    return {"step": step}, {"version_seen": float(params["w"][0])}

  train = jax.jit(lambda p: {"w": p["w"] + 1.0}, donate_argnums=(0,))
  r = Rollouts(generate, off_policy_steps=1, last_step=4)
  params = {"w": jnp.zeros(3)}  # version k has w == k
  lags = []
  for k in range(4):
    batch, st = r.take(params, k)
    assert batch["step"] == k
    lags.append(st["policy_lag"])
    assert st["version_seen"] == max(k - 1, 0)
    params = train(params)  # donates version k's buffers while step k+1 samples with a copy
  r.close()
  assert lags == [0.0, 1.0, 1.0, 1.0]
  assert sorted(s for s, _ in seen) == [0, 1, 2, 3]  # no rollout past the last step
  assert len(threads) == 2  # step 0 here, the rest in the background thread
  on = Rollouts(generate, off_policy_steps=0)
  assert on.take({"w": jnp.full(3, 5.0)}, 7)[1] == {"version_seen": 5.0, "policy_lag": 0.0}
  with pytest.raises(ValueError):
    Rollouts(generate, off_policy_steps=2)


def test_validate_names_the_off_policy_fields():
  from configs import rl_math
  from granite_jax.rl.loop import validate_rl
  c = rl_math.get_config("tiny")
  assert c.rl.off_policy_steps == 0 and c.rl.pack  # the defaults: on-policy (the report), packed rows
  validate_rl(c, 1)
  for field, value in (("off_policy_steps", 2), ("pack_buckets", 0)):
    bad = rl_math.get_config("tiny")
    bad.rl[field] = value
    with pytest.raises(ValueError, match=f"rl.{field}"):
      validate_rl(bad, 1)
  bad = rl_math.get_config("tiny")
  bad.rl.off_policy_steps, bad.rl.tis_cap = 1, 0.5
  with pytest.raises(ValueError, match="rl.tis_cap"):
    validate_rl(bad, 1)


def test_runner_overlaps_generation_with_the_callers_step():
  """Generation (here 0.2 s of host work) runs while the caller trains (0.2 s): 5 steps take about
  6 x 0.2 s, not 10 x 0.2 s."""
  def generate(params, step):
    time.sleep(0.2)
    return {}, {}

  r = Rollouts(generate, off_policy_steps=1, last_step=5)
  t0 = time.perf_counter()
  for k in range(5):
    r.take({"w": jnp.zeros(1)}, k)
    time.sleep(0.2)  # the train step
  r.close()
  assert time.perf_counter() - t0 < 1.7

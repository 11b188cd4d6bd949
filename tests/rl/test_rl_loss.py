"""GRPO/DAPO loss and group advantages against NumPy (float64) references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.rl.grpo import group_advantages
from granite_jax.rl.loss import policy_loss, token_logprobs

B, T = 6, 9


def _np_advantages(r, eps=1e-6, scale=True, ddof=0):
  r = np.asarray(r, np.float64)
  c = r - r.mean(-1, keepdims=True)
  return c / (r.std(-1, ddof=ddof, keepdims=True) + eps) if scale else c


def _np_loss(logp, old, ref, adv, mask, eps_low=0.2, eps_high=0.28, kl_coef=0.0,
             agg="token-mean", dual_clip=None):
  logp, old, ref, adv, mask = (np.asarray(x, np.float64) for x in (logp, old, ref, adv, mask))
  loss_bt = np.zeros_like(logp)
  for b in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      a, ratio = adv[b], np.exp(np.clip(logp[b, t] - old[b, t], -20, 20))  # verl's clamp
      pg = max(-a * ratio, -a * min(max(ratio, 1 - eps_low), 1 + eps_high))
      if dual_clip is not None and a < 0:
        pg = min(pg, -a * dual_clip)
      d = np.clip(ref[b, t] - logp[b, t], -20, 20)
      loss_bt[b, t] = pg + kl_coef * (np.exp(d) - d - 1)
  loss_bt = np.where(mask > 0, loss_bt, 0.0)
  if agg == "token-mean":
    return loss_bt.sum() / mask.sum()
  per_seq = loss_bt.sum(1)
  if agg == "seq-mean-token-mean":
    per_seq = per_seq / np.maximum(mask.sum(1), 1)
  return per_seq.sum() / (mask.sum(1) > 0).sum()


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.1, 3.0, (B, T)).astype(np.float32)
  old = (logp + rng.normal(0, 0.4, (B, T))).astype(np.float32)  # ratios well outside the clip range
  ref = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32)
  adv = rng.normal(0, 1, B).astype(np.float32)
  lens = rng.integers(1, T + 1, B)
  lens[-1] = 0  # a padding row
  mask = (np.arange(T)[None] < lens[:, None]).astype(np.float32)
  return logp, old, ref, adv, mask


def test_group_advantages_match_numpy():
  r = np.random.default_rng(0).uniform(0, 1, (4, 8)).astype(np.float32)
  r[2] = 1.0  # a solved group: advantage 0, not nan
  np.testing.assert_allclose(group_advantages(r), _np_advantages(r), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(group_advantages(r[0]), _np_advantages(r[0]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(group_advantages(r, scale_by_std=False),
                             _np_advantages(r, scale=False), atol=1e-6)
  np.testing.assert_allclose(group_advantages(r, ddof=1, eps=0.1),
                             _np_advantages(r, ddof=1, eps=0.1), rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(group_advantages(r))[2] == 0)
  with pytest.raises(ValueError, match="rewards"):
    group_advantages(np.zeros((2, 3, 4)))


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("kl_coef,dual_clip", [(0.0, None), (0.1, None), (0.05, 3.0)])
def test_loss_matches_numpy(agg, kl_coef, dual_clip):
  logp, old, ref, adv, mask = _batch()
  got, _ = policy_loss(logp, old, ref, adv, mask, kl_coef=kl_coef, agg=agg, dual_clip=dual_clip)
  want = _np_loss(logp, old, ref, adv, mask, kl_coef=kl_coef, agg=agg, dual_clip=dual_clip)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_dual_clip_caps_negative_advantage():
  logp, old = np.log([[4.0]], dtype=np.float32), np.zeros((1, 1), np.float32)  # ratio 4
  adv, mask = np.array([-1.0], np.float32), np.ones((1, 1), np.float32)
  plain, _ = policy_loss(logp, old, None, adv, mask)
  capped, m = policy_loss(logp, old, None, adv, mask, dual_clip=3.0)
  assert float(plain) == pytest.approx(4.0) and float(capped) == pytest.approx(3.0)
  assert float(m["dual_clip_frac"]) == 1.0
  with pytest.raises(ValueError, match="dual_clip"):
    policy_loss(logp, old, None, adv, mask, dual_clip=0.5)
  with pytest.raises(ValueError, match="agg"):
    policy_loss(logp, old, None, adv, mask, agg="sum")


def test_metrics_match_numpy():
  logp, old, ref, adv, mask = _batch(1)
  ent = np.random.default_rng(2).uniform(0, 2, (B, T)).astype(np.float32)
  _, m = policy_loss(logp, old, ref, adv, mask, entropy_BT=ent)
  ratio = np.exp(logp.astype(np.float64) - old)
  a = adv[:, None] * np.ones((1, T))
  sel = mask > 0
  d = ref.astype(np.float64) - logp
  np.testing.assert_allclose(m["clip_frac_low"], np.mean(((ratio < 0.8) & (a < 0))[sel]), atol=1e-6)
  np.testing.assert_allclose(m["clip_frac_high"], np.mean(((ratio > 1.28) & (a > 0))[sel]), atol=1e-6)
  np.testing.assert_allclose(m["kl"], np.mean((np.exp(d) - d - 1)[sel]), rtol=1e-5)
  np.testing.assert_allclose(m["entropy"], np.mean(ent[sel]), rtol=1e-5)
  assert float(m["clip_frac_low"]) > 0 and float(m["clip_frac_high"]) > 0  # both exercised
  assert float(m["num_tokens"]) == mask.sum()


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_give_full_batch_gradient(agg):
  logp, old, ref, adv, mask = _batch(3)
  kw = dict(kl_coef=0.1, agg=agg)
  grad = jax.jit(jax.grad(lambda lp, o, r, a, m, n, s: policy_loss(
      lp, o, r, a, m, num_tokens=n, num_seqs=s, **kw)[0]))
  n, s = jnp.float32(mask.sum()), jnp.float32((mask.sum(1) > 0).sum())
  full = grad(logp, old, ref, adv, mask, n, s)
  halves = [grad(*(x[i:i + B // 2] for x in (logp, old, ref, adv, mask)), n, s)
            for i in (0, B // 2)]
  np.testing.assert_allclose(np.concatenate(halves), full, atol=1e-6)
  # and without the global counts the halves would be normalized differently
  local = jax.grad(lambda lp: policy_loss(lp, old[:B // 2], ref[:B // 2], adv[:B // 2],
                                          mask[:B // 2], **kw)[0])(logp[:B // 2])
  assert np.abs(np.asarray(local) - np.asarray(full)[:B // 2]).max() > 1e-4


def test_token_logprobs_and_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (2, 5, 11)).astype(np.float32)
  tgt = rng.integers(0, 11, (2, 5))
  lp, ent = token_logprobs(logits, tgt, temperature=0.7)
  z = logits.astype(np.float64) / 0.7
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  np.testing.assert_allclose(lp, np.take_along_axis(logp, tgt[..., None], -1)[..., 0], atol=1e-5)
  np.testing.assert_allclose(ent, -(np.exp(logp) * logp).sum(-1), atol=1e-5)


@pytest.mark.parametrize("value, g", [(7.3, 16), (2 / 3, 8), (1e6, 16), (-0.1, 5)])
@pytest.mark.parametrize("ddof, scale", [(0, True), (1, True), (0, False)])
def test_constant_group_advantage_is_exactly_zero(value, g, ddof, scale):
  r = np.full((3, g), value, np.float32)
  r[1] = np.float32(value) * np.linspace(0.5, 1.5, g, dtype=np.float32)  # one informative group
  adv = np.asarray(group_advantages(r, ddof=ddof, scale_by_std=scale))
  assert np.all(adv[0] == 0.0) and np.all(adv[2] == 0.0), adv[0]
  want = _np_advantages(r[1].astype(np.float64), ddof=ddof, scale=scale)
  np.testing.assert_allclose(adv[1], want, rtol=1e-4, atol=1e-4 * (1 if scale else abs(value)))


def test_advantage_of_large_rewards_matches_float64():
  r = np.array([[1e6, 1e6 + 1, 1e6 + 3, 1e6, 1e6 + 2, 1e6 + 1, 1e6, 1e6 + 4]], np.float32)
  np.testing.assert_allclose(group_advantages(r), _np_advantages(r), rtol=1e-5, atol=1e-5)


def _extreme_batch():
  """Ratios 1e+40 / 1e-40 (log-ratio +/-92.1) and reference gaps of the same size on trained tokens;
  masked tokens hold -inf / nan log-probs, as a padding position of a broken logit row could."""
  logp, old, ref, adv, mask = _batch(4)
  big = np.float32(np.log(1e40))  # 92.1: exp overflows float32 (max ~3.4e38)
  old[0, :3] = logp[0, :3] - big   # ratio 1e40
  old[1, :3] = logp[1, :3] + big   # ratio 1e-40
  ref[2, :3] = logp[2, :3] + big
  ref[3, :3] = logp[3, :3] - big
  mask[:4, :3] = 1.0
  mask[:, -2:] = 0.0
  logp[:, -1], old[:, -2], ref[:, -1] = -np.inf, np.nan, np.inf
  return logp, old, ref, adv, mask


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_extreme_ratios_and_masked_nonfinite_give_finite_loss_and_gradient(agg):
  logp, old, ref, adv, mask = _extreme_batch()
  kw = dict(kl_coef=0.1, agg=agg, dual_clip=3.0)
  fn = lambda lp, o, r: policy_loss(lp, o, r, adv, mask, **kw)
  (loss, m), grads = jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(logp, old, ref)
  sane = lambda x: np.where(mask > 0, x, 0.0)  # the reference never sees the masked values
  want = _np_loss(sane(logp), sane(old), sane(ref), adv, mask, kl_coef=0.1, agg=agg, dual_clip=3.0)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  for name, g in zip(("logp", "old_logp", "ref_logp"), grads):
    assert np.isfinite(np.asarray(g)).all(), name
    assert np.all(np.asarray(g)[mask == 0] == 0.0), name  # nothing flows to masked tokens
  assert all(np.isfinite(float(v)) for v in m.values())
  assert float(m["ratio"]) > 1e6  # the clamp bounds the ratio at e^20, it does not hide it

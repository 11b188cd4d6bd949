"""A tiny RL stage one step off-policy (rl.off_policy_steps=1) on 8 data shards: it runs, logs the
policy lag (0 at the first step, 1 after) and the importance-sampling metrics, and step k's batch is
sampled with the params of step k-1 while its old log-probs come from the current ones."""
import jax
import numpy as np
import pytest

from granite_jax.rl import rollout as rollout_lib
from granite_jax.rl.loop import run_rl
from granite_jax.train.metrics import read_metrics
from tests.rl.test_rl_loop import small_config


def _checksum(params) -> float:
  return float(sum(np.abs(np.asarray(jax.device_get(x), np.float64)).sum() for x in jax.tree.leaves(params)))


@pytest.mark.slow  # ~1 min: a 3-step RL run
def test_one_step_off_policy_run(tmp_path, demo_cache_dir, monkeypatch):
  c = small_config(demo_cache_dir, 3)
  c.rl.off_policy_steps, c.rl.tis_cap = 1, 2.0
  c.optim.peak_lr = 3e-3  # the policy moves visibly in a step
  c.train.eval_batches = 0
  sampled, scored = [], []
  real_gen, real_lp = rollout_lib.generate, rollout_lib.add_logprobs

  def gen(params, *a, **kw):
    sampled.append(_checksum(params))
    return real_gen(params, *a, **kw)

  def add_lp(batch, params, *a, **kw):
    scored.append(_checksum(params))
    out = real_lp(batch, params, *a, **kw)
    assert "old_logp" in out  # off-policy: the current policy's log-probs, for the weights
    return out

  # A fresh tiny policy scores 0 on every prompt (zero advantages, no update): give it signal.
  monkeypatch.setattr(rollout_lib, "group_advantages",
                      lambda r, **kw: np.random.default_rng(0).normal(0, 1, np.shape(r)).astype(np.float32))
  monkeypatch.setattr(rollout_lib, "generate", gen)
  monkeypatch.setattr(rollout_lib, "add_logprobs", add_lp)
  run_rl(c, str(tmp_path), progress=False)
  recs = [r for r in read_metrics(str(tmp_path)) if "loss" in r]
  assert [r["step"] for r in recs] == [1, 2, 3]
  assert [r["policy_lag"] for r in recs] == [0.0, 1.0, 1.0]
  # Versions: the rollouts of steps 1 and 2 both sampled with the initial params, step 3's with
  # the params after step 1; the old log-probs always with the current params (one per step).
  assert len(sampled) == 3 and len(scored) == 3
  assert sampled[0] == sampled[1] == scored[0] and sampled[2] == scored[1]
  assert len(set(scored)) == 3
  first, later = recs[0], recs[1:]
  for r in recs:  # shown with -s
    print({k: r[k] for k in ("step", "policy_lag", "logp_diff", "tis_weight", "tis_clip_frac", "packed_rows", "pad_frac")})
  # Step 1 is on-policy: weights 1 up to the sampler-vs-train numerics, none capped.
  assert first["tis_clip_frac"] == 0 and abs(first["tis_weight"] - 1) < 1e-3 and first["logp_diff"] < 1e-3
  for r in later:  # a policy one step stale: its log-probs differ from the sampler's
    assert r["logp_diff"] > 10 * first["logp_diff"] and 0 < r["tis_weight"] <= 2.0
    assert r["skipped"] == 0

"""GRPO learns: the real sampler, rollout batch builder, group advantages and RL train step raise a
tiny random-init policy's reward on a toy task, and the same loop with the advantage sign flipped
does not. A sign error, a loss that ignores the advantage, or a step that drops the update fails here.

Toy task: prompts of random tokens; reward = fraction of the response tokens equal to TARGET. At
init the policy is near uniform over VOCAB tokens, so a sample scores 1/VOCAB on average and the
groups carry signal from the first step. Each step: sample G responses per prompt (infer/sampler.py),
score, rollout.build_batch (group_advantages, train layout), old log-probs with jit_logprobs, one
jit_rl_train_step (DAPO clip, token-mean, k3 KL against the initial policy). The reward is measured
before and after on fixed held-out prompts with fixed sampling keys.
"""
import types

import jax
import numpy as np
import optax
import pytest

from granite_jax.model import preset
from granite_jax.rl import rollout
from granite_jax.infer.sampler import left_pad, make_sampler
from granite_jax.rl.step import jit_logprobs, jit_rl_train_step
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib

VOCAB, TARGET = 24, 5
CFG = preset("tiny", vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
             d_ff=64)
RL = types.SimpleNamespace(prompts_per_step=8, samples_per_prompt=8, max_prompt_len=8,
                           max_response_len=6, scale_by_std=True, overlong_filter=False)
LOSS_KW = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.01, agg="token-mean", dual_clip=None)
LR, STEPS, EVAL_PROMPTS = 2e-2, 8, 32


def _prompts(rng, n):
  return [list(rng.integers(1, VOCAB, int(rng.integers(3, RL.max_prompt_len + 1)))) for _ in range(n)]


def _reward(tokens_BN):
  return np.mean(np.asarray(tokens_BN) == TARGET, axis=-1).astype(np.float32)


class Toy:
  """The jitted pieces, built once per module (compiles dominate the runtime)."""

  def __init__(self):
    self.mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    self.tx = optax.adam(LR)
    self.sh = state_lib.state_shardings(CFG, self.mesh, self.tx)
    self.init = state_lib.make_init_fn(CFG, self.tx, self.sh)
    self.train = jit_rl_train_step(CFG, self.mesh, self.tx, optax.constant_schedule(LR), self.sh,
                                   loss_kw=LOSS_KW)
    self.logp = jit_logprobs(CFG, self.mesh, self.sh.params)
    self.sample = make_sampler(CFG, max_new_tokens=RL.max_response_len,
                               samples_per_prompt=RL.samples_per_prompt)
    eval_rng = np.random.default_rng(1234)
    self.eval_prompts = left_pad(_prompts(eval_rng, EVAL_PROMPTS), bucket=RL.max_prompt_len)

  def mean_reward(self, params) -> float:
    """Mean reward of G temperature-1 samples per held-out prompt (fixed keys)."""
    out = self.sample(params, *self.eval_prompts, jax.random.PRNGKey(99), np.float32(1.0),
                      np.float32(1.0), np.int32(0))
    return float(_reward(jax.device_get(out["tokens"])).mean())

  def run(self, seed: int, steps: int = STEPS) -> tuple[float, float]:
    """GRPO for `steps` steps from a seed's random init -> (reward before, reward after)."""
    state = self.init(jax.random.PRNGKey(seed))
    ref = jax.tree.map(lambda x: x.copy(), state.params)
    rng = np.random.default_rng(seed)
    before = self.mean_reward(state.params)
    for step in range(steps):
      tasks = [dict(prompt_ids=p) for p in _prompts(rng, RL.prompts_per_step)]
      prompts_BP, lengths_B = left_pad([t["prompt_ids"] for t in tasks], bucket=RL.max_prompt_len)
      out = jax.device_get(self.sample(state.params, prompts_BP, lengths_B,
                                       jax.random.PRNGKey(seed * 1000 + step), np.float32(1.0),
                                       np.float32(1.0), np.int32(0)))
      G = RL.samples_per_prompt
      samples = dict(tokens=np.asarray(out["tokens"]), logprobs=np.asarray(out["logprobs"]),
                     lengths=np.asarray(out["lengths"]), shaped=_reward(out["tokens"]),
                     live=np.ones(len(out["tokens"]), bool),
                     truncated=np.zeros(len(out["tokens"]), bool),
                     tasks=[t for t in tasks for _ in range(G)])
      batch = rollout.build_batch(samples, RL)
      layout = {k: batch[k] for k in ("tokens", "segment_ids", "positions")}
      batch["old_logp"] = np.asarray(jax.device_get(self.logp(state.params, layout)))
      batch["ref_logp"] = np.asarray(jax.device_get(self.logp(ref, layout)))
      state, m = self.train(state, batch)
      assert int(m["skipped"]) == 0
    return before, self.mean_reward(state.params)


@pytest.fixture(scope="module")
def toy():
  return Toy()


def test_grpo_raises_the_reward(toy):
  before, after = toy.run(seed=0)
  assert 0.01 < before < 0.15, before  # the task is solved sometimes at init: GRPO gets signal
  assert after > before + 0.25, (before, after)


def test_flipped_advantage_does_not_learn(toy, monkeypatch):
  real = rollout.group_advantages
  monkeypatch.setattr(rollout, "group_advantages", lambda r, **kw: -real(r, **kw))
  before, after = toy.run(seed=0)
  assert after < before, (before, after)  # it unlearns the target instead


if __name__ == "__main__":  # margins over seeds: python tests/rl/test_rl_learns.py
  import os
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  t = Toy()
  real = rollout.group_advantages
  for flip in (False, True):
    rollout.group_advantages = (lambda r, **kw: -real(r, **kw)) if flip else real
    for seed in range(5):
      b, a = t.run(seed)
      print(f"flip={flip} seed={seed}: reward {b:.3f} -> {a:.3f} ({a - b:+.3f})", flush=True)

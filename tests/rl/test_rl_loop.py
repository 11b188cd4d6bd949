"""End to end: a tiny RL stage logs the RL metrics every step, evaluates held-out prompts, writes
model_config.json, resumes from its checkpoint, and its metrics.jsonl gets every RL plot."""
import json
import os

import pytest

from configs import rl_math
from granite_jax import plot
from granite_jax.infer import engine
from granite_jax.rl.loop import run_rl, validate_rl
from granite_jax.train.metrics import read_metrics

RL_KEYS = {"reward_mean", "reward_std", "accuracy", "response_len", "clip_frac_low", "clip_frac_high",
           "kl", "entropy", "loss", "grad_norm", "lr", "skipped"}


def small_config(cache_dir, steps):
  c = rl_math.get_config("tiny")
  for k, v in dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64).items():
    c.model[k] = v
  c.data.cache_dir = cache_dir
  c.rl.prompts_per_step, c.rl.samples_per_prompt, c.rl.eval_prompts_n = 8, 2, 8  # 8 data shards
  c.rl.max_prompt_len, c.rl.max_response_len, c.rl.overlong_buffer = 40, 8, 4
  c.train.global_batch, c.train.seq_len = 16, 48
  c.train.steps, c.train.eval_every, c.ckpt.every_steps = steps, 2, 2
  c.ckpt.async_save = False
  return c


def test_validate_names_the_field(demo_cache_dir):
  c = small_config(demo_cache_dir, 2)
  c.train.global_batch = 32
  with pytest.raises(ValueError, match="train.global_batch"):
    validate_rl(c, 8)
  c = small_config(demo_cache_dir, 2)
  c.rl.prompts_per_step, c.train.global_batch = 4, 8
  with pytest.raises(ValueError, match="rl.prompts_per_step"):
    validate_rl(c, 8)


@pytest.mark.slow
def test_tiny_rl_stage_logs_and_resumes(tmp_path, demo_cache_dir):
  wd = str(tmp_path)
  out = run_rl(small_config(demo_cache_dir, 2), wd, progress=False)
  recs = read_metrics(wd)
  assert recs[0]["step"] == 0 and "eval_accuracy" in recs[0]  # the "before" held-out eval
  assert [r["step"] for r in recs[1:]] == [1, 2] and RL_KEYS <= set(recs[-1])
  assert "eval_reward_mean" in recs[-1] and out["final_eval"] is not None
  assert json.load(open(os.path.join(wd, "model_config.json")))["d_model"] == 32
  run_rl(small_config(demo_cache_dir, 3), wd, progress=False)  # resumes at step 2
  assert [r["step"] for r in read_metrics(wd)] == [0, 1, 2, 3]
  # The run's own metrics.jsonl gets every RL figure (a renamed metric would drop one silently).
  drawn = {os.path.basename(p) for p in plot.plot(wd)}
  assert drawn == {f"{n}.png" for n in ("loss", "lr", "reward", "accuracy", "kl", "response_length")}


@pytest.mark.slow
def test_rollout_rows_refill_gives_the_same_rollouts(tmp_path, demo_cache_dir):
  """rl.rollout_rows below the step's samples: the engine (on the 8 data shards, rollout axis fsdp
  of size 1) decodes one prompt's 2 rows per shard at a time and refills finished rows with the
  shard's waiting requests; a request's draws are its own, so step 1 is the same as all at once."""
  c = small_config(demo_cache_dir, 1)
  with pytest.raises(ValueError, match="rl.rollout_axes"):
    c.rl.rollout_rows = 16
    validate_rl(c, 8)
  got, admits = {}, {}
  for rows in (0, 16):
    c = small_config(demo_cache_dir, 1)
    c.rl.prompts_per_step, c.train.global_batch = 16, 32  # 2 prompts a data shard
    c.rl.rollout_rows, c.rl.rollout_axes = rows, ("fsdp",)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
      admit = engine._admit
      mp.setattr(engine, "_admit", lambda *a, calls=calls, admit=admit: calls.append(1) or admit(*a))
      run_rl(c, str(tmp_path / f"rows{rows}"), progress=False)
    got[rows], admits[rows] = read_metrics(str(tmp_path / f"rows{rows}"))[-1], len(calls)
  assert admits[0] == 0 and admits[16] > 0, admits  # the capped run refilled rows
  for k in ("reward_mean", "response_len", "truncated_frac", "loss", "kl"):
    assert got[16][k] == pytest.approx(got[0][k], rel=1e-5, abs=1e-6), k

"""The RL loop (every RL stage): rollout with the current policy -> GRPO/DAPO train step(s) -> metrics.

`run_rl(config, workdir)`: the policy starts from `config.init_from` (the previous stage), the
frozen reference from `config.rl.ref_from` (the SFT checkpoint; required at real sizes, tiny
falls back to init_from). Each step takes the next `rl.prompts_per_step` prompts of shuffled
epochs over the prompt set (rl/prompt_order.py: a pure function of (seed, step), so a resumed
run sees the prompts an uninterrupted one would; the position is checkpointed with the state),
samples `rl.samples_per_prompt` responses each and makes `rl.ppo_epochs` optimizer steps on that
batch (1 = strictly on-policy: no separate old-log-prob forward, rl/step.py). The batch is packed
(rl.pack, rl/packing.py). `rl.off_policy_steps=1`: step k+1's rollout is generated while step k
trains, with the params of step k-1, and corrected by truncated importance sampling (rl.tis_cap;
rl/off_policy.py, rl/loss.py). Checkpoints, resume, preemption, the non-finite guard and the
metrics are the run scaffold's (train/session.py), as for pretraining; every step is logged.
"""
from __future__ import annotations

import functools
import time

import jax
from ml_collections import ConfigDict

from granite_jax.ckpt.manager import abstract_like, restore_params
from granite_jax.data.chat_template import EOT
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.infer.sampler import make_sampler
from granite_jax.model import Granite
from granite_jax.rl import off_policy
from granite_jax.rl import prompt_order
from granite_jax.rl import rollout as rollout_lib
from granite_jax.rl import step as rl_step
from granite_jax.rl.rewards.scorer import build_rewards
from granite_jax.rl.tasks import load_tasks
from granite_jax.rl.validate import check_reference
from granite_jax.train import loop as train_loop
from granite_jax.train import session
from granite_jax.train import state as state_lib


def validate_rl(c: ConfigDict, dp: int) -> None:
  rl = c.rl
  for f in ("samples_per_prompt", "prompts_per_step", "max_prompt_len", "max_response_len", "ppo_epochs"):
    if not isinstance(rl[f], int) or rl[f] < 1:
      raise ValueError(f"rl.{f}={rl[f]!r} must be an integer >= 1")
  if c.train.global_batch != rl.prompts_per_step * rl.samples_per_prompt:
    raise ValueError(f"train.global_batch={c.train.global_batch} must equal rl.prompts_per_step x "
                     f"rl.samples_per_prompt = {rl.prompts_per_step * rl.samples_per_prompt}")
  if c.train.seq_len != rl.max_prompt_len + rl.max_response_len:
    raise ValueError(f"train.seq_len={c.train.seq_len} must equal rl.max_prompt_len + rl.max_response_len")
  if rl.prompts_per_step % dp or rl.eval_prompts_n % dp:
    raise ValueError(f"rl.prompts_per_step={rl.prompts_per_step} and rl.eval_prompts_n={rl.eval_prompts_n} "
                     f"must be divisible by the data-parallel size {dp}")
  if not 0 <= rl.overlong_buffer < rl.max_response_len:
    raise ValueError(f"rl.overlong_buffer={rl.overlong_buffer} must be in [0, rl.max_response_len)")
  if getattr(rl, "pack", False) and not (isinstance(rl.pack_buckets, int) and rl.pack_buckets >= 1):
    raise ValueError(f"rl.pack_buckets={rl.pack_buckets!r} must be an integer >= 1")
  rows = getattr(rl, "rollout_rows", 0)
  if not isinstance(rows, int) or rows < 0:
    raise ValueError(f"rl.rollout_rows={rows!r} must be an integer >= 0 (0: every sample at once)")
  if rows and dp > 1 and not tuple(getattr(rl, "rollout_axes", ()) or ()):
    raise ValueError(f"rl.rollout_rows={rows} needs rl.rollout_axes on a mesh of {dp} data shards (the "
                     "fast engine runs on a mesh only in the rollout layout; configs/gb200.py ROLLOUT_AXES)")
  if getattr(rl, "off_policy_steps", 0) not in (0, 1):
    raise ValueError(f"rl.off_policy_steps={rl.off_policy_steps} must be 0 (on-policy) or 1")
  if getattr(rl, "off_policy_steps", 0) and not rl.tis_cap >= 1.0:
    raise ValueError(f"rl.tis_cap={rl.tis_cap} must be >= 1 (the importance-weight cap)")
  if rl.temperature <= 0:
    raise ValueError(f"rl.temperature={rl.temperature} must be > 0 (GRPO needs diverse samples)")
  check_reference(c)  # real sizes must name the SFT reference (rl.ref_from)


def load_params(directory: str, job) -> dict:
  abstract = jax.eval_shape(lambda: state_lib.init_params(job.model_cfg, jax.random.PRNGKey(0)))
  return restore_params(directory, abstract_like(abstract, job.shardings.params))


def reference_params(c: ConfigDict, job):
  """The frozen KL reference: rl.ref_from (else init_from, tiny only); with neither (a fresh-init smoke run)
  the fresh-init policy itself, recomputed from the seed so that a resumed run has the same one."""
  ref_from = check_reference(c)  # rl.ref_from; "" = init_from only for preset tiny
  if ref_from:
    return load_params(ref_from, job), ref_from
  return train_loop.fresh_state(job)[0].params, "initial params"


def draw_tasks_fn(train_tasks: list, seed: int, position: session.Position, max_draws: int):
  """`draw(n)`: the next n prompts of shuffled epochs over the prompt set, a pure function of
  (seed, data position, draw); advances the position."""
  step, draws = position.state["next"], [0]
  position.state["next"] = step + 1

  def draw(n):
    idx = prompt_order.step_prompts(len(train_tasks), seed, step, n, draws[0], max_draws)
    draws[0] += 1
    return [train_tasks[i] for i in idx]
  return draw


def trainer(job, tok) -> session.Trainer:
  c, rl = job.config, job.config.rl
  rewards = build_rewards(c, tok)  # the bounded worker pool starts here, importing while XLA compiles
  train_tasks = load_tasks(rl, tok, "train", n_demo=2000, seed=c.train.seed)
  eval_tasks = load_tasks(rl, tok, "eval", n_demo=rl.eval_prompts_n, seed=c.train.seed + 1)
  rewards.check_domains([t["domain"] for t in train_tasks],  # [rewards] unknown domains stop here
                        where=f"rl.prompts={rl.prompts!r}" if rl.prompts
                        else f"rl.demo_tasks={rl.demo_tasks!r}")
  rewards.check_domains([t["domain"] for t in eval_tasks],
                        where=f"rl.eval_prompts={rl.eval_prompts!r}" if rl.eval_prompts else "rl.demo_tasks")
  eval_tasks = (eval_tasks * (-(-rl.eval_prompts_n // len(eval_tasks))))[: rl.eval_prompts_n]
  ref_params, ref_name = reference_params(c, job)
  eot = tok.token_to_id(EOT)
  # The fast engine (infer/engine.py: one prefill per prompt, decode over the filled cache) on
  # one device, or on the mesh in the rollout layout rl.rollout_axes (configs/gb200.py); a mesh
  # of several devices without rollout axes keeps the single sharded program.
  axes = tuple(getattr(rl, "rollout_axes", ()) or ())
  mk = lambda g: make_sampler(job.model_cfg, max_new_tokens=rl.max_response_len, stop_ids=(eot,),
                              samples_per_prompt=g, pad_id=0, mesh=job.mesh,
                              param_shardings=job.shardings.params, engine="fast", rollout_axes=axes,
                              max_rows=getattr(rl, "rollout_rows", 0) or None)
  sample_fn, greedy_fn = mk(rl.samples_per_prompt), mk(1)
  logp_fn = rl_step.jit_logprobs(job.model_cfg, job.mesh, job.shardings.params, rl.temperature)
  off = getattr(rl, "off_policy_steps", 0)
  loss_kw = dict(eps_low=rl.eps_low, eps_high=rl.eps_high, kl_coef=rl.kl_coef, agg=rl.agg,
                 dual_clip=rl.dual_clip or None)
  if off:
    loss_kw["tis_cap"] = rl.tis_cap
  dp = job.mesh.shape.get("data", 1) * job.mesh.shape.get("fsdp", 1)
  step_fn = functools.partial(rl_step.rl_train_step, model=Granite(job.model_cfg), tx=job.tx,
                              schedule=job.schedule, loss_kw=loss_kw, temperature=rl.temperature,
                              grad_accum=c.train.grad_accum,
                              micro_rows=c.train.global_batch // c.train.grad_accum)

  def generate(params, step):  # sampling + scoring + layout: in a background thread when off-policy
    t0 = time.perf_counter()
    rng = jax.random.fold_in(jax.random.PRNGKey(c.train.seed), step)
    draw = draw_tasks_fn(train_tasks, c.train.seed, session.Position(next=step), 1 + rl.max_extra_batches)
    batch, stats = rollout_lib.generate(params, draw, sample_fn=sample_fn, tok=tok, rewards=rewards,
                                        rl=rl, rng=rng, dp=dp, grad_accum=c.train.grad_accum)
    return batch, dict(stats, generate_sec=time.perf_counter() - t0)

  rollouts = off_policy.Rollouts(generate, off_policy_steps=off, last_step=job.steps)

  def next_batch(state, position, step):
    t0 = time.perf_counter()
    position.state["next"] = step + 1
    batch, stats = rollouts.take(state.params, step)
    batch = rollout_lib.add_logprobs(batch, state.params, ref_params, logp_fn=logp_fn, rl=rl)
    stats["_example"] = stats.pop("example")
    return batch, dict(stats, rollout_sec=time.perf_counter() - t0)

  def evaluate(params):
    with rollouts.lock:  # the reward scorer is not shared with a rollout in flight
      return rollout_lib.evaluate(params, eval_tasks, sample_fn=greedy_fn, tok=tok, rewards=rewards, rl=rl)

  def close():
    rollouts.close()
    rewards.close()  # ends the reward worker processes

  def done_line(s):
    first, last = s["first_eval"], s["final_eval"]
    if not (first and last) or first is last:
      return None
    return (f"done: {job.steps} RL steps; held-out greedy reward {first['eval_reward_mean']:.3f} -> "
            f"{last['eval_reward_mean']:.3f}, accuracy {first['eval_accuracy']:.3f} -> {last['eval_accuracy']:.3f}")

  return session.Trainer(
      step_fn=step_fn, batch_shardings=rl_step.rl_batch_shardings(job.mesh, rl_step.batch_fields(rl)),
      make_data=lambda step, stop_requested: session.Position(next=step), next_batch=next_batch,
      fresh_state=lambda: train_loop.fresh_state(job),
      evaluate=evaluate,
      eval_at_start=True, log_every=1, updates_per_step=rl.ppo_epochs,  # RL steps are few: log each
      banner={"rl": f"{rl.prompts or 'demo ' + rl.demo_tasks} prompts ({len(train_tasks)}), "
                    f"{rl.prompts_per_step} x {rl.samples_per_prompt} samples, response <= {rl.max_response_len}, "
                    f"kl {rl.kl_coef}, clip ({rl.eps_low}, {rl.eps_high}), {rl.agg}, ref {ref_name}, "
                    f"{'packed' if getattr(rl, 'pack', False) else 'padded'} rows, "
                    + (f"one step off-policy (TIS cap {rl.tis_cap})" if off else "on-policy")},
      record=lambda s, m, sec: dict(step_sec=sec),
      postfix=lambda r: dict(reward=f"{r['reward_mean']:.3f}", acc=f"{r['accuracy']:.2f}",
                             kl=f"{r['kl']:.4f}", len=f"{r['response_len']:.1f}"),
      log_line=lambda r: (f"step {r['step']}: reward {r['reward_mean']:.3f} acc {r['accuracy']:.2f} | "
                          f"{r['_example']!r}") if r["step"] % c.train.log_every == 0 else None,
      done_line=done_line, close=close)


def run_rl(config: ConfigDict, workdir: str, *, progress: bool = True) -> dict:
  job = train_loop.build(config)
  validate_rl(config, job.mesh.shape.get("data", 1) * job.mesh.shape.get("fsdp", 1))
  return session.run(job, workdir, trainer(job, get_tokenizer(config.data)), progress=progress)

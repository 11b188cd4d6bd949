"""The RL loop (every RL stage): rollout with the current policy -> GRPO/DAPO train step(s) -> metrics.

`run_rl(config, workdir)`: the policy starts from `config.init_from` (the previous stage), the
frozen reference from `config.rl.ref_from` (the SFT checkpoint; default init_from). Each step
draws `rl.prompts_per_step` prompts (deterministic in (seed, step), so a resumed run sees the
prompts an uninterrupted one would), samples `rl.samples_per_prompt` responses each and makes
`rl.ppo_epochs` optimizer steps on that batch (1 = strictly on-policy). Checkpoints, resume,
preemption and the non-finite guard are those of the pretraining loop.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np
from ml_collections import ConfigDict

from granite_jax.ckpt.manager import Checkpointer, abstract_like, restore_params
from granite_jax.data.chat_template import EOT
from granite_jax.data.pipeline import get_tokenizer
from granite_jax.rl import rollout as rollout_lib
from granite_jax.rl import step as rl_step
from granite_jax.rl.rewards import Reward, make_rewards
from granite_jax.rl.rewards.scorer import build_rewards  # [rewards]
from granite_jax.rl.sampler import make_sampler
from granite_jax.rl.tasks import load_tasks, tool_call_reward
from granite_jax.train import loop as train_loop
from granite_jax.train import state as state_lib
from granite_jax.train.guards import Guard
from granite_jax.train.metrics import MetricsWriter
from granite_jax.train.preemption import Preemption, exit_preempted


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
  if rl.temperature <= 0:
    raise ValueError(f"rl.temperature={rl.temperature} must be > 0 (GRPO needs diverse samples)")


def load_params(directory: str, job) -> dict:
  abstract = jax.eval_shape(lambda: state_lib.init_params(job.model_cfg, jax.random.PRNGKey(0)))
  return restore_params(directory, abstract_like(abstract, job.shardings.params))


def make_reward_registry(c: ConfigDict, tok) -> dict[str, Reward]:
  chat_model = None
  if c.rl.reward_model:
    from granite_jax.rl.reward_model import load_scorer
    chat_model = load_scorer(c.rl.reward_model, tok)
  rewards = make_rewards(chat_model, chat_min_reward=-10.0)
  rewards["tool_call"] = Reward("tool_call", tool_call_reward)
  return rewards


def run_rl(config: ConfigDict, workdir: str, *, progress: bool = True) -> dict:
  c, rl = config, config.rl
  job = train_loop.build(c)
  dp = job.mesh.shape.get("data", 1) * job.mesh.shape.get("fsdp", 1)
  validate_rl(c, dp)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    train_loop.write_run_files(c, job, workdir)  # model_config.json: the next stage's init_from
  tok = get_tokenizer(c.data)
  rewards = build_rewards(c, tok)  # [rewards] worker pool starts here, importing while XLA compiles
  train_tasks = load_tasks(rl, tok, "train", n_demo=2000, seed=c.train.seed)
  eval_tasks = load_tasks(rl, tok, "eval", n_demo=rl.eval_prompts_n, seed=c.train.seed + 1)
  rewards.check_domains([t["domain"] for t in train_tasks],  # [rewards] unknown domains stop here
                        where=f"rl.prompts={rl.prompts!r}" if rl.prompts
                        else f"rl.demo_tasks={rl.demo_tasks!r}")
  rewards.check_domains([t["domain"] for t in eval_tasks],
                        where=f"rl.eval_prompts={rl.eval_prompts!r}" if rl.eval_prompts else "rl.demo_tasks")
  eval_tasks = (eval_tasks * (-(-rl.eval_prompts_n // len(eval_tasks))))[: rl.eval_prompts_n]

  ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=c.ckpt.max_to_keep,
                      async_save=c.ckpt.async_save)
  state, _, start = train_loop.initial_state(job, ckpt, lambda: None)
  ref_from = rl.ref_from or c.init_from
  # No reference checkpoint (a fresh-init smoke run): the starting policy is the reference.
  ref_params = load_params(ref_from, job) if ref_from else jax.tree.map(lambda x: x.copy(), state.params)
  step = int(jax.device_get(state.step)) // rl.ppo_epochs
  writer = MetricsWriter(workdir, enabled=is_main)
  writer.truncate_after(step)
  if is_main:
    print(train_loop.banner(job, workdir, start).replace(
        "  data     " + train_loop.data_line(c),
        f"  rl       {rl.prompts or 'demo ' + rl.demo_tasks} prompts ({len(train_tasks)}), "
        f"{rl.prompts_per_step} x {rl.samples_per_prompt} samples, response <= {rl.max_response_len}, "
        f"kl {rl.kl_coef}, clip ({rl.eps_low}, {rl.eps_high}), {rl.agg}, ref {ref_from or 'initial params'}"),
        flush=True)

  eot = tok.token_to_id(EOT)
  mk = lambda g: make_sampler(job.model_cfg, max_new_tokens=rl.max_response_len, stop_ids=(eot,),
                              samples_per_prompt=g, pad_id=0, mesh=job.mesh,
                              param_shardings=job.shardings.params)
  sample_fn, greedy_fn = mk(rl.samples_per_prompt), mk(1)
  logp_fn = rl_step.jit_logprobs(job.model_cfg, job.mesh, job.shardings.params, rl.temperature)
  loss_kw = dict(eps_low=rl.eps_low, eps_high=rl.eps_high, kl_coef=rl.kl_coef, agg=rl.agg,
                 dual_clip=rl.dual_clip or None)
  train_fn = rl_step.jit_rl_train_step(job.model_cfg, job.mesh, job.tx, job.schedule, job.shardings,
                                       loss_kw=loss_kw, temperature=rl.temperature,
                                       grad_accum=c.train.grad_accum)
  shardings = rl_step.rl_batch_shardings(job.mesh)
  guard = Guard(c.train.on_nonfinite, c.train.max_consecutive_skips, 0.0)
  preempt = Preemption()
  evaluate = lambda params: rollout_lib.evaluate(params, eval_tasks, sample_fn=greedy_fn, tok=tok,
                                                 rewards=rewards, rl=rl)
  first_eval = last_eval = None
  if step == 0 and c.train.eval_batches:
    first_eval = evaluate(state.params)
    writer.write(dict(step=0, **first_eval))
  bar = train_loop._progress(progress and is_main, step, job.steps)
  try:
    while step < job.steps:
      t0 = time.perf_counter()
      rng = jax.random.fold_in(jax.random.PRNGKey(c.train.seed), step)
      draws = [0]

      def draw_tasks(n, step=step):  # deterministic in (seed, step, draw)
        r = np.random.default_rng([c.train.seed, step, draws[0]])
        draws[0] += 1
        return [train_tasks[i] for i in r.choice(len(train_tasks), n, replace=len(train_tasks) < n)]

      batch, stats = rollout_lib.rollout(state.params, ref_params, draw_tasks, sample_fn=sample_fn,
                                         logp_fn=logp_fn, tok=tok, rewards=rewards, rl=rl, rng=rng)
      t_roll = time.perf_counter() - t0
      batch = {k: jax.make_array_from_process_local_data(shardings[k], v) for k, v in batch.items()}
      for _ in range(rl.ppo_epochs):
        state, m = train_fn(state, batch)
      step += 1
      m = jax.device_get(m)
      events = guard.check(step, float(m["loss"]), float(m["grad_norm"]), bool(m["skipped"]))
      example = stats.pop("example")
      record = dict(step=step, **{k: float(v) for k, v in m.items()}, **stats, **events,
                    rollout_sec=t_roll, step_sec=time.perf_counter() - t0)
      record["skipped"] = int(m["skipped"])
      if c.train.eval_batches and (step % c.train.eval_every == 0 or step == job.steps):
        last_eval = evaluate(state.params)
        record.update(last_eval)
      writer.write(record)  # RL steps are few and expensive: every step is logged
      bar.update(1)
      bar.set_postfix(reward=f"{stats['reward_mean']:.3f}", acc=f"{stats['accuracy']:.2f}",
                      kl=f"{record['kl']:.4f}", len=f"{stats['response_len']:.1f}")
      if is_main and step % c.train.log_every == 0:
        bar.write(f"step {step}: reward {stats['reward_mean']:.3f} acc {stats['accuracy']:.2f} | {example!r}")
      must_save = step % c.ckpt.every_steps == 0 or step == job.steps
      stop = preempt.should_stop(step)
      if must_save or stop:
        ckpt.save(int(jax.device_get(state.step)), state)
      if stop:
        exit_preempted(step, ckpt, bar)
  finally:
    preempt.restore()
    rewards.close()  # [rewards] ends the worker processes
  bar.close()
  ckpt.close()
  writer.close()
  summary = dict(steps=job.steps, first_eval=first_eval, final_eval=last_eval, workdir=workdir,
                 skipped_steps=guard.total_skipped)
  if is_main and first_eval and last_eval:
    print(f"done: {job.steps} RL steps; held-out greedy reward {first_eval['eval_reward_mean']:.3f} -> "
          f"{last_eval['eval_reward_mean']:.3f}, accuracy {first_eval['eval_accuracy']:.3f} -> "
          f"{last_eval['eval_accuracy']:.3f}; metrics in {writer.path}", flush=True)
  return summary

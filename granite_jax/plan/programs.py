"""Every jitted program of a stage, at its real shapes, from abstract inputs; and the planner's
estimate of each. Nothing is allocated: inputs are `jax.ShapeDtypeStruct`s carrying the stage's
shardings, and `Program.lower()` only traces. The builders are the ones the runs use
(train/step.py, rl/step.py, infer/sampler.py); the reward model's step and scoring follow
rl/reward_model_train.py and rl/reward_model.py with the batch split over the data axes.

Per stage kind: pretraining, LCE and SFT: `train`; reward model: `train` (Bradley-Terry on
chosen + rejected rows) and `score` (a rollout batch through the scalar head); RL: `train`
(GRPO/DAPO step), `rollout` (prefill + decode with the KV cache, `samples_per_prompt` rows per
prompt), `logprobs` (old / reference log-probs of the rollout batch in train layout).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ml_collections import ConfigDict

from granite_jax.plan import memory as mem_lib
from granite_jax.plan import stages

# XLA:CPU has no cuDNN flash attention: the blockwise impl is its stand-in (same O(T) memory class).
CPU_IMPL = {"cudnn": "blockwise"}


@dataclasses.dataclass
class Program:
  name: str
  lower: Callable[[], object]      # -> jax.stages.Lowered
  estimate: mem_lib.Memory         # the planner's per-device bytes
  shapes: str                      # what it runs on, for the printout


def cpu_model(c: ConfigDict):
  cfg = stages.model(c)
  return dataclasses.replace(cfg, attention_impl=CPU_IMPL.get(cfg.attention_impl, cfg.attention_impl))


def _abstract_state(cfg, mesh, tx):
  import jax

  from granite_jax.ckpt.manager import abstract_like
  from granite_jax.train import state as state_lib
  shardings = state_lib.state_shardings(cfg, mesh, tx)
  init = state_lib.make_init_fn(cfg, tx, shardings)
  return abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), shardings), shardings


def _optimizer(c: ConfigDict):
  from granite_jax.optim import make_optimizer
  from granite_jax.train.steps import total_steps
  steps = total_steps(c, from_data=False)  # SFT derives its count from the data; the program does not depend on it
  return make_optimizer(c.optim, total_steps=steps, tokens_per_step=c.train.global_batch * c.train.seq_len)


def _sds(shape, dtype, sharding):
  import jax
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _lower(jitted, mesh, *args):
  from granite_jax.sharding.jit import mesh_context

  def go():
    with mesh_context(mesh):
      return jitted.lower(*args)
  return go


def train_programs(c: ConfigDict, mesh, cfg) -> list[Program]:
  import jax.numpy as jnp

  from granite_jax.train import step as step_lib
  tx, schedule = _optimizer(c)
  state, shardings = _abstract_state(cfg, mesh, tx)
  B, T, acc = c.train.global_batch, c.train.seq_len, c.train.grad_accum
  bs = step_lib.batch_sharding(mesh)
  keys = ("tokens", "segment_ids", "positions") + (("loss_mask",) if c.data.get("kind") == "sft" else ())
  batch = {k: _sds((B, T), jnp.int32, bs) for k in keys}
  fn = step_lib.jit_train_step(cfg, mesh, tx, schedule, shardings, acc).jitted
  est = mem_lib.train_memory(cfg, stages.mesh_sizes(c), B, T, acc)
  shapes = f"{B} x {T}" + (f", {acc} micro" if acc > 1 else "")
  return [Program("train", _lower(fn, mesh, state, batch), est, shapes)]


def rl_programs(c: ConfigDict, mesh, cfg) -> list[Program]:
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  from granite_jax.infer.sampler import make_sampler
  from granite_jax.rl import step as rl_step
  from granite_jax.sharding.rules import rules_for
  rl, sizes = c.rl, stages.mesh_sizes(c)
  tx, schedule = _optimizer(c)
  state, shardings = _abstract_state(cfg, mesh, tx)
  B, T, acc = c.train.global_batch, c.train.seq_len, c.train.grad_accum
  sh = rl_step.rl_batch_shardings(mesh)
  batch = {k: _sds((B, T), jnp.int32 if k in ("tokens", "segment_ids", "positions") else jnp.float32, sh[k])
           for k in rl_step.ROW_FIELDS}
  batch["advantages"] = _sds((B,), jnp.float32, sh["advantages"])
  loss_kw = dict(eps_low=rl.eps_low, eps_high=rl.eps_high, kl_coef=rl.kl_coef, agg=rl.agg,
                 dual_clip=rl.dual_clip or None)
  train = rl_step.jit_rl_train_step(cfg, mesh, tx, schedule, shardings, loss_kw=loss_kw,
                                    temperature=rl.temperature, grad_accum=acc).jitted
  # The RL loss reads full [b, t, V] log-probs (rl/loss.py), not the chunked cross-entropy.
  train_est = mem_lib.train_memory(dataclasses.replace(cfg, loss_chunk=0), sizes, B, T, acc)
  progs = [Program("train", _lower(train, mesh, state, batch), train_est, f"{B} x {T}, {acc} micro")]

  params = state.params
  Pn, N, G = rl.prompts_per_step, rl.max_response_len, rl.samples_per_prompt
  # The prefill runs the training kernel (the blockwise stand-in for cuDNN here); 1-token decode
  # steps attend over the KV cache with XLA's dense attention, on GPU as here (model/attention.py).
  sampler = make_sampler(cfg, max_new_tokens=N, stop_ids=(1,), samples_per_prompt=G, pad_id=0, mesh=mesh,
                         param_shardings=shardings.params)
  jitted = sampler.jitted  # make_sampler's own program (sharding.jit.with_mesh keeps it), for .lower()
  batch_axes = dict(rules_for(mesh))["act_batch"]
  row, rows_, rep = (NamedSharding(mesh, P(batch_axes, None)), NamedSharding(mesh, P(batch_axes)),
                     NamedSharding(mesh, P()))
  args = (params, _sds((Pn, rl.max_prompt_len), jnp.int32, row), _sds((Pn,), jnp.int32, rows_),
          _sds((2,), jnp.uint32, rep), _sds((), jnp.float32, rep), _sds((), jnp.float32, rep),
          _sds((), jnp.int32, rep))
  progs.append(Program("rollout", _lower(jitted, mesh, *args),
                       mem_lib.sampler_memory(cfg, sizes, Pn * G, rl.max_prompt_len, N),
                       f"{Pn} prompts x {G} samples, {rl.max_prompt_len} + {N} tokens"))
  logp = rl_step.jit_logprobs(cfg, mesh, shardings.params, rl.temperature).jitted
  layout = {k: batch[k] for k in ("tokens", "segment_ids", "positions")}
  progs.append(Program("logprobs", _lower(logp, mesh, params, layout),
                       mem_lib.forward_memory(cfg, sizes, B, T), f"{B} x {T}"))
  return progs


def reward_model_programs(c: ConfigDict, mesh, cfg) -> list[Program]:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from granite_jax.ckpt.manager import abstract_like
  from granite_jax.rl.reward_model import bt_loss, init_rm_params, rm_scores
  from granite_jax.sharding.rules import rules_for
  from granite_jax.train import state as state_lib
  from granite_jax.train.state import TrainState
  from granite_jax.train.step import batch_sharding
  sizes = stages.mesh_sizes(c)
  tx, schedule = _optimizer(c)
  rep = NamedSharding(mesh, P())
  p_shard = {"backbone": state_lib.param_shardings(cfg, mesh), "head": {"w": rep, "b": rep}}
  abstract_p = jax.eval_shape(lambda: init_rm_params(cfg, jax.random.PRNGKey(0)))
  opt_shard = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, abstract_p), p_shard,
                                    transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=p_shard, opt_state=opt_shard)
  make = lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx.init(p))
  state = abstract_like(jax.eval_shape(make, abstract_p), shardings)
  rules, bs = rules_for(mesh), batch_sharding(mesh)

  def loss(params, tokens, seg):
    r = rm_scores(params, tokens, seg, cfg=cfg)
    n = tokens.shape[0] // 2
    return bt_loss(r[:n], r[n:])

  def step_fn(state, tokens, seg):  # rl/reward_model_train.py's step
    with nn.logical_axis_rules(rules):
      (l, acc), g = jax.value_and_grad(loss, has_aux=True)(state.params, tokens, seg)
    updates, opt = tx.update(g, state.opt_state, state.params)
    new = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt)
    return new, dict(loss=l, accuracy=acc, grad_norm=optax.global_norm(g), lr=schedule(state.step))

  rows, T = 2 * c.train.global_batch, c.train.seq_len
  train = jax.jit(step_fn, in_shardings=(shardings, bs, bs), out_shardings=(shardings, rep),
                  donate_argnums=(0,))
  tok = _sds((rows, T), jnp.int32, bs)
  no_logits = dataclasses.replace(mem_lib.train_memory(cfg, sizes, rows, T), logits=0.0)

  def score_fn(params, tokens, seg):
    with nn.logical_axis_rules(rules):
      return rm_scores(params, tokens, seg, cfg=cfg)
  score = jax.jit(score_fn, in_shardings=(p_shard, bs, bs), out_shardings=NamedSharding(mesh, P(bs.spec[0])))
  # Scoring an RL step's rollouts (64 prompts x 16 samples at the RL context, configs/rl_base.py).
  from configs.rl_base import REPORT_BATCH, REPORT_CONTEXT
  s_tok = _sds((REPORT_BATCH, REPORT_CONTEXT), jnp.int32, bs)
  return [Program("train", _lower(train, mesh, state, tok, tok), no_logits,
                  f"{c.train.global_batch} pairs = {rows} x {T}"),
          Program("score", _lower(score, mesh, state.params, s_tok, s_tok),
                  mem_lib.forward_memory(cfg, sizes, REPORT_BATCH, REPORT_CONTEXT, logits=False),
                  f"{REPORT_BATCH} x {REPORT_CONTEXT} rollouts")]


def programs(c: ConfigDict, mesh) -> list[Program]:
  cfg = cpu_model(c)
  stages._configs()  # configs/ importable (the reward model scores at configs/rl_base.py's shapes)
  build = rl_programs if c.get("rl") else reward_model_programs if c.get("reward_model") else train_programs
  progs, est = build(c, mesh, cfg), estimates(c)
  for p in progs:  # one definition of each estimate: the planner's, as `estimates` gives it
    p.estimate = est[p.name]
  return progs


def estimates(c: ConfigDict) -> dict[str, mem_lib.Memory]:
  """The planner's per-device bytes of each program, without JAX devices or compiles."""
  cfg, sizes = cpu_model(c), stages.mesh_sizes(c)
  B, T, acc = c.train.global_batch, c.train.seq_len, c.train.grad_accum
  if c.get("rl"):
    rl = c.rl
    return {"train": mem_lib.train_memory(dataclasses.replace(cfg, loss_chunk=0), sizes, B, T, acc,
                                          logit_buffers=mem_lib.RL_LOGIT_BUFFERS),
            "rollout": mem_lib.sampler_memory(cfg, sizes,
                                              rl.prompts_per_step * rl.samples_per_prompt,
                                              rl.max_prompt_len, rl.max_response_len),
            "logprobs": mem_lib.forward_memory(cfg, sizes, B, T)}
  if c.get("reward_model"):
    stages._configs()
    from configs.rl_base import REPORT_BATCH, REPORT_CONTEXT
    return {"train": dataclasses.replace(mem_lib.train_memory(cfg, sizes, 2 * B, T), logits=0.0),
            "score": mem_lib.forward_memory(cfg, sizes, REPORT_BATCH, REPORT_CONTEXT, logits=False)}
  return {"train": mem_lib.train_memory(cfg, sizes, B, T, acc)}

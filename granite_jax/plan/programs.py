"""Every jitted program of a stage, at its real shapes, from abstract inputs; and the planner's
estimate of each. Nothing is allocated: inputs are `jax.ShapeDtypeStruct`s carrying the stage's
shardings, and `Program.lower()` only traces. Each program is built the way its trainer builds
it, from the same public pieces: the step functions (train/step.py `train_step`, rl/step.py
`rl_train_step`, rl/reward_model_train.py `rm_step`) jitted by the run scaffold's `session.jit_step`,
and the factories `make_sampler`, `rl_step.jit_logprobs` and `reward_model.jit_rm_score`.
tests/plan/test_programs_match.py checks that the lowered text equals what the trainers run.

Per stage kind: pretraining, LCE and SFT: `train`; reward model: `train` (Bradley-Terry on
chosen + rejected rows) and `score` (its scoring call at the RLHF stage's shape); RL: `train`
(GRPO/DAPO step), `rollout` (prefill + decode with the KV cache, `samples_per_prompt` rows per
prompt: with `rl.rollout_axes` the fast engine rl/loop.py runs, infer/engine.py, as its pieces at
their memory peaks (`Engine.pieces`: the reshard to the rollout layout, the prefill of every
prompt once, a decode chunk over every row with the largest generated KV, the first compaction),
reported as the highest of them; without, the single sharded sampler program), `logprobs` (old /
reference log-probs of the rollout batch in train layout), and for a
stage scored by a reward model (RLHF) `score`: one call of rl/rm_scorer.py's packed rows.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import types
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
  args: tuple = ()                 # the abstract arguments it is lowered with


def cpu_model(c: ConfigDict):
  return on_cpu(stages.model(c))


def on_cpu(cfg):
  return dataclasses.replace(cfg, attention_impl=CPU_IMPL.get(cfg.attention_impl, cfg.attention_impl))


def reward_model_of(c: ConfigDict):
  """(ModelConfig, row length) of the reward model an RL stage scores with, or None. Its workdir's
  (rl.reward_model) when it exists; else, for RLHF's chat prompts, one the size of the policy at
  the stage's context (configs/reward_model.py trains it from the same SFT checkpoint)."""
  from granite_jax.rl.reward_model import read_rm_config
  rl = c.get("rl") or {}
  wd = rl.get("reward_model", "")
  if wd and os.path.isfile(os.path.join(wd, "model_config.json")):
    cfg, T = read_rm_config(wd)
    return on_cpu(cfg), T
  if wd or rl.get("demo_tasks") == "chat":
    return cpu_model(c), c.train.seq_len
  return None


def rollout_axes(c: ConfigDict) -> tuple[str, ...]:
  """The RL stage's rollout layout: mesh axes used as tensor-parallel ways (configs/gb200.py
  ROLLOUT_AXES); () keeps the training shardings. rl/loop.py passes the same to make_sampler."""
  return tuple((c.get("rl") or {}).get("rollout_axes", ()) or ())


def _batch_shards(c: ConfigDict) -> int:
  sizes = stages.mesh_sizes(c)
  return sizes.get("data", 1) * sizes.get("fsdp", 1)  # the act_batch axes (sharding/rules.py)


def _rlhf(c: ConfigDict) -> ConfigDict:
  """The RLHF stage at `c`'s preset: whose rollouts a reward model scores."""
  import importlib
  stages._configs()
  return importlib.import_module("configs.rlhf").get_config(c.preset)


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


def _program(name, jitted, mesh, args, est, shapes) -> Program:
  return Program(name, _lower(jitted, mesh, *args), est, shapes, tuple(args))


def device_bytes(abstract) -> int:
  """Per-device bytes of abstract arrays (their shards where they carry a sharding)."""
  import math

  import jax
  import numpy as np
  n = 0
  for a in jax.tree.leaves(abstract):
    sh = getattr(a, "sharding", None)
    shape = sh.shard_shape(a.shape) if sh is not None else a.shape
    n += math.prod(shape) * np.dtype(a.dtype).itemsize
  return n


class PiecesLowered:
  """Several jitted pieces lowered as one program of the dry run (the rollout engine's, whose
  host loop calls them one after another): its text is theirs, in order; compiled, its memory is
  the piece with the highest peak, counting the buffers of the call live beside that piece that
  are not its arguments (the training parameters beside the decode, the decode parameters beside
  a compaction). `pieces` ({name: peak bytes}) and `peak_piece` come with memory_analysis()."""

  def __init__(self, parts):
    self.parts = parts  # [(name, jax.stages.Lowered, resident bytes)]

  def as_text(self) -> str:
    return "\n".join(f"// piece {n}\n{lo.as_text()}" for n, lo, _ in self.parts)

  def compile(self):
    compiled = [(n, lo.compile(), r) for n, lo, r in self.parts]
    return types.SimpleNamespace(memory_analysis=lambda: _peak_piece(compiled))


def _peak_piece(compiled):
  peak = lambda ma: ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes \
      + ma.temp_size_in_bytes
  mas = {n: (c.memory_analysis(), r) for n, c, r in compiled}
  pieces = {n: peak(ma) + r for n, (ma, r) in mas.items()}
  name = max(pieces, key=pieces.get)
  ma, r = mas[name]
  return types.SimpleNamespace(argument_size_in_bytes=ma.argument_size_in_bytes + r,
                               output_size_in_bytes=ma.output_size_in_bytes,
                               alias_size_in_bytes=ma.alias_size_in_bytes,
                               temp_size_in_bytes=ma.temp_size_in_bytes, pieces=pieces, peak_piece=name)


def engine_program(name, pieces, mesh, est, shapes) -> Program:
  """The rollout engine's pieces (infer/engine.py `Engine.pieces`) as one program: lowered each
  from its abstract arguments under the mesh; the dry run's figure is the highest piece's."""
  def lower():
    from granite_jax.sharding.jit import mesh_context
    with mesh_context(mesh):
      return PiecesLowered([(n, p.jitted.lower(*p.args), device_bytes(p.resident))
                            for n, p in pieces.items()])
  return Program(name, lower, est, shapes, tuple((n, p.args) for n, p in pieces.items()))


def train_programs(c: ConfigDict, mesh, cfg) -> list[Program]:
  import jax.numpy as jnp

  from granite_jax.model import Granite
  from granite_jax.ops import context_parallel as cp
  from granite_jax.train import session
  from granite_jax.train import step as step_lib
  tx, schedule = _optimizer(c)
  state, shardings = _abstract_state(cfg, mesh, tx)
  B, T, acc = c.train.global_batch, c.train.seq_len, c.train.grad_accum
  bs = step_lib.batch_sharding(mesh)
  keys = ("tokens", "segment_ids", "positions") + (("loss_mask",) if c.data.get("kind") == "sft" else ())
  batch = {k: _sds((B, T), jnp.int32, bs) for k in keys}
  # train/loop.py's trainer: its step function, jitted by the run scaffold.
  shards = cp.context_size(mesh)[1] if cfg.attention_impl in ("ring", "allgather") else 1
  step_fn = functools.partial(step_lib.train_step, model=Granite(cfg), tx=tx, schedule=schedule,
                              grad_accum=acc, context_shards=shards)
  fn = session.jit_step(step_fn, mesh, shardings, bs).jitted
  est = mem_lib.train_memory(cfg, stages.mesh_sizes(c), B, T, acc)
  shapes = f"{B} x {T}" + (f", {acc} micro" if acc > 1 else "")
  return [_program("train", fn, mesh, (state, batch), est, shapes)]


def score_program(c: ConfigDict, mesh, rm_cfg, T: int, rows: int, rollouts: int) -> Program:
  """One scoring call of rl/rm_scorer.py: `rows` packed rows of T tokens."""
  import jax
  import jax.numpy as jnp

  from granite_jax.ckpt.manager import abstract_like
  from granite_jax.rl import reward_model as rm_lib
  abstract = jax.eval_shape(lambda: rm_lib.init_rm_params(rm_cfg, jax.random.PRNGKey(0)))
  params = abstract_like(abstract, rm_lib.rm_param_shardings(rm_cfg, mesh))
  tok = _sds((rows, T), jnp.int32, rm_lib.batch_sharding(mesh))
  est = mem_lib.forward_memory(rm_cfg, stages.mesh_sizes(c), rows, T, logits=False)
  return _program("score", rm_lib.jit_rm_score(rm_cfg, mesh).jitted, mesh, (params, tok, tok, tok), est,
                  f"{rollouts} rollouts packed, {rows} x {T} a call")


def rl_programs(c: ConfigDict, mesh, cfg) -> list[Program]:
  import jax.numpy as jnp

  from granite_jax.infer.engine import Engine
  from granite_jax.infer.sampler import make_sampler, sampler_shardings
  from granite_jax.model import Granite
  from granite_jax.rl import step as rl_step
  from granite_jax.rl.reward_model import batch_shards, score_rows
  from granite_jax.train import session
  rl, sizes = c.rl, stages.mesh_sizes(c)
  tx, schedule = _optimizer(c)
  state, shardings = _abstract_state(cfg, mesh, tx)
  B, T, acc = c.train.global_batch, c.train.seq_len, c.train.grad_accum
  loss_kw = dict(eps_low=rl.eps_low, eps_high=rl.eps_high, kl_coef=rl.kl_coef, agg=rl.agg,
                 dual_clip=rl.dual_clip or None)
  if rl.get("off_policy_steps", 0):
    loss_kw["tis_cap"] = rl.tis_cap
  # The train batch at its largest (B rows of T: packing only ever needs fewer rows), with the
  # fields the run's settings need (no old log-probs at ppo_epochs=1, rl/step.py batch_fields).
  fields = rl_step.batch_fields(rl)
  sh = rl_step.rl_batch_shardings(mesh, fields)
  batch = rl_step.abstract_batch(mesh, fields, B, T)
  # rl/loop.py's trainer: its step function, jitted by the run scaffold.
  step_fn = functools.partial(rl_step.rl_train_step, model=Granite(cfg), tx=tx, schedule=schedule,
                              loss_kw=loss_kw, temperature=rl.temperature, grad_accum=acc,
                              micro_rows=B // acc)
  train = session.jit_step(step_fn, mesh, shardings, sh).jitted
  # The RL loss reads full [b, t, V] log-probs (rl/loss.py), not the chunked cross-entropy.
  train_est = mem_lib.train_memory(dataclasses.replace(cfg, loss_chunk=0), sizes, B, T, acc)
  progs = [_program("train", train, mesh, (state, batch), train_est, f"{B} x {T}, {acc} micro")]

  params = state.params
  Pn, N, G = rl.prompts_per_step, rl.max_response_len, rl.samples_per_prompt
  # The prefill runs the training kernel (the blockwise stand-in for cuDNN here); 1-token decode
  # steps attend over the KV cache with XLA's dense attention, on GPU as here (model/attention.py).
  # rl/loop.py's sampler, made as it makes it: with rl.rollout_axes (configs/gb200.py) the fast
  # engine in the rollout layout (infer/engine.py), whose memory peaks are lowered piece by piece
  # (`Engine.pieces`); a mesh without rollout axes keeps the single sharded program.
  axes = rollout_axes(c)
  sampler = make_sampler(cfg, max_new_tokens=N, stop_ids=(1,), samples_per_prompt=G, pad_id=0, mesh=mesh,
                         param_shardings=shardings.params, engine="fast", rollout_axes=axes,
                         max_rows=rl.get("rollout_rows", 0) or None)
  shapes = f"{Pn} prompts x {G} samples, {rl.max_prompt_len} + {N} tokens"
  est = mem_lib.sampler_memory(cfg, sizes, Pn * G, rl.max_prompt_len, N, rollout_axes=axes, prompts=Pn)
  if isinstance(sampler, Engine):
    pieces = sampler.pieces(params, Pn, rl.max_prompt_len, rl.temperature, rl.top_p, rl.top_k)
    progs.append(engine_program("rollout", pieces, mesh, est, shapes + " (engine)"))
  else:
    row, rows_, rep = sampler_shardings(mesh, axes)
    args = (params, _sds((Pn, rl.max_prompt_len), jnp.int32, row), _sds((Pn,), jnp.int32, rows_),
            _sds((2,), jnp.uint32, rep), _sds((), jnp.float32, rep), _sds((), jnp.float32, rep),
            _sds((), jnp.int32, rep))
    progs.append(_program("rollout", sampler.jitted, mesh, args, est, shapes))
  logp = rl_step.jit_logprobs(cfg, mesh, shardings.params, rl.temperature).jitted
  layout = {k: batch[k] for k in ("tokens", "segment_ids", "positions")}
  progs.append(_program("logprobs", logp, mesh, (params, layout),
                        mem_lib.forward_memory(cfg, sizes, B, T), f"{B} x {T}"))
  rm = reward_model_of(c)
  if rm is not None:  # RLHF: the reward model scores the rollout batch (rl/rm_scorer.py)
    progs.append(score_program(c, mesh, *rm, score_rows(c, batch_shards(mesh)), rollouts=B))
  return progs


def reward_model_programs(c: ConfigDict, mesh, cfg) -> list[Program]:
  import jax
  import jax.numpy as jnp

  from granite_jax.ckpt.manager import abstract_like
  from granite_jax.rl import reward_model_train as rm_train
  from granite_jax.rl.reward_model import batch_shards, init_rm_params, score_rows
  from granite_jax.train import session
  from granite_jax.train import state as state_lib
  from granite_jax.train.state import TrainState
  from granite_jax.train.step import batch_sharding
  tx, schedule = _optimizer(c)
  # rl/reward_model_train.py's trainer: its shardings and step function, jitted by the run scaffold.
  job = types.SimpleNamespace(mesh=mesh, model_cfg=cfg, tx=tx, shardings=state_lib.state_shardings(cfg, mesh, tx))
  shardings = rm_train.rm_shardings(job)
  abstract_p = jax.eval_shape(lambda: init_rm_params(cfg, jax.random.PRNGKey(0)))
  make = lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx.init(p))  # noqa: E731
  state = abstract_like(jax.eval_shape(make, abstract_p), shardings)
  bs = batch_sharding(mesh)
  step_fn = functools.partial(rm_train.rm_step, cfg=cfg, tx=tx, schedule=schedule)
  train = session.jit_step(step_fn, mesh, shardings, bs).jitted
  rows, T = 2 * c.train.global_batch, c.train.seq_len
  batch = {k: _sds((rows, T), jnp.int32, bs) for k in ("tokens", "segment_ids")}
  est = estimates(c)
  # Scoring: the RLHF stage's call shape at this model's length, on this stage's mesh.
  rlhf = _rlhf(c)
  return [_program("train", train, mesh, (state, batch), est["train"], f"{c.train.global_batch} pairs = {rows} x {T}"),
          score_program(c, mesh, cfg, T, score_rows(rlhf, batch_shards(mesh)), rollouts=rlhf.train.global_batch)]


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
  from granite_jax.rl.reward_model import score_rows
  if c.get("rl"):
    rl = c.rl
    out = {"train": mem_lib.train_memory(dataclasses.replace(cfg, loss_chunk=0), sizes, B, T, acc,
                                         logit_buffers=mem_lib.RL_LOGIT_BUFFERS),
           "rollout": mem_lib.sampler_memory(cfg, sizes,
                                             rl.prompts_per_step * rl.samples_per_prompt,
                                             rl.max_prompt_len, rl.max_response_len,
                                             rollout_axes=rollout_axes(c), prompts=rl.prompts_per_step),
           "logprobs": mem_lib.forward_memory(cfg, sizes, B, T)}
    rm = reward_model_of(c)
    if rm is not None:
      out["score"] = mem_lib.forward_memory(rm[0], sizes, score_rows(c, _batch_shards(c)), rm[1], logits=False)
    return out
  if c.get("reward_model"):
    rows = score_rows(_rlhf(c), _batch_shards(c))
    return {"train": dataclasses.replace(mem_lib.train_memory(cfg, sizes, 2 * B, T), logits=0.0),
            "score": mem_lib.forward_memory(cfg, sizes, rows, T, logits=False)}
  return {"train": mem_lib.train_memory(cfg, sizes, B, T, acc)}

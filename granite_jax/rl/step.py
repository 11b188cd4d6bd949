"""The RL train step: `state, batch -> state, metrics`, jitted once with explicit shardings.

Batch (train layout, rollout.py: packed rows of T tokens, or right-padded one sequence a row):
  tokens, segment_ids, positions: int32 [B, T]  (segment 1, 2, ... per sequence of a row, 0 = pad;
                                                  positions restart at each sequence)
  mask:         float [B, T]  1 at position t when tokens[t+1] is a trained response token
  advantages:   float [B, T]  the sequence's advantage on its tokens (or [B]: one per row)
  sampler_logp: float [B, T]  the sampler's log p(tokens[t+1]) at position t
  old_logp:     float [B, T]  optional: the current policy's, from a separate forward (rollout.py),
                              present when ppo_epochs > 1 or rollouts are off-policy. Absent, the
                              step's own log-probs stand in (old = stop_gradient(logp): ratio
                              exactly 1, the clip inactive, the same gradient without the forward)
  ref_logp:     float [B, T]  optional (kl_coef == 0: absent): the frozen reference's
The policy log-probs and entropy are recomputed from the logits; `policy_loss`
gets the token and sequence counts of the *whole* batch, so micro-batches and
data-parallel shards sum to exactly the full-batch gradient. The row count B may vary
from batch to batch (packing, rl/packing.py): with `micro_rows` the step scans over
max(1, B / micro_rows) micro-batches (one compile per bucketed B). A non-finite loss
or gradient norm never reaches the parameters (as in train/step.py).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from granite_jax.model import Granite, ModelConfig
from granite_jax.rl.loss import count_sequences, policy_loss, token_logprobs
from granite_jax.sharding.jit import with_mesh
from granite_jax.sharding.rules import rules_for
from granite_jax.train.state import TrainState
from granite_jax.train.step import batch_sharding, split_micro

LAYOUT_FIELDS = ("tokens", "segment_ids", "positions")
ROW_FIELDS = LAYOUT_FIELDS + ("mask", "advantages", "sampler_logp", "old_logp", "ref_logp")
INT_FIELDS = LAYOUT_FIELDS


def batch_fields(rl) -> tuple[str, ...]:
  """The fields of an RL train batch under config `rl` (all [B, T]; rollout.py builds them)."""
  drop = set()
  if not needs_old_logp(rl):
    drop.add("old_logp")
  if not rl.kl_coef:
    drop.add("ref_logp")
  return tuple(k for k in ROW_FIELDS if k not in drop)


def needs_old_logp(rl) -> bool:
  """A separate old-log-prob forward: for several optimizer steps on one batch (the ratio moves
  off 1) or for off-policy rollouts (the importance weights need the current policy's)."""
  return getattr(rl, "ppo_epochs", 1) > 1 or bool(getattr(rl, "off_policy_steps", 0))


def response_logprobs(params, batch, model: Granite, temperature: float = 1.0):
  """(log p(tokens[t+1]) [B, T], entropy [B, T]) of the tempered policy at every position."""
  logits_BTV = model.apply({"params": params}, batch["tokens"], segment_ids=batch["segment_ids"],
                           positions=batch["positions"])
  targets_BT = jnp.concatenate([batch["tokens"][:, 1:], jnp.zeros_like(batch["tokens"][:, :1])], axis=1)
  return token_logprobs(logits_BTV, targets_BT, temperature)


def _loss_fn(params, mb, model, loss_kw, num_tokens, num_seqs, temperature):
  logp_BT, ent_BT = response_logprobs(params, mb, model, temperature)
  old_BT = mb["old_logp"] if "old_logp" in mb else jax.lax.stop_gradient(logp_BT)
  loss, m = policy_loss(logp_BT, old_BT, mb.get("ref_logp"), mb["advantages"], mb["mask"],
                        entropy_BT=jax.lax.stop_gradient(ent_BT), num_tokens=num_tokens,
                        num_seqs=num_seqs, seq_ids_BT=mb["segment_ids"],
                        sampler_logp_BT=mb.get("sampler_logp"), **loss_kw)
  n = m.pop("num_tokens")
  return loss, dict({k: v * n for k, v in m.items()}, n=n)  # sums, to combine micro-batches


def rl_train_step(state: TrainState, batch, *, model: Granite, tx, schedule, loss_kw: dict,
                  temperature: float = 1.0, grad_accum: int = 1, micro_rows: int | None = None):
  """`micro_rows`: rows of one micro-batch; the batch's rows decide how many (`grad_accum` then
  unused). Without it, `grad_accum` micro-batches."""
  if micro_rows:
    rows = batch["mask"].shape[0]
    grad_accum = max(1, rows // micro_rows)
    if rows % grad_accum:
      raise ValueError(f"{rows} rows do not split into micro-batches of {micro_rows}")
  mask_BT = batch["mask"].astype(jnp.float32)
  num_tokens = jnp.maximum(jnp.sum(mask_BT), 1.0)
  num_seqs = jnp.maximum(count_sequences(mask_BT, batch["segment_ids"]), 1)
  grad_fn = jax.value_and_grad(
      lambda p, mb: _loss_fn(p, mb, model, loss_kw, num_tokens, num_seqs, temperature), has_aux=True)
  if grad_accum == 1:
    (loss, sums), grads = grad_fn(state.params, batch)
  else:
    micro = jax.tree.map(lambda x: split_micro(x, grad_accum), batch)

    def body(carry, mb):
      (l, s), g = grad_fn(state.params, mb)
      acc_l, acc_s, acc_g = carry
      return (acc_l + l, jax.tree.map(jnp.add, acc_s, s), jax.tree.map(jnp.add, acc_g, g)), None

    zero_s = jax.eval_shape(lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro))[0][1])
    zero_s = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero_s)
    init = (jnp.zeros((), jnp.float32), zero_s, jax.tree.map(jnp.zeros_like, state.params))
    (loss, sums, grads), _ = jax.lax.scan(body, init, micro)
  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  safe_grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
  updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
  new = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                   opt_state=opt_state)
  new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state).replace(step=state.step + 1)
  n = jnp.maximum(sums.pop("n"), 1.0)
  metrics = {k: v / n for k, v in sums.items()}
  metrics.update(loss=loss, grad_norm=grad_norm, lr=schedule(state.step), n_tokens=num_tokens,
                 skipped=1 - ok.astype(jnp.int32))
  return new, metrics


def rl_batch_shardings(mesh: Mesh, fields=ROW_FIELDS) -> dict:
  """Every field [B, T] (rows over the data axes); `fields`: batch_fields(rl) of the run."""
  rows = batch_sharding(mesh)
  return {k: rows for k in fields}


def abstract_batch(mesh: Mesh, fields, rows: int, T: int) -> dict:
  """ShapeDtypeStructs of a batch of `rows` x T with its shardings (the dry run's train batch)."""
  sh = rl_batch_shardings(mesh, fields)
  return {k: jax.ShapeDtypeStruct((rows, T), jnp.int32 if k in INT_FIELDS else jnp.float32, sharding=sh[k])
          for k in fields}


def jit_rl_train_step(cfg: ModelConfig, mesh: Mesh, tx, schedule, state_shardings: TrainState, *,
                      loss_kw: dict, temperature: float = 1.0, grad_accum: int = 1,
                      micro_rows: int | None = None, fields=ROW_FIELDS) -> Callable:
  """`loss_kw`: eps_low, eps_high, kl_coef, agg, dual_clip, tis_cap (see rl/loss.py)."""
  model = Granite(cfg)

  def step(state, batch):
    with nn.logical_axis_rules(rules_for(mesh)):
      return rl_train_step(state, batch, model=model, tx=tx, schedule=schedule, loss_kw=dict(loss_kw),
                           temperature=temperature, grad_accum=grad_accum, micro_rows=micro_rows)

  jitted = jax.jit(step, in_shardings=(state_shardings, rl_batch_shardings(mesh, fields)),
                   out_shardings=(state_shardings, NamedSharding(mesh, P())), donate_argnums=(0,))
  return with_mesh(jitted, mesh)


def jit_logprobs(cfg: ModelConfig, mesh: Mesh, param_shardings, temperature: float = 1.0) -> Callable:
  """`(params, batch) -> logp [B, T]`: old (current policy) and reference log-probs in train layout."""
  model = Granite(cfg)
  rows = batch_sharding(mesh)

  def fn(params, batch):
    with nn.logical_axis_rules(rules_for(mesh)):
      return response_logprobs(params, batch, model, temperature)[0]

  shard = {k: rows for k in LAYOUT_FIELDS}
  jitted = jax.jit(fn, in_shardings=(param_shardings, shard), out_shardings=rows)
  return with_mesh(jitted, mesh)

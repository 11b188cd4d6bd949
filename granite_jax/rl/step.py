"""The RL train step: `state, batch -> state, metrics`, jitted once with explicit shardings.

Batch (train layout, right-padded prompt + response, one sequence per row):
  tokens, segment_ids, positions: int32 [B, T]
  mask:        float [B, T]  1 at position t when tokens[t+1] is a trained response token
  advantages:  float [B]
  old_logp, ref_logp: float [B, T]  log p(tokens[t+1]) at position t (rollout.py)
The policy log-probs and entropy are recomputed from the logits; `policy_loss`
gets the token and sequence counts of the *whole* batch, so micro-batches and
data-parallel shards sum to exactly the full-batch gradient. A non-finite loss
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
from granite_jax.rl.loss import policy_loss, token_logprobs
from granite_jax.sharding.jit import with_mesh
from granite_jax.sharding.rules import rules_for
from granite_jax.train.state import TrainState
from granite_jax.train.step import batch_sharding, split_micro

ROW_FIELDS = ("tokens", "segment_ids", "positions", "mask", "old_logp", "ref_logp")
# Metrics of `policy_loss` that are token means: combined over micro-batches weighted by tokens.
_TOKEN_MEANS = ("pg_loss", "kl", "ratio", "clip_frac_low", "clip_frac_high", "dual_clip_frac", "entropy")


def response_logprobs(params, batch, model: Granite, temperature: float = 1.0):
  """(log p(tokens[t+1]) [B, T], entropy [B, T]) of the tempered policy at every position."""
  logits_BTV = model.apply({"params": params}, batch["tokens"], segment_ids=batch["segment_ids"],
                           positions=batch["positions"])
  targets_BT = jnp.concatenate([batch["tokens"][:, 1:], jnp.zeros_like(batch["tokens"][:, :1])], axis=1)
  return token_logprobs(logits_BTV, targets_BT, temperature)


def _loss_fn(params, mb, model, loss_kw, num_tokens, num_seqs, temperature):
  logp_BT, ent_BT = response_logprobs(params, mb, model, temperature)
  loss, m = policy_loss(logp_BT, mb["old_logp"], mb["ref_logp"], mb["advantages"], mb["mask"],
                        entropy_BT=jax.lax.stop_gradient(ent_BT), num_tokens=num_tokens,
                        num_seqs=num_seqs, **loss_kw)
  n = m.pop("num_tokens")
  return loss, dict({k: v * n for k, v in m.items()}, n=n)  # sums, to combine micro-batches


def rl_train_step(state: TrainState, batch, *, model: Granite, tx, schedule, loss_kw: dict,
                  temperature: float = 1.0, grad_accum: int = 1):
  mask_BT = batch["mask"].astype(jnp.float32)
  num_tokens = jnp.maximum(jnp.sum(mask_BT), 1.0)
  num_seqs = jnp.maximum(jnp.sum(jnp.any(mask_BT > 0, axis=-1)), 1)
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


def rl_batch_shardings(mesh: Mesh) -> dict:
  rows = batch_sharding(mesh)
  out = {k: rows for k in ROW_FIELDS}
  out["advantages"] = NamedSharding(mesh, P(rows.spec[0]))
  return out


def jit_rl_train_step(cfg: ModelConfig, mesh: Mesh, tx, schedule, state_shardings: TrainState, *,
                      loss_kw: dict, temperature: float = 1.0, grad_accum: int = 1) -> Callable:
  """`loss_kw`: eps_low, eps_high, kl_coef, agg, dual_clip (see rl/loss.py)."""
  model = Granite(cfg)

  def step(state, batch):
    with nn.logical_axis_rules(rules_for(mesh)):
      return rl_train_step(state, batch, model=model, tx=tx, schedule=schedule, loss_kw=dict(loss_kw),
                           temperature=temperature, grad_accum=grad_accum)

  jitted = jax.jit(step, in_shardings=(state_shardings, rl_batch_shardings(mesh)),
                   out_shardings=(state_shardings, NamedSharding(mesh, P())), donate_argnums=(0,))
  return with_mesh(jitted, mesh)


def jit_logprobs(cfg: ModelConfig, mesh: Mesh, param_shardings, temperature: float = 1.0) -> Callable:
  """`(params, batch) -> logp [B, T]`: old (current policy) and reference log-probs in train layout."""
  model = Granite(cfg)
  rows = batch_sharding(mesh)

  def fn(params, batch):
    with nn.logical_axis_rules(rules_for(mesh)):
      return response_logprobs(params, batch, model, temperature)[0]

  shard = {k: rows for k in ("tokens", "segment_ids", "positions")}
  jitted = jax.jit(fn, in_shardings=(param_shardings, shard), out_shardings=rows)
  return with_mesh(jitted, mesh)

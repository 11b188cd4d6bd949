"""The LM train step: `state, batch -> state, metrics`, jitted once with explicit shardings.

Loss is next-token cross-entropy summed over trainable tokens and divided by
the number of trainable tokens in the *global* batch, so gradient
accumulation and data-parallel splits give the same gradient.
A non-finite loss or gradient norm never reaches the parameters: the update
is skipped and `skipped=1` is reported.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from granite_jax.model import Granite, ModelConfig
from granite_jax.ops import context_parallel as cp
from granite_jax.sharding.jit import with_mesh
from granite_jax.sharding.rules import rules_for
from granite_jax.train import loss as loss_lib
from granite_jax.train.state import TrainState

Batch = dict[str, jax.Array]  # tokens, segment_ids, positions: int32 [B, T]; optional loss_mask


def next_token_targets(batch: Batch):
  """targets_BT[t] = tokens[t+1] where t+1 continues t's segment; weights_BT marks those."""
  tokens, seg = batch["tokens"], batch["segment_ids"]
  targets_BT = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  next_seg = jnp.concatenate([seg[:, 1:], jnp.zeros_like(seg[:, :1])], axis=1)
  weights_BT = ((seg == next_seg) & (seg != 0)).astype(jnp.float32)
  if "loss_mask" in batch:  # e.g. SFT: only assistant tokens are predicted
    mask = batch["loss_mask"].astype(jnp.float32)
    weights_BT *= jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  return targets_BT, weights_BT


def loss_sums(params, batch: Batch, model: Granite, context_shards: int = 1):
  """(sum of token losses, number of trainable tokens) for one (micro)batch.

  With context parallelism the loss chunks stay inside each shard's part of the sequence.
  """
  if "targets" in batch:  # computed before a permutation (context_balanced)
    targets_BT, weights_BT = batch["targets"], batch["weights"]
  else:
    targets_BT, weights_BT = next_token_targets(batch)
  cfg, T = model.cfg, batch["tokens"].shape[1]
  kw = dict(segment_ids=batch["segment_ids"], positions=batch["positions"])
  groups = context_shards if T % (context_shards * max(cfg.loss_chunk, 1)) == 0 else 1
  if cfg.loss_chunk and T > cfg.loss_chunk and T % (groups * cfg.loss_chunk) == 0:
    hidden_BTD = model.apply({"params": params}, batch["tokens"], return_hidden=True, **kw)
    return loss_lib.chunked_xent(hidden_BTD, loss_lib.output_weight_DV(params, cfg), targets_BT, weights_BT,
                                 cfg, cfg.loss_chunk, groups)
  logits_BTV = model.apply({"params": params}, batch["tokens"], **kw)
  return loss_lib.xent_sums(logits_BTV, targets_BT, weights_BT)


def context_balanced(batch: Batch, n_shards: int) -> Batch:
  """Targets in the true order, then every array in causal load-balance order.

  The loss is a sum over tokens, so it does not depend on the order.
  """
  targets_BT, weights_BT = next_token_targets(batch)
  batch = {k: v for k, v in batch.items() if k != "loss_mask"}  # folded into weights
  perm = cp.load_balance_permutation(batch["tokens"].shape[1], n_shards)
  return {k: cp.apply(v, perm) for k, v in dict(batch, targets=targets_BT, weights=weights_BT).items()}


def split_micro(x_B, grad_accum: int):
  """[B, ...] -> [grad_accum, B // grad_accum, ...], micro-batch i = rows i, i + A, i + 2A, ...

  Strided, not contiguous: the batch axis is sharded in contiguous blocks, so every device keeps
  its own rows and the scanned axis is unsharded (a contiguous split would shard the scanned
  axis, costing a reshuffle; XLA 0.12's verifier rejects the dynamic slice it makes at 8B RL)."""
  return jnp.swapaxes(x_B.reshape(x_B.shape[0] // grad_accum, grad_accum, *x_B.shape[1:]), 0, 1)


def _grads(params, batch: Batch, model: Granite, grad_accum: int, context_shards: int = 1):
  grad_fn = jax.value_and_grad(lambda p, b: loss_sums(p, b, model, context_shards), has_aux=True)
  if grad_accum == 1:
    (loss_sum, n), g = grad_fn(params, batch)
    return loss_sum, n, g
  micro = jax.tree.map(lambda x: split_micro(x, grad_accum), batch)

  def body(carry, mb):
    loss_sum, n, g = carry
    (l, k), gi = grad_fn(params, mb)
    return (loss_sum + l, n + k, jax.tree.map(jnp.add, g, gi)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (loss_sum, n, g), _ = jax.lax.scan(body, (0.0, 0.0, zeros), micro)
  return loss_sum, n, g


def train_step(state: TrainState, batch: Batch, *, model: Granite,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               grad_accum: int = 1, context_shards: int = 1):
  if context_shards > 1:
    batch = context_balanced(batch, context_shards)
  loss_sum, n_tokens, grads = _grads(state.params, batch, model, grad_accum, context_shards)
  denom = jnp.maximum(n_tokens, 1.0)
  loss = loss_sum / denom
  grads = jax.tree.map(lambda g: g / denom, grads)
  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # Zero non-finite grads so the (discarded) update computation stays finite.
  safe_grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
  updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
  new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
  new = new.replace(step=state.step + 1)
  metrics = dict(loss=loss, grad_norm=grad_norm, lr=schedule(state.step),
                 n_tokens=n_tokens, skipped=1 - ok.astype(jnp.int32))
  return new, metrics


def eval_step(params, batch: Batch, *, model: Granite):
  loss_sum, n = loss_sums(params, batch, model)
  return dict(loss_sum=loss_sum, n_tokens=n)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  rules = dict(rules_for(mesh))
  return NamedSharding(mesh, P(rules["act_batch"], rules["act_length"]))


def jit_train_step(cfg: ModelConfig, mesh: Mesh, tx, schedule, state_shardings: TrainState,
                   grad_accum: int = 1) -> Callable:
  import flax.linen as nn

  model = Granite(cfg)
  b_shard = batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())
  # Ring/all-gather attention: balance the causal work over the context shards.
  shards = cp.context_size(mesh)[1] if cfg.attention_impl in ("ring", "allgather") else 1

  def step(state, batch):
    with nn.logical_axis_rules(rules_for(mesh)):
      return train_step(state, batch, model=model, tx=tx, schedule=schedule, grad_accum=grad_accum,
                        context_shards=shards)

  jitted = jax.jit(step, in_shardings=(state_shardings, b_shard),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  return with_mesh(jitted, mesh)


def jit_eval_step(cfg: ModelConfig, mesh: Mesh, param_shardings) -> Callable:
  import flax.linen as nn

  model = Granite(cfg)

  def step(params, batch):
    with nn.logical_axis_rules(rules_for(mesh)):
      return eval_step(params, batch, model=model)

  jitted = jax.jit(step, in_shardings=(param_shardings, batch_sharding(mesh)),
                   out_shardings=NamedSharding(mesh, P()))
  return with_mesh(jitted, mesh)


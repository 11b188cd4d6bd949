"""Next-token cross-entropy without materializing [B, T, V] logits.

At long context the float32 logits (and their gradient) dwarf everything else:
512K tokens x a 100K vocab is 200 GB. `chunked_xent` computes the loss over
`chunk` positions at a time under `jax.checkpoint`, so forward and backward
hold one [B, chunk, V] block; the result equals the full computation.

With context parallelism (`groups` = the context axis' size) each shard chunks its own part of
the sequence: [B, T, D] is viewed as [B, groups, T/groups, D] with the groups axis on `context`
(the logical axis rules' `act_length`), and every scan step takes one chunk from each shard.
Sharding constraints pin that layout on the scanned inputs, inside the step and on the logits
block (their transposes pin the cotangents), so no device holds more than its own positions.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model.config import ModelConfig


def xent_sums(logits_BTV, targets_BT, weights_BT):
  """(sum of weighted token losses, sum of weights) from float32 logits."""
  logz_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  tgt_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return jnp.sum((logz_BT - tgt_BT) * weights_BT), jnp.sum(weights_BT)


def output_weight_DV(params, cfg: ModelConfig):
  return params["embed"]["embedding"].T if cfg.tie_embeddings else params["lm_head"]


def chunked_xent(hidden_BTD, w_DV, targets_BT, weights_BT, cfg: ModelConfig, chunk: int, groups: int = 1):
  """`groups` contiguous parts of T (the context shards) are chunked separately, so each
  scan step takes one chunk from every shard and never gathers the sequence.

  Under `nn.logical_axis_rules` and a mesh (the train step) the groups axis is laid out as
  `act_length`; elsewhere the constraints are no-ops and the result is the same."""
  B, T, D = hidden_BTD.shape
  if T % (groups * chunk):
    raise ValueError(f"chunked_xent: length {T} is not a multiple of groups {groups} x chunk {chunk}")
  n = T // (groups * chunk)
  g_axis = "act_length" if groups > 1 else None
  pin = lambda x, axes: nn.with_logical_constraint(x, ("act_batch", g_axis, None, *axes))  # [B, G, C, ...]

  def split(x, *axes):  # [B, T, ...] -> [n, B, G, C, ...], shard g's chunks stay on shard g
    x = nn.with_logical_constraint(x.reshape(B, groups, n * chunk, *x.shape[2:]),
                                   ("act_batch", g_axis, None, *axes))
    x = jnp.moveaxis(x.reshape(B, groups, n, chunk, *x.shape[3:]), 2, 0)
    return nn.with_logical_constraint(x, (None, "act_batch", g_axis, None, *axes))

  @jax.checkpoint
  def one(h_BGCD, t_BGC, w_BGC):
    h_BGCD = pin(h_BGCD, ("act_embed",))
    logits_BGCV = jnp.einsum("bgcd,dv->bgcv", h_BGCD, w_DV.astype(cfg.dtype),
                             preferred_element_type=jnp.float32) / cfg.logits_scaling
    logits_BGCV = pin(logits_BGCV, ("act_vocab",))
    return xent_sums(logits_BGCV, pin(t_BGC, ()), pin(w_BGC, ()))

  def body(carry, xs):
    l, k = one(*xs)
    return (carry[0] + l, carry[1] + k), None

  (loss_sum, n_tok), _ = jax.lax.scan(body, (0.0, 0.0), (split(hidden_BTD, "act_embed"), split(targets_BT),
                                                         split(weights_BT)))
  return loss_sum, n_tok

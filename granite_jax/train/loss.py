"""Next-token cross-entropy without materializing [B, T, V] logits.

At long context the float32 logits (and their gradient) dwarf everything else:
512K tokens x a 100K vocab is 200 GB. `chunked_xent` computes the loss over
`chunk` positions at a time under `jax.checkpoint`, so forward and backward
hold one [B, chunk, V] block; the result equals the full computation.
"""
from __future__ import annotations

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
  scan step takes one chunk from every shard and never gathers the sequence."""
  B, T, D = hidden_BTD.shape
  n = T // (groups * chunk)
  split = lambda x: jnp.moveaxis(x.reshape(B, groups, n, chunk, *x.shape[2:]), 2, 0)  # [n, B, G, chunk, ...]

  @jax.checkpoint
  def one(h_BGCD, t_BGC, w_BGC):
    logits_BGCV = jnp.einsum("bgcd,dv->bgcv", h_BGCD, w_DV.astype(cfg.dtype),
                             preferred_element_type=jnp.float32) / cfg.logits_scaling
    return xent_sums(logits_BGCV, t_BGC, w_BGC)

  def body(carry, xs):
    l, k = one(*xs)
    return (carry[0] + l, carry[1] + k), None

  (loss_sum, n_tok), _ = jax.lax.scan(body, (0.0, 0.0), (split(hidden_BTD), split(targets_BT),
                                                         split(weights_BT)))
  return loss_sum, n_tok

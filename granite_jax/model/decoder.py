"""The Granite decoder: embedding, a scanned stack of blocks, tied LM head.

Layers run under `nn.scan` (one compiled block, so compile time does not grow
with depth) wrapped in `nn.remat` with a configurable checkpoint policy.
Parameters of the stack carry a leading `layers` axis.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model.attention import Attention
from granite_jax.model.config import ModelConfig
from granite_jax.model.layers import Embed, RMSNorm
from granite_jax.model.mlp import MLP

REMAT_POLICIES = {
    "none": None,  # no rematerialization: keep every activation
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}

_ACT_BTD = ("act_batch", "act_length", "act_embed")


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, segment_ids_BT, positions_BT):
    c = self.cfg
    norm = lambda name: RMSNorm(c.rms_eps, c.dtype, c.param_dtype, name=name)
    h_BTD = Attention(c, name="attn")(norm("attn_norm")(x_BTD), segment_ids_BT, positions_BT)
    x_BTD = x_BTD + c.residual_multiplier * h_BTD
    h_BTD = MLP(c, name="mlp")(norm("mlp_norm")(x_BTD))
    x_BTD = x_BTD + c.residual_multiplier * h_BTD
    return nn.with_logical_constraint(x_BTD, _ACT_BTD), None


class Granite(nn.Module):
  """`apply({"params": p}, tokens_BT, segment_ids=..., positions=...) -> logits_BTV` (float32)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BT, segment_ids=None, positions=None, return_hidden=False):
    c = self.cfg
    if c.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"model.remat_policy={c.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}")
    B, T = tokens_BT.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    embed = Embed(c.vocab_size, c.d_model, c.init_std, c.dtype, c.param_dtype, name="embed")
    x_BTD = nn.with_logical_constraint(embed(tokens_BT) * c.embedding_multiplier, _ACT_BTD)

    block = Block
    if c.remat_policy != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[c.remat_policy], prevent_cse=False)
    stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast), length=c.n_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x_BTD, _ = stack(c, name="layers")(x_BTD, segment_ids, positions)
    x_BTD = RMSNorm(c.rms_eps, c.dtype, c.param_dtype, name="final_norm")(x_BTD)
    if return_hidden:
      return x_BTD
    if c.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      w_DV = self.param("lm_head", nn.with_logical_partitioning(
          nn.initializers.normal(c.init_std), ("embed", "vocab")), (c.d_model, c.vocab_size), c.param_dtype)
      logits_BTV = jnp.einsum("btd,dv->btv", x_BTD, w_DV.astype(c.dtype),
                              preferred_element_type=jnp.float32)
    logits_BTV = logits_BTV / c.logits_scaling
    return nn.with_logical_constraint(logits_BTV, ("act_batch", "act_length", "act_vocab"))

"""The Granite decoder: embedding, a scanned stack of blocks, tied LM head.

Layers run under `nn.scan` (one compiled block, so compile time does not grow
with depth) wrapped in `nn.remat` with a configurable checkpoint policy.
Parameters of the stack carry a leading `layers` axis.

Decoding passes a KV cache (granite_jax.model.cache): the scan then also
carries each layer's cache slice in and out (in/out axis 0, no remat: the
cache path is inference only), and the call returns `(logits, new_cache)`.
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
  def __call__(self, x_BTD, segment_ids_BT, positions_BT, cache_kv=None,
               kv_segment_ids_BS=None, cache_index=None):
    c = self.cfg
    norm = lambda name: RMSNorm(c.rms_eps, c.dtype, c.param_dtype, name=name)
    h_BTD = Attention(c, name="attn")(norm("attn_norm")(x_BTD), segment_ids_BT, positions_BT,
                                      cache_kv, kv_segment_ids_BS, cache_index)
    new_kv = None
    if cache_kv is not None:
      h_BTD, new_kv = h_BTD
    x_BTD = x_BTD + c.residual_multiplier * h_BTD
    h_BTD = MLP(c, name="mlp")(norm("mlp_norm")(x_BTD))
    x_BTD = x_BTD + c.residual_multiplier * h_BTD
    return nn.with_logical_constraint(x_BTD, _ACT_BTD), new_kv


class Granite(nn.Module):
  """`apply({"params": p}, tokens_BT, segment_ids=..., positions=...) -> logits_BTV` (float32).

  With `cache=` and `cache_index=` (decode) it returns `(logits_BTV, new_cache)`.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BT, segment_ids=None, positions=None, return_hidden=False,
               cache=None, cache_index=None):
    c = self.cfg
    if c.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"model.remat_policy={c.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}")
    B, T = tokens_BT.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    embed = Embed(c.vocab_size, c.d_model, c.init_std, c.dtype, c.param_dtype, name="embed")
    x_BTD = nn.with_logical_constraint(embed(tokens_BT) * c.embedding_multiplier, _ACT_BTD)

    if cache is not None:
      x_BTD, new_cache = self._cached_stack(x_BTD, segment_ids, positions, cache, cache_index)
      out = self._head(embed, x_BTD, return_hidden)
      return out, new_cache

    block = Block
    if c.remat_policy != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[c.remat_policy], prevent_cse=False)
    stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast), length=c.n_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x_BTD, _ = stack(c, name="layers")(x_BTD, segment_ids, positions)
    return self._head(embed, x_BTD, return_hidden)

  def _cached_stack(self, x_BTD, segment_ids, positions, cache, cache_index):
    c = self.cfg
    if cache_index is None:
      raise ValueError("Granite: cache_index is required with cache")
    if segment_ids is None:
      segment_ids = jnp.ones(x_BTD.shape[:2], jnp.int32)
    kv_segment_ids_BS = jax.lax.dynamic_update_slice(
        cache["segment_ids"], segment_ids.astype(jnp.int32), (0, cache_index))
    stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast),
                    out_axes=0, length=c.n_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x_BTD, (k, v) = stack(c, name="layers")(x_BTD, segment_ids, positions, (cache["k"], cache["v"]),
                                            kv_segment_ids_BS, cache_index)
    return x_BTD, dict(k=k, v=v, segment_ids=kv_segment_ids_BS)

  def _head(self, embed, x_BTD, return_hidden):
    c = self.cfg
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

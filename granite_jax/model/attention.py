"""Grouped-query self-attention with RoPE (Granite's attention block)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model.config import ModelConfig
from granite_jax.model.layers import apply_rope, rope_cos_sin
from granite_jax.ops.attention import attention


class Attention(nn.Module):
  cfg: ModelConfig

  def _kernel(self, name, shape, axes, std):
    return self.param(name, nn.with_logical_partitioning(nn.initializers.normal(std), axes),
                      shape, self.cfg.param_dtype).astype(self.cfg.dtype)

  @nn.compact
  def __call__(self, x_BTD, segment_ids_BT, positions_BT):
    c = self.cfg
    D, N, K, H = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim
    wq_DNH = self._kernel("q", (D, N, H), ("embed", "heads", "head_dim"), c.init_std)
    wk_DKH = self._kernel("k", (D, K, H), ("embed", "kv_heads", "head_dim"), c.init_std)
    wv_DKH = self._kernel("v", (D, K, H), ("embed", "kv_heads", "head_dim"), c.init_std)
    # Output projection init scaled down with depth (GPT-2 style) for stable deep stacks.
    wo_NHD = self._kernel("o", (N, H, D), ("heads", "head_dim", "embed"),
                          c.init_std / (2 * c.n_layers) ** 0.5)
    q_BTNH = jnp.einsum("btd,dnh->btnh", x_BTD, wq_DNH)
    k_BTKH = jnp.einsum("btd,dkh->btkh", x_BTD, wk_DKH)
    v_BTKH = jnp.einsum("btd,dkh->btkh", x_BTD, wv_DKH)
    q_BTNH = nn.with_logical_constraint(q_BTNH, ("act_batch", "act_length", "act_heads", None))
    k_BTKH = nn.with_logical_constraint(k_BTKH, ("act_batch", "act_length", "act_kv_heads", None))
    v_BTKH = nn.with_logical_constraint(v_BTKH, ("act_batch", "act_length", "act_kv_heads", None))
    if c.position_embedding == "rope":
      cos, sin = rope_cos_sin(positions_BT, H, c.rope_theta)
      q_BTNH, k_BTKH = apply_rope(q_BTNH, cos, sin), apply_rope(k_BTKH, cos, sin)
    elif c.position_embedding != "nope":
      raise ValueError(f"model.position_embedding={c.position_embedding!r} must be 'rope' or 'nope'")
    o_BTNH = attention(q_BTNH, k_BTKH, v_BTKH, scale=c.attn_scale,
                       segment_ids_BT=segment_ids_BT, impl=c.attention_impl)
    o_BTNH = nn.with_logical_constraint(o_BTNH, ("act_batch", "act_length", "act_heads", None))
    return jnp.einsum("btnh,nhd->btd", o_BTNH, wo_NHD)

"""Grouped-query self-attention with RoPE (Granite's attention block).

With `cache_kv` (this layer's keys [B, K, S_max, H] and values [B, K, H, S_max],
see granite_jax.model.cache) the new keys/values are written at `cache_index`
and the queries attend over the whole cache; the call then returns
`(out, (k, v))`. A prefill (a static `cache_index` of 0: nothing is cached before
the prompt) attends over the prompt's own keys with the training kernel instead:
the same result, without [prompt, cache] scores (the RL rollout's largest buffer).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model.cache import decode_mask
from granite_jax.model.config import ModelConfig
from granite_jax.model.layers import apply_rope, dense, rope_cos_sin
from granite_jax.ops.attention import BLOCKED_IMPLS, attention


class Attention(nn.Module):
  cfg: ModelConfig

  def _kernel(self, name, shape, axes, std):
    return self.param(name, nn.with_logical_partitioning(nn.initializers.normal(std), axes),
                      shape, self.cfg.param_dtype).astype(self.cfg.dtype)

  @nn.compact
  def __call__(self, x_BTD, segment_ids_BT, positions_BT, cache_kv=None,
               kv_segment_ids_BS=None, cache_index=None):
    c = self.cfg
    D, N, K, H = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim
    wq_DNH = self._kernel("q", (D, N, H), ("embed", "heads", "head_dim"), c.init_std)
    wk_DKH = self._kernel("k", (D, K, H), ("embed", "kv_heads", "head_dim"), c.init_std)
    wv_DKH = self._kernel("v", (D, K, H), ("embed", "kv_heads", "head_dim"), c.init_std)
    # Output projection init scaled down with depth (GPT-2 style) for stable deep stacks.
    wo_NHD = self._kernel("o", (N, H, D), ("heads", "head_dim", "embed"),
                          c.init_std / (2 * c.n_layers) ** 0.5)
    q_BTNH = dense(x_BTD, wq_DNH)
    k_BTKH = dense(x_BTD, wk_DKH)
    v_BTKH = dense(x_BTD, wv_DKH)
    q_BTNH = nn.with_logical_constraint(q_BTNH, ("act_batch", "act_length", "act_heads", None))
    k_BTKH = nn.with_logical_constraint(k_BTKH, ("act_batch", "act_length", "act_kv_heads", None))
    v_BTKH = nn.with_logical_constraint(v_BTKH, ("act_batch", "act_length", "act_kv_heads", None))
    if c.position_embedding == "rope":
      cos, sin = rope_cos_sin(positions_BT, H, c.rope_theta)
      q_BTNH, k_BTKH = apply_rope(q_BTNH, cos, sin), apply_rope(k_BTKH, cos, sin)
    elif c.position_embedding != "nope":
      raise ValueError(f"model.position_embedding={c.position_embedding!r} must be 'rope' or 'nope'")
    if cache_kv is not None:
      return self._decode(q_BTNH, k_BTKH, v_BTKH, wo_NHD, segment_ids_BT, positions_BT, cache_kv,
                          kv_segment_ids_BS, cache_index)
    return dense(self._attend(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, positions_BT, c.attention_impl),
                 wo_NHD, n_in=2)

  def _attend(self, q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, positions_BT, impl):
    c = self.cfg
    # Blocked impls mask by position: context parallelism may permute the tokens.
    blocked = impl in BLOCKED_IMPLS
    o_BTNH = attention(q_BTNH, k_BTKH, v_BTKH, scale=c.attn_scale,
                       segment_ids_BT=segment_ids_BT, impl=impl,
                       positions_BT=positions_BT if blocked else None, block=c.attention_block)
    return nn.with_logical_constraint(o_BTNH, ("act_batch", "act_length", "act_heads", None))

  def _decode(self, q_BTNH, k_BTKH, v_BTKH, wo_NHD, segment_ids_BT, positions_BT, cache_kv,
              kv_segment_ids_BS, cache_index):
    c = self.cfg
    k_BKSH, v_BKHS = cache_kv
    T = q_BTNH.shape[1]
    prefill = isinstance(cache_index, int) and cache_index == 0 and T > 1
    # The cache keeps the layouts XLA's attention dots read (keys [B, K, S, H], values
    # [B, K, H, S]), so a decode step writes its T slots in place and copies no cache.
    k_BKSH = jax.lax.dynamic_update_slice(
        k_BKSH, jnp.transpose(k_BTKH, (0, 2, 1, 3)).astype(k_BKSH.dtype), (0, 0, cache_index, 0))
    v_BKHS = jax.lax.dynamic_update_slice(
        v_BKHS, jnp.transpose(v_BTKH, (0, 2, 3, 1)).astype(v_BKHS.dtype), (0, 0, 0, cache_index))
    kv_axes = ("act_batch", "act_kv_heads", None, None)
    k_BKSH = nn.with_logical_constraint(k_BKSH, kv_axes)
    v_BKHS = nn.with_logical_constraint(v_BKHS, kv_axes)
    if prefill:  # slots >= T are causally out of reach: the prompt's own keys are all there is
      o_BTNH = self._attend(q_BTNH, k_BTKH.astype(k_BKSH.dtype).astype(q_BTNH.dtype),
                            v_BTKH.astype(v_BKHS.dtype).astype(q_BTNH.dtype), segment_ids_BT,
                            positions_BT, prefill_impl(c, T))
      return jnp.einsum("btnh,nhd->btd", o_BTNH, wo_NHD), (k_BKSH, v_BKHS)
    mask_BTS = decode_mask(segment_ids_BT, kv_segment_ids_BS, cache_index)
    # cuDNN's flash kernel wants long blocks; a 1-token decode step uses XLA's lowering.
    impl = "jax" if c.attention_impl == "cudnn" else c.attention_impl
    o_BTNH = attention(q_BTNH, jnp.transpose(k_BKSH, (0, 2, 1, 3)).astype(q_BTNH.dtype),
                       jnp.transpose(v_BKHS, (0, 3, 1, 2)).astype(q_BTNH.dtype),
                       scale=c.attn_scale, mask_BTS=mask_BTS, impl=impl)
    o_BTNH = nn.with_logical_constraint(o_BTNH, ("act_batch", "act_length", "act_heads", None))
    return jnp.einsum("btnh,nhd->btd", o_BTNH, wo_NHD), (k_BKSH, v_BKHS)


def prefill_impl(c: ModelConfig, T: int) -> str:
  """The kernel a T-token prefill runs: the training kernel where it takes T tokens (the sampler
  has no context axis: ring/allgather run blockwise), else XLA's dense [T, T] attention."""
  impl = "blockwise" if c.attention_impl in ("ring", "allgather") else c.attention_impl
  if impl == "cudnn" and T % 64:
    return "jax"
  if impl == "blockwise" and T > c.attention_block and T % c.attention_block:
    return "jax"
  return impl

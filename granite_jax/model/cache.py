"""The decode KV cache: preallocated keys/values for every layer plus slot segment ids.

A cache is a plain dict pytree so it can be a `lax.while_loop` carry and a jit
argument:
  k, v         [L, B, S_max, K, H]  (model dtype) -- per-layer keys/values by slot;
  segment_ids  [B, S_max] int32     -- segment of the token in each slot, 0 = empty/padding.
`Granite(cfg).apply(..., cache=c, cache_index=i)` writes the T new tokens into
slots [i, i+T) and lets query slot i+t attend to written slots <= i+t of its
own segment. Slots are storage order only; RoPE uses the `positions` argument,
so left-padded prompts keep positions 0.. from their first real token.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from granite_jax.model.config import ModelConfig

Cache = dict[str, jax.Array]


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: str | None = None) -> Cache:
  if max_len < 1:
    raise ValueError(f"cache max_len={max_len} must be positive")
  shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
  dtype = dtype or cfg.dtype
  return dict(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
              segment_ids=jnp.zeros((batch, max_len), jnp.int32))


def decode_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array,
                cache_index: jax.Array) -> jax.Array:
  """Bool [B, T, S]: same segment and slot causal (query t sits in slot cache_index + t)."""
  T, S = q_segment_ids_BT.shape[1], kv_segment_ids_BS.shape[1]
  q_slot_T = cache_index + jnp.arange(T)
  causal_TS = q_slot_T[:, None] >= jnp.arange(S)[None, :]
  same_BTS = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
  return same_BTS & causal_TS[None]

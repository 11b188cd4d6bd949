"""The decode KV cache: preallocated keys/values for every layer plus slot segment ids.

A cache is a plain dict pytree so it can be a `lax.while_loop` carry and a jit
argument:
  k            tuple of L arrays [B, K, S_max, H] (model dtype) -- each layer's keys by slot;
  v            tuple of L arrays [B, K, H, S_max] (model dtype) -- each layer's values by slot;
  segment_ids  [B, S_max] int32     -- segment of the token in each slot, 0 = empty/padding.
One array per layer (not one stacked array, which the layer scan re-stacked,
so copied, every step) so a decode step updates each in place. Keys and values
are stored in the layouts XLA's CPU attention dots read (with few queries per
kv head it computes scores^T = k q^T and out^T = v^T p^T: keys [.., S, H],
values [.., H, S]), so a step does not transpose the cache either.
`Granite(cfg).apply(..., cache=c, cache_index=i)` writes the T new tokens into
slots [i, i+T) and lets query slot i+t attend to written slots <= i+t of its
own segment. Slots are storage order only; RoPE uses the `positions` argument,
so left-padded prompts keep positions 0.. from their first real token.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from granite_jax.model.config import ModelConfig

Cache = dict


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: str | None = None) -> Cache:
  if max_len < 1:
    raise ValueError(f"cache max_len={max_len} must be positive")
  B, K, H, L = batch, cfg.n_kv_heads, cfg.head_dim, cfg.n_layers
  dtype = dtype or cfg.dtype
  return dict(k=tuple(jnp.zeros((B, K, max_len, H), dtype) for _ in range(L)),
              v=tuple(jnp.zeros((B, K, H, max_len), dtype) for _ in range(L)),
              segment_ids=jnp.zeros((batch, max_len), jnp.int32))


def decode_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array,
                cache_index: jax.Array) -> jax.Array:
  """Bool [B, T, S]: same segment and slot causal (query t sits in slot cache_index + t)."""
  T, S = q_segment_ids_BT.shape[1], kv_segment_ids_BS.shape[1]
  q_slot_T = cache_index + jnp.arange(T)
  causal_TS = q_slot_T[:, None] >= jnp.arange(S)[None, :]
  same_BTS = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
  return same_BTS & causal_TS[None]

"""Logit helpers shared by both samplers (infer/sampler.py's program, infer/draw.py's engine draws)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits_BV: jax.Array, top_k, top_p) -> jax.Array:
  """-inf outside the top-k tokens and outside the top-p nucleus (k <= 0, p >= 1 disable)."""
  V = logits_BV.shape[-1]
  sorted_BV = jnp.flip(jnp.sort(logits_BV, axis=-1), axis=-1)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
  in_k_V = jnp.arange(V) < k
  sorted_BV = jnp.where(in_k_V, sorted_BV, -jnp.inf)
  probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
  before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV  # mass strictly above each token
  keep_BV = in_k_V & ((before_BV < top_p) | (top_p >= 1.0))
  n_keep_B = jnp.maximum(jnp.sum(keep_BV, axis=-1), 1)
  threshold_B = jnp.take_along_axis(sorted_BV, (n_keep_B - 1)[:, None], axis=-1)
  return jnp.where(logits_BV >= threshold_B, logits_BV, -jnp.inf)


def argmax(x_BV: jax.Array) -> jax.Array:
  """`jnp.argmax(x, -1)` (first maximum; first NaN if any) as two plain reductions, which
  XLA vectorizes: its (value, index) pair reduction is several times slower on CPU."""
  V = x_BV.shape[-1]
  hit_BV = (x_BV == jnp.max(x_BV, axis=-1, keepdims=True)) | jnp.isnan(x_BV)
  return jnp.min(jnp.where(hit_BV, jnp.arange(V, dtype=jnp.int32), V), axis=-1)

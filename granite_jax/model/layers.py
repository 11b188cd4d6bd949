"""Small building blocks: RMSNorm, rotary embedding, token embedding.

Formulas follow `transformers`' Granite so that imported weights give the
same logits: RMSNorm normalizes in float32 and casts back before the weight
multiply; RoPE is rotate-half with cos/sin computed in float32.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _init(std: float):
  return nn.initializers.normal(stddev=std)


class RMSNorm(nn.Module):
  eps: float
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    scale_D = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                         (x_BTD.shape[-1],), self.param_dtype)
    x32 = x_BTD.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return scale_D.astype(self.dtype) * y.astype(x_BTD.dtype)


def rope_cos_sin(positions_BT: jax.Array, head_dim: int, theta: float):
  """cos, sin of shape [B, T, head_dim] in float32 (halves repeated, as HF)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs_BTh = positions_BT.astype(jnp.float32)[..., None] * inv_freq
  emb_BTH = jnp.concatenate([freqs_BTh, freqs_BTh], axis=-1)
  return jnp.cos(emb_BTH), jnp.sin(emb_BTH)


def apply_rope(x_BTNH: jax.Array, cos_BTH: jax.Array, sin_BTH: jax.Array) -> jax.Array:
  h = x_BTNH.shape[-1] // 2
  rotated = jnp.concatenate([-x_BTNH[..., h:], x_BTNH[..., :h]], axis=-1)
  cos, sin = cos_BTH[:, :, None, :], sin_BTH[:, :, None, :]
  return (x_BTNH.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x_BTNH.dtype)


class Embed(nn.Module):
  vocab_size: int
  d_model: int
  init_std: float
  dtype: str = "float32"
  param_dtype: str = "float32"

  def setup(self):
    self.embedding_VD = self.param(
        "embedding", nn.with_logical_partitioning(_init(self.init_std), ("vocab", "embed")),
        (self.vocab_size, self.d_model), self.param_dtype)

  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    return jnp.take(self.embedding_VD, tokens_BT, axis=0).astype(self.dtype)

  def attend(self, x_BTD: jax.Array) -> jax.Array:
    """Tied output projection: logits against the embedding table."""
    return jnp.einsum("btd,vd->btv", x_BTD, self.embedding_VD.astype(self.dtype),
                      preferred_element_type=jnp.float32)

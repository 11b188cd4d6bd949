"""Small building blocks: RMSNorm, rotary embedding, token embedding.

Formulas follow `transformers`' Granite so that imported weights give the
same logits: RMSNorm normalizes in float32 and casts back before the weight
multiply; RoPE is rotate-half with cos/sin computed in float32.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _init(std: float):
  return nn.initializers.normal(stddev=std)


def dense(x_BTI: jax.Array, w_IO: jax.Array, n_in: int = 1, **kw) -> jax.Array:
  """`x` [B, T, *in] times `w` [*in, *out]: the einsum "bt{in},{in}{out}->bt{out}".

  Computed as one 2-D matmul [B*T, in] @ [in, out] unless the length is split over devices
  (context parallelism) as `flatten_rows` decides. Flattening (B, T) gives the weight gradient a
  single contracting dimension; with two (b, t) XLA:CPU transposes the large activation gradients
  through slow copy fusions before each weight-gradient dot (2x the MLP's fwd+bwd time at the CPU
  bench shape). On GPU the reshapes are bitcasts.
  """
  in_shape, out_shape = w_IO.shape[:n_in], w_IO.shape[n_in:]
  assert x_BTI.shape[2:] == in_shape, (x_BTI.shape, w_IO.shape)
  if not flatten_rows(x_BTI.shape[0]):
    nb = x_BTI.ndim - n_in
    return jax.lax.dot_general(x_BTI, w_IO, ((tuple(range(nb, x_BTI.ndim)), tuple(range(n_in))),
                                             ((), ())), **kw)
  B, T = x_BTI.shape[:2]
  y = jnp.matmul(x_BTI.reshape(B * T, -1), w_IO.reshape(math.prod(in_shape), -1), **kw)
  return y.reshape(B, T, *out_shape)


def _ways(logical: str, sizes) -> int:
  """Devices the logical axis rules in context split `logical` over (mesh `sizes`)."""
  axes = nn.logical_to_mesh_axes((logical,))[0]
  if axes is None:
    return 1
  return math.prod(sizes.get(a, 1) for a in ((axes,) if isinstance(axes, str) else axes))


def flatten_rows(B: int) -> bool:
  """Whether `dense` flattens a [B, T, ...] input to [B*T, ...], under the logical axis rules and
  the mesh (jax.set_mesh) in context. Yes unless the length is split (context parallelism) and
  either a device holds more than one row or the residual stream is sequence parallel (tensor > 1,
  model/decoder.py). With more than one row per device, a device's [B, T/context] block is not
  contiguous in B*T and XLA all-gathers the whole sequence inside every layer (lce_128k 8B: 137
  GiB per GPU instead of 93, XLA:CPU); with sequence parallelism the flattened dots need 17 GiB
  more at lce_512k 30B. With one row per device and no tensor split the flattening is a bitcast
  and needs 2-3 GiB less there than the two-axis dot (lce_512k 8B, lce_128k 30B)."""
  sizes = jax.sharding.get_abstract_mesh().shape
  if _ways("act_length", sizes) == 1:
    return True
  return B // max(_ways("act_batch", sizes), 1) <= 1 and sizes.get("tensor", 1) == 1


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
    B, T, D = x_BTD.shape
    logits = jax.lax.dot_general(x_BTD.reshape(B * T, D), self.embedding_VD.astype(self.dtype),
                                 (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    return logits.reshape(B, T, -1)

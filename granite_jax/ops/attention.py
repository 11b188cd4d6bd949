"""Causal attention over packed batches, behind one function.

Implementations (config `model.attention_impl`):
  xla     -- reference einsum in float32; materializes [B, K, G, T, S] scores.
  jax     -- `jax.nn.dot_product_attention` with XLA's own lowering.
  cudnn   -- `jax.nn.dot_product_attention(implementation="cudnn")`, the cuDNN
             flash kernel (GPU only, bf16/fp16). Packed batches pass the
             segment mask as a boolean mask.
  blockwise  -- online softmax over query/key blocks, no T x S scores (ops/blockwise.py).
  ring, allgather -- context parallel over the `context` mesh axis (ops/context_parallel.py).
All honour the causal mask and segment ids: a token attends only to earlier
tokens of its own segment. Padding (segment 0) attends to padding, which keeps
its rows finite; the loss masks it out. An optional extra `mask_BTS` is ANDed
in (the KV-cache decode path uses it for slot validity and causality).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from granite_jax.ops import blockwise, context_parallel

IMPLS = ("xla", "jax", "cudnn", "blockwise", "ring", "allgather")
# No T x S scores (granite_jax/ops/blockwise.py, context_parallel.py); mask from positions.
BLOCKED_IMPLS = ("blockwise", "ring", "allgather")


def check_supported(impl: str, *, seq_len: int, head_dim: int, dtype: str,
                    max_seq_len: int, block: int = 512, context: int = 1) -> None:
  """Raises ValueError for a configuration the chosen kernel cannot run."""
  if impl not in IMPLS:
    raise ValueError(f"model.attention_impl={impl!r} is not one of {list(IMPLS)}")
  if seq_len > max_seq_len:
    raise ValueError(f"sequence length {seq_len} exceeds model.max_seq_len={max_seq_len}")
  if impl in BLOCKED_IMPLS:
    chunk = seq_len // (2 * context if impl != "blockwise" and context > 1 else 1)
    if impl != "blockwise" and context > 1 and seq_len % (2 * context):
      raise ValueError(f"model.attention_impl={impl!r} needs the sequence length divisible by "
                       f"2 x mesh context = {2 * context} (load balance), got {seq_len}")
    if block < 1 or (chunk > block and chunk % block):
      raise ValueError(f"model.attention_block={block} must divide the attention chunk of {chunk} "
                       f"tokens (sequence length {seq_len}, impl {impl!r}, context {context})")
  if impl == "cudnn":
    if dtype not in ("bfloat16", "float16"):
      raise ValueError(f"model.attention_impl='cudnn' needs model.dtype bfloat16 or float16, got {dtype!r}")
    if head_dim % 8 or head_dim > 256:
      raise ValueError(f"model.attention_impl='cudnn' needs head_dim a multiple of 8 and <= 256, got {head_dim}")
    if seq_len % 64:
      raise ValueError(f"model.attention_impl='cudnn' needs the sequence length to be a multiple of 64, got {seq_len}")


def segment_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array,
                 q_positions_BT: jax.Array | None = None,
                 kv_positions_BS: jax.Array | None = None) -> jax.Array:
  """Boolean [B, T, S]: same segment and (if positions are given) causal."""
  mask_BTS = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
  if q_positions_BT is not None:
    mask_BTS &= q_positions_BT[:, :, None] >= kv_positions_BS[:, None, :]
  return mask_BTS


def _causal_mask(T: int, S: int) -> jax.Array:
  # Query t sits at absolute position S - T + t (decode with a KV prefix).
  return jnp.arange(T)[:, None] + (S - T) >= jnp.arange(S)[None, :]


def attention(q_BTNH: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, *,
              scale: float, segment_ids_BT: jax.Array | None = None,
              kv_segment_ids_BS: jax.Array | None = None,
              mask_BTS: jax.Array | None = None,
              impl: str = "xla", positions_BT: jax.Array | None = None,
              kv_positions_BS: jax.Array | None = None, block: int = 512) -> jax.Array:
  """Grouped-query causal attention. N query heads share K kv heads (N % K == 0).

  `mask_BTS` (bool [B, T, S], optional) further restricts which keys a query sees.
  With `positions_BT` (and `kv_positions_BS`, default the same) causality is by
  position, not index: valid for any token order when positions increase within
  a segment. `block` is the query/key block of the BLOCKED_IMPLS.
  """
  if impl in BLOCKED_IMPLS and mask_BTS is None:
    return _blocked(q_BTNH, k_BSKH, v_BSKH, scale=scale, segment_ids_BT=segment_ids_BT,
                    kv_segment_ids_BS=kv_segment_ids_BS, positions_BT=positions_BT,
                    kv_positions_BS=kv_positions_BS, block=block, impl=impl)
  if kv_segment_ids_BS is None:
    kv_segment_ids_BS = segment_ids_BT
  B, T, N, H = q_BTNH.shape
  S = k_BSKH.shape[1]
  if positions_BT is not None:
    kv_positions_BS = positions_BT if kv_positions_BS is None else kv_positions_BS
    allowed_BTS = positions_BT[:, :, None] >= kv_positions_BS[:, None, :]
  else:
    allowed_BTS = _causal_mask(T, S)[None]
  if segment_ids_BT is not None:
    allowed_BTS = allowed_BTS & segment_mask(segment_ids_BT, kv_segment_ids_BS)
  if mask_BTS is not None:
    allowed_BTS = allowed_BTS & mask_BTS
  if impl == "xla" or impl in BLOCKED_IMPLS:  # blocked impls with a mask_BTS: decode
    return _xla(q_BTNH, k_BSKH, v_BSKH, allowed_BTS, scale)
  if impl in ("jax", "cudnn"):
    packed = segment_ids_BT is not None or mask_BTS is not None or positions_BT is not None
    return jax.nn.dot_product_attention(
        q_BTNH, k_BSKH, v_BSKH,
        mask=jnp.broadcast_to(allowed_BTS, (B, T, S))[:, None] if packed else None,
        is_causal=not packed, scale=scale,
        implementation="cudnn" if impl == "cudnn" else "xla")
  raise ValueError(f"model.attention_impl={impl!r} is not one of {list(IMPLS)}")


def _xla(q_BTNH, k_BSKH, v_BSKH, mask_BTS, scale):
  # Recomputed in the backward pass: saves writing the [B, K, G*T, S] probabilities (and
  # masked scores) of every layer to the scan's residual stacks (~0.7 s of a 5.7 s CPU step).
  return jax.checkpoint(_xla_core, static_argnums=(4,))(q_BTNH, k_BSKH, v_BSKH, mask_BTS, scale)


def _xla_core(q_BTNH, k_BSKH, v_BSKH, mask_BTS, scale):
  # Scores as [B, K, G*T, S]: every dot (and each dot of the backward pass) is a batched
  # matmul over (B, K) with a single contracting dimension, and the softmax runs over the
  # minor axis with no transposes of the [.., T, S] tensors around it. (Splitting G and T
  # makes the backward contract over two dimensions, which XLA:CPU lowers with large copies.)
  B, T, N, H = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  G = N // K
  q_BKMH = jnp.transpose(q_BTNH.reshape(B, T, K, G, H), (0, 2, 3, 1, 4)).reshape(B, K, G * T, H)
  k_BKSH = jnp.transpose(k_BSKH, (0, 2, 1, 3))
  v_BKSH = jnp.transpose(v_BSKH, (0, 2, 1, 3))
  s_BKMS = jnp.einsum("bkmh,bksh->bkms", q_BKMH, k_BKSH, preferred_element_type=jnp.float32) * scale
  mask_BMS = jnp.broadcast_to(mask_BTS[:, None], (B, G, T, S)).reshape(B, 1, G * T, S)
  s_BKMS = jnp.where(mask_BMS, s_BKMS, jnp.finfo(jnp.float32).min)
  p_BKMS = jax.nn.softmax(s_BKMS, axis=-1).astype(v_BSKH.dtype)
  o_BKMH = jnp.einsum("bkms,bksh->bkmh", p_BKMS, v_BKSH)
  return jnp.transpose(o_BKMH.reshape(B, K, G, T, H), (0, 3, 1, 2, 4)).reshape(B, T, N, H)


def _blocked(q_BTNH, k_BSKH, v_BSKH, *, impl, **kw):
  if impl == "blockwise":
    return blockwise.blockwise_attention(q_BTNH, k_BSKH, v_BSKH, **kw)
  return context_parallel.context_attention(q_BTNH, k_BSKH, v_BSKH, impl=impl, **kw)

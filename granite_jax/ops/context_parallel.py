"""Context parallelism: attention when the sequence is sharded over the `context` mesh axis.

Two ways to let every query shard see every key shard (config `model.attention_impl`):
  ring      -- K/V (with their segment ids and positions) travel around the
               context ring with `ppermute`; each step folds the visiting chunk
               into the online-softmax statistics. Memory per device: two chunks.
  allgather -- all-gather K/V once and attend locally. With GQA (8 KV heads vs
               32 query heads) K/V are a quarter of Q, so at 128K one gather is
               often cheaper than n ring steps.
Both run the blockwise kernel inside `jax.shard_map`; batch and heads stay
sharded as the logical rules say. With context size 1 they are blockwise.

Causal load balance: shard i holds chunks i and 2n-1-i of the sequence (the
train step permutes the batch, see `load_balance_permutation`), so each shard
has the same number of unmasked (query, key) pairs. The mask comes from
positions, so the permutation needs no other change to attention.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from granite_jax.ops import blockwise as bw
from granite_jax.sharding.rules import rules_for


def load_balance_permutation(T: int, n_shards: int) -> np.ndarray:
  """Index array: the sequence in 2n chunks, reordered as (0, 2n-1, 1, 2n-2, ...)."""
  if T % (2 * n_shards):
    raise ValueError(f"sequence length {T} must be divisible by 2 x context = {2 * n_shards}")
  c = T // (2 * n_shards)
  order = [j for i in range(n_shards) for j in (i, 2 * n_shards - 1 - i)]
  return np.concatenate([np.arange(j * c, (j + 1) * c) for j in order])


def apply(x: jax.Array, perm: np.ndarray, axis: int = 1) -> jax.Array:
  return jnp.take(x, perm, axis=axis)


def invert(perm: np.ndarray) -> np.ndarray:
  return np.argsort(perm)


def context_size(mesh=None) -> tuple[str | None, int]:
  """(mesh axis the sequence is sharded on, its size) for `mesh` or the mesh in context."""
  mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return None, 1
  axis = dict(rules_for(mesh))["act_length"]
  return axis, (mesh.shape[axis] if axis else 1)


def context_attention(q_BTNH, k_BSKH, v_BSKH, *, scale: float, impl: str, segment_ids_BT=None,
                      kv_segment_ids_BS=None, positions_BT=None, kv_positions_BS=None,
                      block: int = 512, mesh=None) -> jax.Array:
  """`impl` "ring" or "allgather" over the mesh's context axis (global arrays in and out)."""
  B, T, N, H = q_BTNH.shape
  S = k_BSKH.shape[1]
  masks = bw.default_masks(B, T, S, segment_ids_BT, kv_segment_ids_BS, positions_BT, kv_positions_BS)
  mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
  axis, n = context_size(mesh)
  if n == 1:
    return bw.blockwise_attention(q_BTNH, k_BSKH, v_BSKH, scale=scale, block=block,
                                  **dict(zip(("segment_ids_BT", "kv_segment_ids_BS", "positions_BT",
                                              "kv_positions_BS"), masks)))
  rules = dict(rules_for(mesh))
  batch, heads, kv_heads = rules["act_batch"], rules["act_heads"], rules["act_kv_heads"]
  q_spec, kv_spec, s_spec = P(batch, axis, heads, None), P(batch, axis, kv_heads, None), P(batch, axis)
  local = {"ring": _ring, "allgather": _allgather}[impl]
  fn = jax.shard_map(functools.partial(local, axis=axis, n=n, scale=scale, block=block),
                     mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec) + (s_spec,) * 4,
                     out_specs=q_spec, check_vma=False)
  qseg_BT, kseg_BS, qpos_BT, kpos_BS = masks
  return fn(q_BTNH, k_BSKH, v_BSKH, qseg_BT, kseg_BS, qpos_BT, kpos_BS)


def _init(q_BTNH, k_BSKH):
  B, T, N, H = q_BTNH.shape
  K = k_BSKH.shape[2]
  return bw.init_stats(B, T, K, N // K, H)


def _ring(q_BTNH, k_BSKH, v_BSKH, qseg_BT, kseg_BS, qpos_BT, kpos_BS, *, axis, n, scale, block):
  stats = _init(q_BTNH, k_BSKH)
  kv = (k_BSKH, v_BSKH, kseg_BS, kpos_BS)
  shift = [(j, (j + 1) % n) for j in range(n)]
  for step in range(n):  # unrolled: n is small, and XLA can overlap the send with the compute
    nxt = tuple(jax.lax.ppermute(x, axis, shift) for x in kv) if step < n - 1 else None
    stats = bw.chunk_update(stats, q_BTNH, qseg_BT, qpos_BT, *kv, scale=scale, block=block)
    kv = nxt
  return bw.finalize(stats, q_BTNH.dtype)


def _allgather(q_BTNH, k_BSKH, v_BSKH, qseg_BT, kseg_BS, qpos_BT, kpos_BS, *, axis, n, scale, block):
  kv = tuple(jax.lax.all_gather(x, axis, axis=1, tiled=True) for x in (k_BSKH, v_BSKH, kseg_BS, kpos_BS))
  stats = bw.chunk_update(_init(q_BTNH, k_BSKH), q_BTNH, qseg_BT, qpos_BT, *kv,
                          scale=scale, block=block)
  return bw.finalize(stats, q_BTNH.dtype)

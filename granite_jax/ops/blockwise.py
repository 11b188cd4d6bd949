"""Blockwise (flash-style) attention: online softmax over KV blocks, no T x S scores.

Masking uses only (segment id, position) of each query and key: a query sees a
key of its own segment at a position <= its own. Positions increase inside a
segment, so this is causal-within-segment for any order of the tokens, which is
what lets context parallelism permute the sequence for load balance.

The building block is `chunk_update`: it folds one KV chunk into the running
softmax statistics (m = running max, l = running sum, acc = unnormalized output)
of every query. Queries are processed in blocks under `lax.map` and keys in
blocks under `lax.scan`; both levels are `jax.checkpoint`ed, so the backward
pass keeps O(T * H) residuals per query block instead of block scores.
Blocks with no allowed (query, key) pair are skipped with `lax.cond`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_NEG = -1e30  # finite "minus infinity": exp(_NEG - m) underflows to 0 without NaNs


class Stats(NamedTuple):
  m_BTKG: jax.Array    # running max of the scores, float32
  l_BTKG: jax.Array    # running sum of exp(score - m)
  acc_BTKGH: jax.Array  # running sum of exp(score - m) * v


def init_stats(B: int, T: int, K: int, G: int, H: int) -> Stats:
  return Stats(jnp.full((B, T, K, G), _NEG, jnp.float32), jnp.zeros((B, T, K, G), jnp.float32),
               jnp.zeros((B, T, K, G, H), jnp.float32))


def finalize(stats: Stats, dtype) -> jax.Array:
  """[B, T, N, H] output. Rows that saw no key (only with foreign masks) give 0."""
  B, T, K, G, H = stats.acc_BTKGH.shape
  l_BTKG = jnp.where(stats.l_BTKG == 0, 1.0, stats.l_BTKG)
  return (stats.acc_BTKGH / l_BTKG[..., None]).reshape(B, T, K * G, H).astype(dtype)


def fit_block(length: int, block: int) -> int:
  """The block size used for a sequence of `length`: `block`, or a divisor of length."""
  return length if length <= block else math.gcd(length, block)


def _kv_block(stats: Stats, q_BTKGH, qseg_BT, qpos_BT, k_BSKH, v_BSKH, kseg_BS, kpos_BS, scale):
  mask_BTS = (qseg_BT[:, :, None] == kseg_BS[:, None, :]) & (qpos_BT[:, :, None] >= kpos_BS[:, None, :])

  def compute(stats):
    mask_BT11S = mask_BTS[:, :, None, None, :]
    s_BTKGS = jnp.einsum("btkgh,bskh->btkgs", q_BTKGH, k_BSKH,
                         preferred_element_type=jnp.float32) * scale
    s_BTKGS = jnp.where(mask_BT11S, s_BTKGS, _NEG)
    m_BTKG = jnp.maximum(stats.m_BTKG, s_BTKGS.max(-1))
    p_BTKGS = jnp.where(mask_BT11S, jnp.exp(s_BTKGS - m_BTKG[..., None]), 0.0)
    corr_BTKG = jnp.exp(stats.m_BTKG - m_BTKG)
    pv_BTKGH = jnp.einsum("btkgs,bskh->btkgh", p_BTKGS.astype(v_BSKH.dtype), v_BSKH,
                          preferred_element_type=jnp.float32)
    return Stats(m_BTKG, stats.l_BTKG * corr_BTKG + p_BTKGS.sum(-1),
                 stats.acc_BTKGH * corr_BTKG[..., None] + pv_BTKGH)

  # Causal masking leaves about half the blocks empty: skip their two matmuls.
  return jax.lax.cond(mask_BTS.any(), compute, lambda s: s, stats)


def _to_blocks(x, n):
  """[B, T, ...] -> [n, B, T // n, ...]."""
  return jnp.moveaxis(x.reshape(x.shape[0], n, x.shape[1] // n, *x.shape[2:]), 1, 0)


def _from_blocks(x):
  """[n, B, t, ...] -> [B, n * t, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def chunk_update(stats: Stats, q_BTNH, qseg_BT, qpos_BT, k_BSKH, v_BSKH, kseg_BS, kpos_BS, *,
                 scale: float, block: int) -> Stats:
  """Folds the keys/values of one chunk into the statistics of every query."""
  B, T, N, H = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  nq, nk = T // fit_block(T, block), S // fit_block(S, block)
  q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
  kv_blocks = tuple(_to_blocks(x, nk) for x in (k_BSKH, v_BSKH, kseg_BS, kpos_BS))
  kv_step = jax.checkpoint(_kv_block, static_argnums=(8,), prevent_cse=False)

  def q_block(args):
    st, q_b, qseg_b, qpos_b = args
    def body(st, kv):
      return kv_step(st, q_b, qseg_b, qpos_b, *kv, scale), None
    return jax.lax.scan(body, st, kv_blocks)[0]

  q_blocks = (Stats(*(_to_blocks(x, nq) for x in stats)),
              *(_to_blocks(x, nq) for x in (q_BTKGH, qseg_BT, qpos_BT)))
  out = jax.lax.map(jax.checkpoint(q_block, prevent_cse=False), q_blocks)
  return Stats(*(_from_blocks(x) for x in out))


def default_masks(B: int, T: int, S: int, segment_ids_BT=None, kv_segment_ids_BS=None,
                  positions_BT=None, kv_positions_BS=None):
  """Fills what the caller left out: one segment, and index positions (query t at S - T + t)."""
  if segment_ids_BT is None:
    segment_ids_BT = jnp.ones((B, T), jnp.int32)
  if kv_segment_ids_BS is None:
    kv_segment_ids_BS = segment_ids_BT if S == T else jnp.ones((B, S), jnp.int32)
  if positions_BT is None:
    positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32) + (S - T), (B, T))
  if kv_positions_BS is None:
    kv_positions_BS = (positions_BT if S == T else
                       jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S)))
  return segment_ids_BT, kv_segment_ids_BS, positions_BT, kv_positions_BS


def blockwise_attention(q_BTNH, k_BSKH, v_BSKH, *, scale: float, segment_ids_BT=None,
                        kv_segment_ids_BS=None, positions_BT=None, kv_positions_BS=None,
                        block: int = 512) -> jax.Array:
  """Grouped-query causal attention over packed rows in O(T * block) memory."""
  B, T, N, H = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  masks = default_masks(B, T, S, segment_ids_BT, kv_segment_ids_BS, positions_BT, kv_positions_BS)
  qseg_BT, kseg_BS, qpos_BT, kpos_BS = masks
  stats = chunk_update(init_stats(B, T, K, N // K, H), q_BTNH, qseg_BT, qpos_BT,
                       k_BSKH, v_BSKH, kseg_BS, kpos_BS, scale=scale, block=block)
  return finalize(stats, q_BTNH.dtype)

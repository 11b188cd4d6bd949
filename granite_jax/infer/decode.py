"""A decode step over a prompt KV shared by its samples plus each row's own generated KV.

Rows are grouped by prompt: row b*G + g is a sample of prompt b (G = rows // prompts; G = 1
when each row carries its own copy of its prompt's KV). A prompt's keys and values come from
one prefill (`prefill`: the model's own KV-cache path at cache_index 0) and each decode step
reads them once per prompt, not once per sample; only the generated tokens' KV is per row.

The generated KV is stored per layer in the group layout, keys [B, K, G, H, S] and values
[B, K, G, S, H], S a length bucket (granite_jax.infer.engine grows it as rows get longer), so
a step reads the filled part of the cache, not a preallocated prompt + max_new_tokens. The
whole attention runs in that layout: queries move into it and out of it once per layer.
Keys [.., H, S] (and the prompt's [B, K, H, P], values [B, K, P, H]) make both attention dots
plain [m, k] x [k, n] matmuls, the form XLA:CPU's YNNPACK dots run fastest: with keys
[.., S, H] the 64-row, 128-slot score dots took twice as long. The token a row feeds as its t-th
generated token (0-based) is written to slot t and attends to slots <= t and to its prompt's real
(non-padding) tokens, with one softmax over both parts. `t` is one scalar when all rows decode in
step (one dynamic-update-slice per cache), or one slot per row [B] in the per-row layout (G = 1:
rows admitted at different steps, granite_jax.infer.engine's continuous batching; a scatter).

The step reuses the model's own blocks (RMSNorm, MLP, RoPE, projections via `dense`) with the
parameters of `granite_jax.model.decoder.decode_params` (split per layer, compute dtype).
Under `nn.logical_axis_rules` (the engine on a mesh, sharding/rules.py `rollout_rules`) the
step's logical constraints keep rows over the batch axes and heads, KV heads (both caches) and
the head's vocabulary over the tensor axes; without rules they are no-ops.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model import Granite, ModelConfig
from granite_jax.model.cache import init_cache
from granite_jax.model.layers import RMSNorm, apply_rope, dense, rope_cos_sin
from granite_jax.model.mlp import MLP

_NEG = float(jnp.finfo(jnp.float32).min)
# Logical axes of the step's activations (no-ops without `nn.logical_axis_rules`: one device).
_Q = ("act_batch", None, "act_heads", None)
_K = ("act_batch", None, "act_kv_heads", None)


def _x(x_R1D):
  return nn.with_logical_constraint(x_R1D, ("act_batch", None, "act_embed"))


def _kv(a_BK):
  """[groups, kv heads, ...] (KV, queries in the group layout): groups over the batch axes, KV
  heads over the tensor axes, so the attention runs where the caches are."""
  return nn.with_logical_constraint(a_BK, ("act_batch", "act_kv_heads") + (None,) * (a_BK.ndim - 2))


def prefill(cfg: ModelConfig, params, prompts_BP, lengths_B):
  """Left-padded prompts -> (last-position logits [B, V] float32, prompt KV dict).

  The prompt KV: k / v tuples of L arrays [B, K, H, P] / [B, K, P, H], `valid_BP` (real
  tokens) and `lengths_B`. `params` as from `decode_params`.
  """
  B, Pl = prompts_BP.shape
  pad_B = Pl - lengths_B
  slot_P = jnp.arange(Pl, dtype=jnp.int32)
  seg_BP = (slot_P[None] >= pad_B[:, None]).astype(jnp.int32)
  pos_BP = jnp.maximum(slot_P[None] - pad_B[:, None], 0)
  logits_B1V, cache = Granite(cfg).apply(
      {"params": params}, prompts_BP * seg_BP, segment_ids=seg_BP, positions=pos_BP,
      cache=init_cache(cfg, B, Pl), cache_index=0, last_only=True)
  swap = lambda arrays: tuple(jnp.swapaxes(a, 2, 3) for a in arrays)  # from the model cache's
  return logits_B1V[:, 0], dict(k=swap(cache["k"]), v=swap(cache["v"]), valid_BP=seg_BP > 0,
                                lengths_B=lengths_B)


def init_gen_kv(cfg: ModelConfig, groups: int, G: int, slots: int):
  K, H, L = cfg.n_kv_heads, cfg.head_dim, cfg.n_layers
  return dict(k=tuple(jnp.zeros((groups, K, G, H, slots), cfg.dtype) for _ in range(L)),
              v=tuple(jnp.zeros((groups, K, G, slots, H), cfg.dtype) for _ in range(L)))


def grow_gen_kv(gen, slots: int):
  """The generated KV with `slots` slots (the new ones empty)."""
  pad = lambda a, axis: jnp.pad(a, [(0, slots - a.shape[axis]) if i == axis else (0, 0)
                                    for i in range(a.ndim)])
  return dict(k=tuple(pad(a, 4) for a in gen["k"]), v=tuple(pad(a, 3) for a in gen["v"]))


def take_rows(gen, rows_R, take=None):
  """Rows `rows_R` (b*G + g) of the generated KV, one row per group (G = 1). `take(a_R...)`:
  how rows are taken (default `jnp.take(a, rows_R, axis=0)`; the engine's per-shard take)."""
  take = take or (lambda a: jnp.take(a, rows_R, axis=0))

  def one(a):
    B, K, G = a.shape[:3]
    return take(jnp.swapaxes(a, 1, 2).reshape(B * G, K, *a.shape[3:]))[:, :, None]
  return jax.tree.map(one, gen)


def _per_row(t, ndim: int):
  """A scalar slot, or one per row [B] shaped to broadcast against [B, ...] (`ndim` dims)."""
  t = jnp.asarray(t)
  return t if t.ndim == 0 else t.reshape((-1,) + (1,) * (ndim - 1))


def write_slot(gk_BKGHS, gv_BKGSH, k_BKGH, v_BKGH, t):
  """Each row's key and value into its slot `t` (a scalar: all rows; [B]: each row its own, G = 1).
  A slot past the cache writes the last one (only rows that finished get there)."""
  if jnp.ndim(t) == 0:
    return (jax.lax.dynamic_update_slice(gk_BKGHS, k_BKGH[..., None], (0, 0, 0, 0, t)),
            jax.lax.dynamic_update_slice(gv_BKGSH, v_BKGH[..., None, :], (0, 0, 0, t, 0)))
  # vmapped over rows: a scatter whose row dimension is a batching dimension, which the SPMD
  # partitioner keeps where the rows are (an indexed scatter gathers its indices and updates).
  put_k = jax.vmap(lambda a, x, i: jax.lax.dynamic_update_slice(a, x, (0, 0, 0, i)))
  put_v = jax.vmap(lambda a, x, i: jax.lax.dynamic_update_slice(a, x, (0, 0, i, 0)))
  return put_k(gk_BKGHS, k_BKGH[..., None], t), put_v(gv_BKGSH, v_BKGH[..., None, :], t)


def attend(q_RNH, pk_BKHP, pv_BKPH, valid_BP, gk_BKGHS, gv_BKGSH, t, scale):
  """Attention of each row's one query over its prompt's KV and its own slots <= t -> [R, N, H].

  In the group layout throughout: a prompt's G*Gq queries meet its keys in one [G*Gq, P] dot
  per kv head, each row's Gq queries its own slots in a [Gq, S] dot, and one softmax (a
  shared max and denominator) spans both parts.
  """
  R, N, H = q_RNH.shape
  B, K, G, _, S = gk_BKGHS.shape
  Gq, M = N // K, G * (N // K)
  f32, dt = jnp.float32, q_RNH.dtype
  q_BKGQH = _kv(jnp.swapaxes(q_RNH.reshape(B, G, K, Gq, H), 1, 2))
  sp_BKMP = jnp.einsum("bkmh,bkhp->bkmp", q_BKGQH.reshape(B, K, M, H), pk_BKHP.astype(dt),
                       preferred_element_type=f32) * scale
  sp_BKMP = jnp.where(valid_BP[:, None, None], sp_BKMP, _NEG)
  sg_BKGQS = jnp.einsum("bkgqh,bkghs->bkgqs", q_BKGQH, gk_BKGHS.astype(dt),
                        preferred_element_type=f32) * scale
  sg_BKMS = jnp.where(jnp.arange(S) <= _per_row(t, 5), sg_BKGQS, _NEG).reshape(B, K, M, S)
  m_BKM = jnp.maximum(jnp.max(sp_BKMP, -1), jnp.max(sg_BKMS, -1))
  ep_BKMP = jnp.exp(sp_BKMP - m_BKM[..., None])
  eg_BKMS = jnp.exp(sg_BKMS - m_BKM[..., None])
  den_BKM = jnp.sum(ep_BKMP, -1) + jnp.sum(eg_BKMS, -1)
  vd = gv_BKGSH.dtype
  op_BKMH = jnp.einsum("bkmp,bkph->bkmh", ep_BKMP.astype(vd), pv_BKPH, preferred_element_type=f32)
  og_BKGQH = jnp.einsum("bkgqs,bkgsh->bkgqh", eg_BKMS.reshape(B, K, G, Gq, S).astype(vd), gv_BKGSH,
                        preferred_element_type=f32)
  o_BKMH = (op_BKMH + og_BKGQH.reshape(B, K, M, H)) / den_BKM[..., None]
  o_RNH = jnp.swapaxes(o_BKMH.reshape(B, K, G, Gq, H), 1, 2).reshape(R, N, H).astype(dt)
  return nn.with_logical_constraint(o_RNH, ("act_batch", "act_heads", None))


def decode_step(cfg: ModelConfig, params, tok_R, pos_R, prompt, gen, t):
  """Feed token `tok_R` (RoPE position `pos_R`) into generated slot `t` (a scalar, or one per row
  with G = 1) -> (logits [R, V], gen)."""
  c = cfg
  H = c.head_dim
  norm = lambda p, x: RMSNorm(c.rms_eps, c.dtype, c.param_dtype).apply({"params": p}, x)
  emb_VD = params["embed"]["embedding"]
  x_R1D = _x(jnp.take(emb_VD, tok_R[:, None], axis=0).astype(c.dtype) * c.embedding_multiplier)
  cos, sin = rope_cos_sin(pos_R[:, None], H, c.rope_theta)
  new_k, new_v = [], []
  for layer, pk, pv, gk, gv in zip(params["layers"], prompt["k"], prompt["v"], gen["k"], gen["v"]):
    a = layer["attn"]
    h_R1D = norm(layer["attn_norm"], x_R1D)
    q_R1NH = nn.with_logical_constraint(dense(h_R1D, a["q"].astype(c.dtype)), _Q)
    k_R1KH = nn.with_logical_constraint(dense(h_R1D, a["k"].astype(c.dtype)), _K)
    v_R1KH = nn.with_logical_constraint(dense(h_R1D, a["v"].astype(c.dtype)), _K)
    if c.position_embedding == "rope":
      q_R1NH, k_R1KH = apply_rope(q_R1NH, cos, sin), apply_rope(k_R1KH, cos, sin)
    # This token's key and value go to slot t of each row (row b*G + g at [b, :, g]).
    B, K, G = gk.shape[:3]
    k_BKGH = jnp.swapaxes(k_R1KH.reshape(B, G, K, H), 1, 2).astype(gk.dtype)
    v_BKGH = jnp.swapaxes(v_R1KH.reshape(B, G, K, H), 1, 2).astype(gv.dtype)
    gk, gv = (_kv(a) for a in write_slot(gk, gv, k_BKGH, v_BKGH, t))
    o_RNH = attend(q_R1NH[:, 0], pk, pv, prompt["valid_BP"], gk, gv, t, c.attn_scale)
    x_R1D = _x(x_R1D + c.residual_multiplier * dense(o_RNH[:, None], a["o"].astype(c.dtype), n_in=2))
    x_R1D = _x(x_R1D + c.residual_multiplier * MLP(c).apply({"params": layer["mlp"]},
                                                            norm(layer["mlp_norm"], x_R1D)))
    new_k.append(gk)
    new_v.append(gv)
  x_RD = norm(params["final_norm"], x_R1D)[:, 0]
  if c.tie_embeddings:
    logits_RV = jax.lax.dot_general(x_RD, emb_VD.astype(c.dtype), (((1,), (1,)), ((), ())),
                                    preferred_element_type=jnp.float32)
  else:
    logits_RV = jnp.einsum("rd,dv->rv", x_RD, params["lm_head"].astype(c.dtype),
                           preferred_element_type=jnp.float32)
  # The head's matmul per vocabulary shard (not a gathered head), then the picks read whole rows:
  # the logits gather over the tensor axes.
  logits_RV = nn.with_logical_constraint(logits_RV, ("act_batch", "act_vocab"))
  logits_RV = nn.with_logical_constraint(logits_RV, ("act_batch", None))
  return logits_RV / c.logits_scaling, dict(k=tuple(new_k), v=tuple(new_v))

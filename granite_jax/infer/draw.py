"""Picking tokens with one key per row and token, so a row's draw does not depend on its batch.

Token t of request q is drawn with `fold_in(fold_in(rng, q), t)`: the same whether the request
shares a prefill with its group, sits in a compacted batch, or is decoded alone. A sampled token
is drawn by inverting the CDF of the (temperature-scaled, top-k/top-p filtered) softmax with
one uniform per row, two-level (blocks of 128, then within the chosen block): the same
distribution as `jax.random.categorical`'s Gumbel-max, without a random number per vocabulary
entry (R x V threefry draws were ~15 ms of a ~110 ms decode step at 64 rows x 8192 on CPU).
Greedy is the sampler's argmax, and log-probs are those of `sampler.pick_tokens`:
log_softmax(logits / T) before truncation (raw logits when greedy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from granite_jax.infer.logits import argmax, filter_logits

BLOCK = 128


def row_keys(rng: jax.Array, req_R: jax.Array) -> jax.Array:
  return jax.vmap(lambda q: jax.random.fold_in(rng, q))(req_R)


def inverse_cdf(w_RV: jax.Array, u_R: jax.Array, block: int = BLOCK) -> jax.Array:
  """Index i with cumsum(w)[i-1] <= u * sum(w) < cumsum(w)[i], for weights >= 0 (some > 0)."""
  R, V = w_RV.shape
  C = -(-V // block)
  w_RCb = jnp.pad(w_RV, ((0, 0), (0, C * block - V))).reshape(R, C, block)
  cum_RC = jnp.cumsum(jnp.sum(w_RCb, -1), -1)
  total_R = cum_RC[:, -1]
  x_R = jnp.minimum(u_R * total_R, jnp.nextafter(total_R, 0))  # < total: a block is always hit
  c_R = jnp.sum(cum_RC <= x_R[:, None], -1)  # first block whose cumulative mass exceeds x
  before_R = jnp.where(c_R > 0, jnp.take_along_axis(cum_RC, jnp.maximum(c_R - 1, 0)[:, None], -1)[:, 0],
                       0.0)
  w_Rb = jnp.take_along_axis(w_RCb, c_R[:, None, None], 1)[:, 0]
  j_R = jnp.sum(jnp.cumsum(w_Rb, -1) <= (x_R - before_R)[:, None], -1)
  # Rounding can put x past the block's own running sum: take its last token with weight.
  last_R = jnp.max(jnp.where(w_Rb > 0, jnp.arange(block), 0), -1)
  return (c_R * block + jnp.minimum(j_R, last_R)).astype(jnp.int32)


def pick_mode(temperature, top_p, top_k) -> str:
  """The branch of `pick_rows` that host-side settings select: "greedy", "sample" or "filter"."""
  if float(temperature) <= 0:
    return "greedy"
  return "sample" if int(top_k) <= 0 and float(top_p) >= 1.0 else "filter"


def pick_rows(logits_RV, keys_R, t, temperature, top_p, top_k, mode: str):
  """(token_R, logprob_R) for token index `t` (a scalar, or [R]) of each row; float32 logits,
  per-row base keys.

  `mode` (static, see `pick_mode`) compiles one branch, not all three under a `lax.cond`.
  """
  if mode == "greedy":
    tok_R = argmax(logits_RV)
    shifted_RV = logits_RV - jnp.max(logits_RV, -1, keepdims=True)
    return tok_R, _logprob(shifted_RV, jnp.sum(jnp.exp(shifted_RV), -1), tok_R)
  scaled_RV = logits_RV / temperature
  shifted_RV = scaled_RV - jnp.max(scaled_RV, -1, keepdims=True)
  e_RV = jnp.exp(shifted_RV)
  w_RV = e_RV
  if mode == "filter":
    kept_RV = filter_logits(scaled_RV, top_k, top_p)
    w_RV = jnp.exp(kept_RV - jnp.max(kept_RV, -1, keepdims=True))
  t_R = jnp.broadcast_to(t, keys_R.shape[:1])  # one index for all rows, or each row its own
  u_R = jax.vmap(lambda k, t: jax.random.uniform(jax.random.fold_in(k, t)))(keys_R, t_R)
  tok_R = inverse_cdf(w_RV, u_R)
  return tok_R, _logprob(shifted_RV, jnp.sum(e_RV, -1), tok_R)


def _logprob(shifted_RV, sum_R, tok_R):
  return jnp.take_along_axis(shifted_RV, tok_R[:, None], -1)[:, 0] - jnp.log(sum_R)

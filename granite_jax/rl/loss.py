"""The clipped policy-gradient loss of GRPO / DAPO, with k3 KL and three aggregations.

Per token: ratio = exp(logp - old_logp);
  pg = max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))   (asymmetric clip, DAPO)
  pg = min(pg, -A * dual_clip) where A < 0                             (dual clip, c > 1)
  kl = exp(ref - logp) - (ref - logp) - 1                              (k3 estimator)
  loss_t = pg + kl_coef * kl
Aggregations over the masked tokens:
  token-mean           sum_t loss_t / num_tokens (DAPO: every token weighs the same);
  seq-mean-token-mean  mean over sequences of each sequence's token mean (GRPO);
  seq-mean-token-sum   mean over sequences of each sequence's token sum.
`num_tokens` / `num_seqs` default to this batch's counts; the train step passes
the global counts of the whole batch so micro-batches and data-parallel shards
add up to exactly the full-batch gradient.

Packed rows (rl/packing.py): advantages may be per token [B, T] (each sequence's advantage on
its tokens) and `seq_ids_BT` (the segment ids) tells the sequences of a row apart, so the
sequence aggregations see sequences, not rows; without it each row is one sequence.

Off-policy rollouts (rl.off_policy_steps=1): truncated importance sampling, per token
  w = min(exp(old_logp - sampler_logp), tis_cap),  loss_t = w * pg + kl_coef * kl,
old_logp being the current policy's and sampler_logp the sampling policy's log-prob; w is a
constant (no gradient) and leaves the KL term alone. Metrics: tis_weight (mean w), tis_clip_frac
(tokens whose weight the cap cut) and logp_diff = mean |old_logp - sampler_logp| (on-policy a
numerics check: the sampler vs the train layout, ~0).

Numerics: log-ratios (logp - old, ref - logp) are clamped to +/-LOG_RATIO_CLAMP
(verl's 20) before `exp`, so a stale or far-off token cannot overflow; masked
tokens are replaced by 0 *before* any arithmetic (not multiplied by the mask
after it), so an inf/NaN log-prob on a padding token reaches neither a sum nor
a gradient (0 * inf = NaN in the backward pass of `x * mask`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 4.9e8: finite in float32, and far beyond any clip range


def token_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array, temperature: float = 1.0):
  """(log p(target) [B, T], entropy [B, T]) of softmax(logits / temperature), in float32."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32) / temperature, axis=-1)
  logp_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  entropy_BT = -jnp.sum(jnp.exp(logp_BTV) * logp_BTV, axis=-1)
  return logp_BT, entropy_BT


def policy_loss(logp_BT, old_logp_BT, ref_logp_BT, advantages_B, mask_BT, *,
                eps_low: float = 0.2, eps_high: float = 0.28, kl_coef: float = 0.0,
                agg: str = "token-mean", dual_clip: float | None = None,
                entropy_BT=None, num_tokens=None, num_seqs=None, seq_ids_BT=None,
                sampler_logp_BT=None, tis_cap: float | None = None):
  """-> (scalar loss, metrics dict). `ref_logp_BT` may be None when kl_coef == 0; `advantages`
  [B] (one per row) or [B, T] (per token); `tis_cap` needs `sampler_logp_BT`."""
  if agg not in AGGREGATIONS:
    raise ValueError(f"agg={agg!r} is not one of {list(AGGREGATIONS)}")
  if dual_clip is not None and dual_clip <= 1.0:
    raise ValueError(f"dual_clip={dual_clip} must be > 1 (or None)")
  if kl_coef and ref_logp_BT is None:
    raise ValueError("ref_logp_BT is required when kl_coef != 0")
  if tis_cap is not None and sampler_logp_BT is None:
    raise ValueError("tis_cap needs sampler_logp_BT")
  keep_BT = jnp.asarray(mask_BT) > 0
  mask_BT = keep_BT.astype(jnp.float32)
  zero = lambda x_BT: jnp.where(keep_BT, jnp.asarray(x_BT, jnp.float32), 0.0)  # masked -> 0 up front
  logp_BT = zero(logp_BT)
  adv_B1 = jnp.asarray(advantages_B, jnp.float32)
  adv_B1 = adv_B1[:, None] if adv_B1.ndim == 1 else zero(adv_B1)  # [B, 1] or [B, T]

  log_ratio_BT = jnp.clip(logp_BT - zero(old_logp_BT), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio_BT = jnp.exp(log_ratio_BT)
  clipped_BT = jnp.clip(ratio_BT, 1.0 - eps_low, 1.0 + eps_high)
  pg_BT = jnp.maximum(-adv_B1 * ratio_BT, -adv_B1 * clipped_BT)
  dual_BT = jnp.zeros_like(pg_BT, dtype=bool)
  if dual_clip is not None:
    cap_BT = -adv_B1 * dual_clip
    dual_BT = (adv_B1 < 0) & (pg_BT > cap_BT)
    pg_BT = jnp.where(adv_B1 < 0, jnp.minimum(pg_BT, cap_BT), pg_BT)
  if tis_cap is not None:
    is_log_BT = jnp.clip(zero(old_logp_BT) - zero(sampler_logp_BT), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    w_BT = jax.lax.stop_gradient(jnp.minimum(jnp.exp(is_log_BT), tis_cap))
    pg_BT = w_BT * pg_BT
  if ref_logp_BT is not None:
    d_BT = jnp.clip(zero(ref_logp_BT) - logp_BT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    kl_BT = jnp.exp(d_BT) - d_BT - 1.0
  else:
    kl_BT = jnp.zeros_like(logp_BT)
  loss_BT = pg_BT + kl_coef * kl_BT if kl_coef else pg_BT
  loss_BT = jnp.where(keep_BT, loss_BT, 0.0)

  n_local = jnp.sum(mask_BT)
  if agg == "token-mean":
    denom = jnp.maximum(n_local, 1.0) if num_tokens is None else num_tokens
    loss = jnp.sum(loss_BT) / denom
  else:
    per_seq_BS = sequence_sums(loss_BT, seq_ids_BT)
    count_BS = sequence_sums(mask_BT, seq_ids_BT)
    if agg == "seq-mean-token-mean":
      per_seq_BS = per_seq_BS / jnp.maximum(count_BS, 1.0)
    # Sequences without any trainable token (padding rows) do not count.
    denom = jnp.maximum(jnp.sum(count_BS > 0), 1) if num_seqs is None else num_seqs
    loss = jnp.sum(per_seq_BS) / denom

  mean = lambda x_BT: jnp.sum(jnp.where(keep_BT, x_BT, 0.0)) / jnp.maximum(n_local, 1.0)
  metrics = dict(
      pg_loss=mean(pg_BT), kl=mean(kl_BT), ratio=mean(ratio_BT),
      # Fraction of tokens whose clip binds (gradient cut): below 1-eps_low with A<0, above 1+eps_high with A>0.
      clip_frac_low=mean(((ratio_BT < 1.0 - eps_low) & (adv_B1 < 0)).astype(jnp.float32)),
      clip_frac_high=mean(((ratio_BT > 1.0 + eps_high) & (adv_B1 > 0)).astype(jnp.float32)),
      dual_clip_frac=mean(dual_BT.astype(jnp.float32)),
      num_tokens=n_local)
  if entropy_BT is not None:
    metrics["entropy"] = mean(zero(entropy_BT))
  if sampler_logp_BT is not None:
    metrics["logp_diff"] = mean(jnp.abs(zero(old_logp_BT) - zero(sampler_logp_BT)))
  if tis_cap is not None:
    metrics["tis_weight"] = mean(w_BT)
    metrics["tis_clip_frac"] = mean((is_log_BT > jnp.log(tis_cap)).astype(jnp.float32))
  return loss, metrics


def sequence_sums(x_BT, seq_ids_BT=None):
  """Per-sequence sums [B, S] of x: sequence s of row b is the tokens with seq id s (ids in
  [0, T]; 0 = padding, whose sums the callers zero by mask). None: each row is one sequence."""
  x_BT = jnp.asarray(x_BT, jnp.float32)
  if seq_ids_BT is None:
    return jnp.sum(x_BT, axis=-1, keepdims=True)
  T = x_BT.shape[-1]
  return jax.vmap(lambda x_T, s_T: jax.ops.segment_sum(x_T, s_T, num_segments=T + 1))(
      x_BT, jnp.asarray(seq_ids_BT, jnp.int32))


def count_sequences(mask_BT, seq_ids_BT=None):
  """Sequences with at least one trained token (the sequence aggregations' denominator)."""
  return jnp.sum(sequence_sums(jnp.asarray(mask_BT) > 0, seq_ids_BT) > 0)

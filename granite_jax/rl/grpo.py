"""Group-relative advantages (GRPO): each sample's reward against its group's."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def group_advantages(rewards_G: jax.Array, eps: float = 1e-6, scale_by_std: bool = True,
                     ddof: int = 0) -> jax.Array:
  """(r - mean(r)) / (std(r) + eps) over the last axis: rewards [G] or [P, G].

  `scale_by_std=False` keeps the mean-centred reward only (Dr. GRPO). `ddof=0`
  is the population std (NumPy's default); TRL and verl use 1. A group whose
  rewards are all equal gets advantage exactly 0: each group is first shifted by
  its own first reward, so a constant group is exactly 0 before the float32 mean
  (whose rounding error, divided by std + eps ~ 1e-6, would otherwise give e.g.
  -0.49 for 16 rewards of 7.3). The shift also keeps large rewards (1e6) precise.
  """
  r = jnp.asarray(rewards_G, jnp.float32)
  if r.ndim not in (1, 2):
    raise ValueError(f"rewards: expected shape [G] or [P, G], got {r.shape}")
  r = r - r[..., :1]  # exact in float32 when equal; mean/std are shift-invariant
  centred = r - jnp.mean(r, axis=-1, keepdims=True)
  if not scale_by_std:
    return centred
  if r.shape[-1] - ddof < 1:
    raise ValueError(f"rewards: a group of {r.shape[-1]} cannot have ddof={ddof}")
  return centred / (jnp.std(r, axis=-1, keepdims=True, ddof=ddof) + eps)

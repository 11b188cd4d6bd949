"""Which prompts an RL step trains on: the prompt set in shuffled epochs, as a pure function of the step.

Step `s` takes the prompts at positions s*P .. s*P + P - 1 of one endless sequence
made of permutations of range(n): epoch e is `default_rng([seed, stream, e]).permutation(n)`.
So every prompt is used once before any is repeated (at 500 steps x 64 prompts, the 45,504
multi-domain prompts are each seen at least once, not about half of them as with independent
random draws), and the indices depend only on (n, seed, step): a resumed run sees exactly the
prompts an uninterrupted one would, with no data-iterator state in the checkpoint.

Dynamic sampling's extra generation batches of a step (draw d >= 1) come from a second,
independent shuffled-epoch stream (see `step_prompts`), so they do not shift the main order.
"""
from __future__ import annotations

import numpy as np


def epoch_permutation(n_prompts: int, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
  return np.random.default_rng([seed, stream, epoch]).permutation(n_prompts)


def positions_to_indices(n_prompts: int, seed: int, start: int, count: int, stream: int = 0) -> np.ndarray:
  """Prompt indices at positions [start, start + count) of the shuffled-epoch sequence."""
  if n_prompts < 1:
    raise ValueError(f"n_prompts={n_prompts}: the RL prompt set is empty")
  if start < 0 or count < 0:
    raise ValueError(f"start={start} and count={count} must be >= 0")
  pos = np.arange(start, start + count, dtype=np.int64)
  epochs, within = np.divmod(pos, n_prompts)
  out = np.empty(count, np.int64)
  for e in np.unique(epochs):  # a step spans at most a few epochs (one unless n < count)
    sel = epochs == e
    out[sel] = epoch_permutation(n_prompts, seed, int(e), stream)[within[sel]]
  return out


def step_prompts(n_prompts: int, seed: int, step: int, prompts_per_step: int, draw: int = 0,
                 max_draws_per_step: int = 1) -> np.ndarray:
  """Indices of the prompts of RL step `step` (0-based), generation batch `draw` of that step.

  draw 0 (the only one without dynamic sampling) walks stream 0 at P prompts per step. Extra
  draws (1 .. max_draws_per_step - 1) walk stream 1 at (max_draws_per_step - 1) x P per step,
  so they are also shuffled epochs and also a pure function of the step.
  """
  if draw < 0 or draw >= max(max_draws_per_step, 1):
    raise ValueError(f"draw={draw} must be in [0, max_draws_per_step={max_draws_per_step})")
  P = prompts_per_step
  if draw == 0:
    return positions_to_indices(n_prompts, seed, step * P, P, stream=0)
  start = (step * (max_draws_per_step - 1) + draw - 1) * P
  return positions_to_indices(n_prompts, seed, start, P, stream=1)

"""One-step-off-policy rollouts (rl.off_policy_steps=1): generation for step k+1 overlaps training on step k.

The RL loop asks `Rollouts.take(params, step)` for step k's batch, `params` being the policy
after k steps (version k). On-policy (lag 0) it generates with them, there and then. One step
off, it returns the batch a background thread has been generating since the previous call, with
the params of version k-1, and starts the next one (step k+1, with version k) before returning,
so that thread samples and scores while the caller runs the log-prob passes and the train step k.

Donation: the train step donates the train state's buffers, version k's params among them, while
the thread still samples with them. So the thread gets its own copy (`jnp.copy` of every leaf,
enqueued before the train step that donates the originals; JAX orders the donation after it):
one more copy of the params on the device for the length of a rollout. (A sampler on its own
layout, issue 25 item 3, would make that copy as its reshard anyway.)

What overlaps: all the host work of a rollout (the decode loop's dispatch, detokenizing, the
reward workers, packing) runs beside the device's train step; the device work of sampling and
training shares the device (on a CPU, XLA runs both on its thread pool; on one GPU their
kernels interleave on its streams): the win is the host side plus whatever the device has idle.

The first step of a run, and the first after a resume (no version k-1 kept), is on-policy:
`policy_lag` 0, then 1. Evaluation and other users of the reward scorer take `lock`, so they
never score at the same time as the thread.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable

import jax
import jax.numpy as jnp


class Rollouts:
  """`generate(params, step) -> (batch, stats)`: step's rollout sampled with `params`."""

  def __init__(self, generate: Callable, *, off_policy_steps: int = 0, last_step: int | None = None):
    if off_policy_steps not in (0, 1):
      raise ValueError(f"rl.off_policy_steps={off_policy_steps} must be 0 (on-policy) or 1")
    self.generate, self.lag, self.last_step = generate, off_policy_steps, last_step
    self.lock = threading.Lock()
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rollout") if self.lag else None
    self._pending = None  # (step, version, future)

  def _run(self, params, step):
    with self.lock:
      return self.generate(params, step)

  def take(self, params, step: int) -> tuple[dict, dict]:
    """Step `step`'s (batch, stats), stats["policy_lag"] = step - the sampling params' version."""
    pending, self._pending = self._pending, None
    if pending is not None and pending[0] == step:
      (batch, stats), version = pending[2].result(), pending[1]
    else:
      if pending is not None:  # asked out of order (never in a run): drop it
        pending[2].result()
      batch, stats = self._run(params, step)
      version = step
    if self.lag and (self.last_step is None or step + 1 < self.last_step):
      snapshot = jax.tree.map(jnp.copy, params)  # the train step donates `params`' buffers
      self._pending = (step + 1, step, self._pool.submit(self._run, snapshot, step + 1))
    return batch, dict(stats, policy_lag=float(step - version))

  def close(self) -> None:
    """Waits for a rollout in flight (its reward workers must not close under it)."""
    pending, self._pending = self._pending, None
    if pending is not None:
      try:
        pending[2].result()
      except Exception:  # noqa: BLE001 - an unused rollout's error is not the run's
        pass
    if self._pool is not None:
      self._pool.shutdown(wait=True)

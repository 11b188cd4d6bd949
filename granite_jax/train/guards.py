"""Numerics guards: non-finite steps and loss spikes, checked on host one step late.

The jitted step already refuses to apply a non-finite update (params and
optimizer state stay as they were). This class decides what the run does
about it: count and continue, or stop with a message naming the step and
the offending quantity; and it stops after too many consecutive skips.
"""
from __future__ import annotations

import math


class NonFiniteError(FloatingPointError):
  pass


class Guard:
  def __init__(self, on_nonfinite: str = "skip", max_consecutive_skips: int = 5,
               spike_factor: float = 0.0, ema_decay: float = 0.98):
    self.on_nonfinite = on_nonfinite
    self.max_consecutive_skips = max_consecutive_skips
    self.spike_factor = spike_factor
    self.ema_decay = ema_decay
    self.consecutive = 0
    self.total_skipped = 0
    self.loss_ema: float | None = None

  def check(self, step: int, loss: float, grad_norm: float, skipped: bool) -> dict:
    """Returns events for the metrics record; raises NonFiniteError to stop the run."""
    events: dict = {}
    if skipped:
      what = "loss" if not math.isfinite(loss) else "grad_norm"
      value = loss if what == "loss" else grad_norm
      self.consecutive += 1
      self.total_skipped += 1
      events.update(skipped=1, skipped_total=self.total_skipped, nonfinite=what)
      if self.on_nonfinite == "stop":
        raise NonFiniteError(f"step {step}: non-finite {what}={value}; stopping "
                             "(train.on_nonfinite='stop'); the update was not applied")
      if self.consecutive > self.max_consecutive_skips:
        raise NonFiniteError(f"step {step}: {self.consecutive} consecutive non-finite steps "
                             f"(last: {what}={value}) > train.max_consecutive_skips="
                             f"{self.max_consecutive_skips}; stopping before any checkpoint of this state")
      return events
    self.consecutive = 0
    if self.loss_ema is not None and self.spike_factor > 0 and loss > self.spike_factor * self.loss_ema:
      events.update(loss_spike=1, loss_ema=self.loss_ema)
    self.loss_ema = loss if self.loss_ema is None else (
        self.ema_decay * self.loss_ema + (1 - self.ema_decay) * loss)
    return events


def apply_if_finite(state, grads, loss, tx):
  """(new state, grad_norm, skipped): the optimizer update, unless the loss or the gradient
  norm is non-finite; then params and optimizer state stay as they were (step still advances)."""
  import jax
  import jax.numpy as jnp
  import optax

  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # Zero non-finite grads so the (discarded) update computation stays finite.
  safe = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
  updates, opt_state = tx.update(safe, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state).replace(step=state.step + 1)
  return new, grad_norm, 1 - ok.astype(jnp.int32)

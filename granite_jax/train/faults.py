"""Documented test hooks that inject faults into a real run (the fault-matrix tests use them).

GRANITE_FAULT_NAN_STEPS=3,5   the train steps 3 and 5 see NaN parameters inside the jitted
                              step (loss and gradients non-finite); the state after the step
                              is the state before it, as for a real non-finite step.
GRANITE_FAULT_SAVE_FAIL_STEP=4  the checkpoint save of step 4 fails as a full disk would
                              (ckpt/manager.py).
GRANITE_FAULT_KILL_STEP=5     the process SIGKILLs itself once step 5 is dispatched (before
                              its checkpoint, if any): a crash at a known point.
GRANITE_FAULT_SIGTERM_STEP=3  the process sends itself SIGTERM after step 3: the preemption
                              path (handler, checkpoint, exit 42) at a known point.
Unset (the normal case), the session compiles the plain step: nothing here costs anything.
"""
from __future__ import annotations

import os
import signal

import jax
import jax.numpy as jnp


def nan_steps() -> frozenset[int]:
  raw = os.environ.get("GRANITE_FAULT_NAN_STEPS", "").strip()
  try:
    return frozenset(int(s) for s in raw.split(",") if s.strip())
  except ValueError:
    raise ValueError(f"GRANITE_FAULT_NAN_STEPS={raw!r} must be comma-separated step numbers") from None


def _step_env(name: str) -> int | None:
  raw = os.environ.get(name, "").strip()
  if not raw:
    return None
  if not raw.isdigit():
    raise ValueError(f"{name}={raw!r} must be a step number")
  return int(raw)


def signal_after(step: int) -> None:
  """The KILL and SIGTERM hooks, called by the session after each step."""
  if step == _step_env("GRANITE_FAULT_SIGTERM_STEP"):
    os.kill(os.getpid(), signal.SIGTERM)
  if step == _step_env("GRANITE_FAULT_KILL_STEP"):
    os.kill(os.getpid(), signal.SIGKILL)


def poisonable(step_fn):
  """(state, batch) -> ... becomes (state, batch, factor) -> ...: params x factor (1.0 or NaN)
  go into the step, and a poisoned step returns the unpoisoned state it was given."""
  def fn(state, batch, factor):
    poisoned = state.replace(params=jax.tree.map(lambda p: p * factor.astype(p.dtype), state.params))
    new, metrics = step_fn(poisoned, batch)
    bad = jnp.isnan(factor)
    keep = lambda a, b: jnp.where(bad, b, a)
    return new.replace(params=jax.tree.map(keep, new.params, state.params),
                       opt_state=jax.tree.map(keep, new.opt_state, state.opt_state)), metrics
  return fn

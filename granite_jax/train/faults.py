"""Documented test hooks that inject faults into a real run (the fault-matrix tests use them).

GRANITE_FAULT_NAN_STEPS=3,5   the train steps 3 and 5 see NaN token embeddings inside the
                              jitted step (the batch as the model sees it: loss and gradients
                              non-finite). The hook leaves params and optimizer state alone:
                              only the step's own guard keeps the update out.
GRANITE_FAULT_SAVE_FAIL_STEP=4  the checkpoint save of step 4 fails as a full disk would
                              (ckpt/manager.py).
GRANITE_FAULT_KILL_STEP=5     the process SIGKILLs itself once step 5 is dispatched (before
                              its checkpoint, if any): a crash at a known point.
GRANITE_FAULT_SIGTERM_STEP=3  the process sends itself SIGTERM after step 3: the preemption
                              path (handler, checkpoint, exit 42) at a known point.
GRANITE_FAULT_SLOW_PROCESS=1:0.5  process 1 sleeps 0.5 s after dispatching each step: a slow host
                              (data, CPU) the straggler check (train/stragglers.py) must name.
Unset (the normal case), the session compiles the plain step: nothing here costs anything.
"""
from __future__ import annotations

import os
import signal

import flax.linen as nn

from granite_jax.model.layers import Embed


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
  """(state, batch) -> ... becomes (state, batch, factor) -> ...: every token embedding the model
  looks up (the batch as the model sees it) is multiplied by `factor` (NaN at a poisoned step), in
  every trainer (LM, RL, reward model: all embed tokens). Params and optimizer state go in as they
  are and nothing here puts them back, so a state after a poisoned step equal to the one before is
  the step's own guard at work (tests/train/test_poisoned_step.py)."""
  def fn(state, batch, factor):
    def poison(next_fn, args, kwargs, context):
      out = next_fn(*args, **kwargs)
      if isinstance(context.module, Embed) and context.method_name == "__call__":
        out = out * factor.astype(out.dtype)
      return out

    with nn.intercept_methods(poison):
      return step_fn(state, batch)
  return fn


def slow_process_seconds() -> float:
  """GRANITE_FAULT_SLOW_PROCESS=P:SECONDS: the seconds this process sleeps per step (0: unset,
  or another process)."""
  raw = os.environ.get("GRANITE_FAULT_SLOW_PROCESS", "").strip()
  if not raw:
    return 0.0
  try:
    p, sec = raw.split(":")
    p, sec = int(p), float(sec)
  except ValueError:
    raise ValueError(f"GRANITE_FAULT_SLOW_PROCESS={raw!r} must be PROCESS:SECONDS, e.g. 1:0.5") from None
  import jax
  return sec if jax.process_index() == p else 0.0

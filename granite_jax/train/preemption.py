"""SIGTERM (and JAX's multi-host preemption sync point) -> checkpoint and exit.

On a signal the loop finishes the step in flight, saves a checkpoint, waits
for it to commit, and exits with EXIT_PREEMPTED so a scheduler can tell a
preemption from a crash. The next start resumes from that checkpoint.
"""
from __future__ import annotations

import signal

import jax

EXIT_PREEMPTED = 42


class Preemption:
  def __init__(self, signals=(signal.SIGTERM,)):
    self.requested = False
    self._previous = {}
    for s in signals:
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread (e.g. a notebook worker): no handler
        pass

  def _handle(self, signum, frame):
    del frame
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # Every process must stop at the same step; JAX's sync point agrees on it.
      from jax.experimental import multihost_utils
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step)) or self._agree()
      except RuntimeError:  # preemption service not enabled
        return self._agree()
    return self.requested

  def _agree(self) -> bool:
    from jax.experimental import multihost_utils
    import numpy as np
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.max(flags))

  def restore(self):
    for s, h in self._previous.items():
      signal.signal(s, h)


def exit_preempted(step: int, ckpt, bar=None) -> None:
  """After the preemption checkpoint was saved: commit it, then leave with EXIT_PREEMPTED."""
  ckpt.close()
  if bar is not None:
    bar.close()
  print(f"granite_jax: preempted; checkpoint at step {step} committed, exiting with {EXIT_PREEMPTED}",
        flush=True)
  raise SystemExit(EXIT_PREEMPTED)

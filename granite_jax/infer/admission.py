"""The requests of an engine call that wait for a row (infer/engine.py's continuous batching).

Host-side bookkeeping only: which request goes into which finished row, per data shard (a request
waits for a row of its prompt's shard, so nothing moves between shards), in request order, as
index arrays bucketed to powers of two (few compiled shapes of the admission program).
"""
from __future__ import annotations

import collections

import numpy as np


def next_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


class Queue:
  """The requests (budget > 0) that wait for a row, per data shard (a request waits for a row of
  its prompt's shard), in request order."""

  def __init__(self, budget_Q, D: int, started_R):
    Qd = len(budget_Q) // D
    waits = np.ones(len(budget_Q), bool)
    waits[started_R] = False
    self.wait = [collections.deque(q for q in range(d * Qd, (d + 1) * Qd) if waits[q] and budget_Q[q] > 0)
                 for d in range(D)]

  def waiting(self) -> bool:
    return any(self.wait)

  def admits(self, done_DR) -> bool:
    return any(w and d.any() for w, d in zip(self.wait, done_DR))

  def admit(self, done_DR, G: int) -> dict:
    """The next requests into each shard's finished rows: prompts [D*p] (the prompts to prefill,
    p per shard, a power of two, padded with repeats), at [D, r] (each new row's prompt among its
    shard's p), slot [D, r] (its row within the shard; padding: past the end), req [D*r] (request
    ids; padding -1); r a power of two (few compiled shapes)."""
    D, Rd = done_DR.shape
    reqs = []
    for w, d in zip(self.wait, done_DR):
      free = np.flatnonzero(d)
      reqs.append([w.popleft() for _ in range(min(len(free), len(w)))])
    r = next_pow2(max(len(q) for q in reqs))
    own = [sorted({q // G for q in qs}) for qs in reqs]
    p = next_pow2(max(len(b) for b in own))
    prompts, at = np.zeros((D, p), np.int32), np.zeros((D, r), np.int32)
    slot, req = np.full((D, r), Rd, np.int32), np.full((D, r), -1, np.int32)
    for i, (qs, b, d) in enumerate(zip(reqs, own, done_DR)):
      # A shard with nothing to admit prefills some prompt (prompt 0) and admits no row.
      b = b or [0]
      prompts[i] = (b * p)[:p]
      at[i, :len(qs)] = [b.index(q // G) for q in qs]
      slot[i, :len(qs)] = np.flatnonzero(d)[:len(qs)]
      req[i, :len(qs)] = qs
    return dict(prompts=prompts.ravel(), at=at, slot=slot, req=req.ravel())

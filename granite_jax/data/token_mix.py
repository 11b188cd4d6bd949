"""Mixing domains by TOKEN share: weights say what fraction of the trained tokens each domain gets.

`TokenMixIterDataset` emits, at every step, the next element of the domain that is furthest
below its share of the tokens emitted so far (largest `w_d * total - tokens_d`). So after any
prefix of the stream, each domain's token count is within one element (<= seq_len tokens) of
`w_d * total`, whatever its document lengths: a domain of 50x longer documents gets its weight
in tokens, not 1/50 of it. Why this and not the alternatives: mixing packed rows by weight still
counts padding as the domain's tokens (rows of short and long documents pack differently), and
weighting documents by weight / mean length needs a pass over every source and is only right on
average. This is deterministic (no RNG; the order inside each domain is already shuffled, and
packing shuffles its bins), needs no pre-pass, and its whole state is one integer per domain.

The state is keyed by domain name, so a checkpoint restores into a changed mixture: domains
present in both resume where they were, new ones start at their beginning; when the weights
changed, the token accounting restarts (no burst of the domains the new weights favour).
Like `grain.IterDataset.mix`, the stream ends when the first domain runs out.
"""
from __future__ import annotations

from typing import Any

import grain
import numpy as np


class TokenMixIterDataset(grain.IterDataset):
  """Mixes {domain: IterDataset of dicts with a 1-D `tokens` array} by token share."""

  def __init__(self, parents: dict[str, grain.IterDataset], weights: dict[str, float]):
    if set(parents) != set(weights) or not parents:
      raise ValueError(f"domains of the datasets {sorted(parents)} and weights {sorted(weights)} differ")
    if any(not w > 0 for w in weights.values()):
      raise ValueError(f"token-mix weights must be > 0, got {weights}")
    super().__init__(list(parents.values()))
    self._names = list(parents)
    total = float(sum(weights.values()))
    self._weights = [weights[n] / total for n in self._names]

  def __iter__(self) -> grain.DatasetIterator:
    return _TokenMixIterator(self._names, [iter(p) for p in self._parents], self._weights)

  def __str__(self) -> str:
    return f"TokenMixIterDataset({dict(zip(self._names, self._weights))})"


class _TokenMixIterator(grain.DatasetIterator):

  def __init__(self, names: list[str], parents: list[grain.DatasetIterator], weights: list[float]):
    super().__init__(parents)
    self._names, self._w = names, np.asarray(weights, np.float64)
    self._tokens = np.zeros(len(names), np.int64)
    self._stop = False

  def __next__(self) -> Any:
    if self._stop:
      raise StopIteration
    # (total + 1): at the start (all deficits 0) the largest weight goes first.
    i = int(np.argmax(self._w * (self._tokens.sum() + 1) - self._tokens))
    try:
      elem = next(self._parents[i])
    except StopIteration:
      self._stop = True
      raise
    self._tokens[i] += len(elem["tokens"])
    return elem

  def get_state(self) -> dict[str, Any]:
    return {"parents": {n: p.get_state() for n, p in zip(self._names, self._parents)},
            "tokens": {n: int(t) for n, t in zip(self._names, self._tokens)},
            "weights": {n: float(w) for n, w in zip(self._names, self._w)},
            "stop": self._stop}

  def set_state(self, state: dict[str, Any]) -> None:
    for n, p in zip(self._names, self._parents):
      if (s := state["parents"].get(n)) is not None:
        p.set_state(s)
    same_mixture = state.get("weights") == {n: float(w) for n, w in zip(self._names, self._w)}
    self._tokens = np.asarray([state["tokens"][n] if same_mixture else 0 for n in self._names], np.int64)
    self._stop = bool(state.get("stop", False))

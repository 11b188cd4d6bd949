"""The reward contract: a pure `(prompt, response, reference) -> float` that never crashes the loop.

`Reward` wraps such a function: malformed model output (anything the function
raises on) gives `min_reward` and is counted in `failures`; a malformed
*reference* is a data bug and raises `RewardDataError` (a ValueError) at once.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class RewardDataError(ValueError):
  """The reference (dataset side) is malformed: fix the data, do not score 0."""


@dataclasses.dataclass
class Reward:
  name: str
  fn: Callable[[str, str, Any], float]
  min_reward: float = 0.0
  failures: int = 0
  calls: int = 0

  def __call__(self, prompt: str, response: str, reference: Any) -> float:
    self.calls += 1
    try:
      r = float(self.fn(prompt, response, reference))
      if not math.isfinite(r):
        raise ValueError(f"non-finite reward {r}")
      return r
    except RewardDataError:
      raise
    except Exception as e:  # noqa: BLE001 -- any model output must be scorable
      self.failures += 1
      if self.failures == 1:
        log.warning("reward %s: scoring failed (%s: %s); returning %s", self.name,
                    type(e).__name__, e, self.min_reward)
      return self.min_reward


def boxed(text: str) -> str | None:
  """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if absent."""
  start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
  if start < 0:
    return None
  i = text.index("{", start) + 1
  depth, j = 1, i
  while j < len(text) and depth:
    depth += {"{": 1, "}": -1}.get(text[j], 0)
    j += 1
  return text[i:j - 1] if depth == 0 else None


_ANSWER_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)


def final_answer(text: str) -> str:
  """The boxed answer, else what follows the last 'answer is/:', else the last non-empty line."""
  b = boxed(text)
  if b is not None:
    return b.strip()
  hits = _ANSWER_RE.findall(text)
  if hits:
    return hits[-1].strip().rstrip(".").strip()
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  return lines[-1] if lines else ""

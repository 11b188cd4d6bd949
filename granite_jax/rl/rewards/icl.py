"""In-context learning: exact match of the answer (whitespace-normalized, case-sensitive).

Reference: the expected output string. Either the whole response or its final
answer (boxed / 'answer:' / last line) must equal it exactly.
"""
from __future__ import annotations

from granite_jax.rl.rewards.base import RewardDataError, final_answer


def _norm(s: str) -> str:
  return " ".join(s.split())


def icl_reward(prompt: str, response: str, reference) -> float:
  if not isinstance(reference, str):
    raise RewardDataError(f"icl reward: reference must be a string, got {type(reference).__name__}")
  gold = _norm(reference)
  return float(_norm(response) == gold or _norm(final_answer(response)) == gold)

"""General chat: a reward-model hook.

`make_chat_reward(rm)` turns any callable `rm(prompt, response) -> float` (a
served reward model, an LLM judge) into a reward function; the reference is
passed as a third argument when the callable takes one. Scores are used as
given (no clipping): pick `min_reward` of the wrapping `Reward` to match.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def make_chat_reward(reward_model: Callable[..., float]) -> Callable[[str, str, Any], float]:
  if not callable(reward_model):
    raise TypeError(f"chat reward: reward_model must be callable, got {type(reward_model).__name__}")
  try:
    takes_ref = len(inspect.signature(reward_model).parameters) >= 3
  except (TypeError, ValueError):
    takes_ref = False

  def chat_reward(prompt: str, response: str, reference=None) -> float:
    if takes_ref:
      return float(reward_model(prompt, response, reference))
    return float(reward_model(prompt, response))
  return chat_reward

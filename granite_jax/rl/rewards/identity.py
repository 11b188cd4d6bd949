"""Identity and knowledge calibration (the third RL stage).

identity:    reference dict(name="Granite", forbidden=[...]): 1.0 when the reply names the model
             (whole word, any case) and none of the forbidden names (other assistants), else 0.0.
calibration: reference dict(answerable=False) -> 1.0 for an abstention ("I don't know", ...);
             dict(answerable=True, answer="42") -> 1.0 for the right final answer without abstaining.
             Rewarding abstention only where the question has no answer keeps it from becoming a
             universal escape.
"""
from __future__ import annotations

import re

from granite_jax.rl.rewards.base import RewardDataError
from granite_jax.rl.rewards.math_answer import equivalent, extract_answer

ABSTAIN = ("i don't know", "i do not know", "i'm not sure", "i am not sure", "cannot be answered",
           "can't be answered", "no way to know", "i don't have that information")


def abstains(response: str) -> bool:
  text = response.lower().replace("\u2019", "'")
  return any(p in text for p in ABSTAIN)


def identity_reward(prompt: str, response: str, reference) -> float:
  if not isinstance(reference, dict) or not str(reference.get("name", "")).strip():
    raise RewardDataError(f"identity reward: reference needs a non-empty 'name', got {reference!r}")
  named = lambda n: re.search(rf"(?<!\w){re.escape(n)}(?!\w)", response, re.IGNORECASE) is not None
  return float(named(reference["name"]) and not any(named(n) for n in reference.get("forbidden", ())))


def calibration_reward(prompt: str, response: str, reference) -> float:
  if not isinstance(reference, dict) or "answerable" not in reference:
    raise RewardDataError(f"calibration reward: reference needs 'answerable', got {reference!r}")
  if not reference["answerable"]:
    return float(abstains(response))
  if "answer" not in reference:
    raise RewardDataError(f"calibration reward: an answerable reference needs 'answer', got {reference!r}")
  pred = extract_answer(response)
  return float(not abstains(response) and pred is not None and equivalent(pred, str(reference["answer"])))

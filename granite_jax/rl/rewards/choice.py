"""Science / logic: multiple choice (a letter) or an exact short answer.

Reference: a single letter A-J (multiple choice) or the exact answer string,
or dict(answer=..., choices=[...]) where the model may also answer with the
option's text. Reward 1.0 on a match, else 0.0.
"""
from __future__ import annotations

import re
import string

from granite_jax.rl.rewards.base import RewardDataError, boxed, final_answer

LETTERS = "ABCDEFGHIJ"
_LETTER_PATTERNS = (
    re.compile(r"answer\s*(?:is|:)?\s*[\(\[]?\s*([A-J])\b[\)\]]?", re.IGNORECASE),
    re.compile(r"^\s*[\(\[]?([A-J])[\)\]\.:]?\s*$", re.MULTILINE),
    re.compile(r"\(([A-J])\)"),
)


def extract_letter(response: str) -> str | None:
  b = boxed(response)
  if b is not None:
    m = re.fullmatch(r"\s*(?:\\text\{)?\(?([A-Ja-j])\)?\}?\s*", b)
    return m.group(1).upper() if m else None
  for pat in _LETTER_PATTERNS:
    hits = pat.findall(response)
    if hits:
      return hits[-1].upper()
  return None


def normalize_text(s: str) -> str:
  s = s.lower().strip()
  s = s.translate(str.maketrans("", "", string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def _named_choice(answer: str, choices: list[str]) -> int | None:
  """Index of the one option whose text the answer is or contains (None if zero or several)."""
  a = f" {normalize_text(answer)} "
  hits = [i for i, c in enumerate(choices) if f" {normalize_text(str(c))} " in a]
  return hits[0] if len(hits) == 1 else None


def choice_reward(prompt: str, response: str, reference) -> float:
  choices = None
  if isinstance(reference, dict):
    choices, reference = reference.get("choices"), reference.get("answer")
  if not isinstance(reference, str) or not reference.strip():
    raise RewardDataError(f"choice reward: reference answer must be a non-empty string, got {reference!r}")
  gold = reference.strip()
  if len(gold) == 1 and gold.upper() in LETTERS:
    letter = extract_letter(response)
    if letter is not None:
      return float(letter == gold.upper())
    if choices:  # answered with the option text instead of its letter
      return float(_named_choice(final_answer(response), choices) == LETTERS.index(gold.upper()))
    return 0.0
  return float(normalize_text(final_answer(response)) == normalize_text(gold))

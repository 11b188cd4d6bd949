"""Temporal reasoning: dates, times and orderings compared after normalization.

Reference: a date ("2021-03-04", "March 4, 2021", "04/03/2021" is read as
month/day), a list of items in chronological order, or any other short
answer (compared case/punctuation-insensitively). The model's answer is the
boxed / 'answer:' / last-line answer. Reward 1.0 on a match, else 0.0.
"""
from __future__ import annotations

import datetime as dt
import re

from granite_jax.rl.rewards.base import RewardDataError, final_answer
from granite_jax.rl.rewards.choice import normalize_text

DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%B %d, %Y", "%B %d %Y", "%b %d, %Y", "%b %d %Y",
                "%d %B %Y", "%d %b %Y", "%m/%d/%Y", "%Y-%m", "%B %Y", "%b %Y", "%Y")


def parse_date(text: str) -> str | None:
  """ISO form (YYYY[-MM[-DD]]) of a date written in a common format, else None."""
  t = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.strip().rstrip("."))
  t = " ".join(t.replace(",", ", ").split()).replace(" ,", ",")
  for fmt in DATE_FORMATS:
    try:
      d = dt.datetime.strptime(t, fmt)
    except ValueError:
      continue
    return {"%Y": d.strftime("%Y"), "%Y-%m": d.strftime("%Y-%m"), "%B %Y": d.strftime("%Y-%m"),
            "%b %Y": d.strftime("%Y-%m")}.get(fmt, d.strftime("%Y-%m-%d"))
  return None


def _split_order(text: str) -> list[str]:
  parts = re.split(r"\s*(?:,|;|<|->|→|\bthen\b|\n)\s*", text)
  return [normalize_text(p) for p in parts if normalize_text(p)]


def temporal_reward(prompt: str, response: str, reference) -> float:
  answer = final_answer(response)
  if isinstance(reference, (list, tuple)):
    if not reference:
      raise RewardDataError("temporal reward: empty ordering reference")
    return float(_split_order(answer) == [normalize_text(str(x)) for x in reference])
  if not isinstance(reference, str) or not reference.strip():
    raise RewardDataError(f"temporal reward: reference must be a string or a list, got {reference!r}")
  gold_date = parse_date(reference)
  if gold_date is not None:
    return float(parse_date(answer) == gold_date)
  return float(normalize_text(answer) == normalize_text(reference))

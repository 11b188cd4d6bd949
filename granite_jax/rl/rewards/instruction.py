"""Instruction following: programmatic checks of verifiable constraints (IFEval style).

Reference: a list of constraints (or dict(constraints=[...], all_or_nothing=bool)),
each a dict with a `type` and its arguments:
  word_count(min=, max=)        keywords(words=[..])       forbidden_words(words=[..])
  keyword_frequency(word=, min=, max=)   bullet_count(n=)  paragraph_count(n=)  (blank-line separated)
  sentence_count(min=, max=)    starts_with(text=)  ends_with(text=)   lowercase   uppercase
  no_commas   json_format   title (a <<title>>)   quotation (wrapped in "..")
  placeholders(n=)  ([name] markers)   sections(marker=, n=)
Reward: the fraction of constraints met (1.0/0.0 with all_or_nothing).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable

from granite_jax.rl.rewards.base import RewardDataError


def _words(text: str) -> list[str]:
  return re.findall(r"\b\w+(?:['-]\w+)*\b", text)


def _has_word(text: str, word: str) -> bool:
  return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


def _in_range(n: int, c: dict) -> bool:
  return c.get("min", 0) <= n <= c.get("max", float("inf"))


def _json_ok(text: str) -> bool:
  t = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
  try:
    json.loads(t)
    return True
  except ValueError:
    return False


CHECKS: dict[str, Callable[[str, dict], bool]] = {
    "word_count": lambda r, c: _in_range(len(_words(r)), c),
    "keywords": lambda r, c: all(_has_word(r, w) for w in c["words"]),
    "forbidden_words": lambda r, c: not any(_has_word(r, w) for w in c["words"]),
    "keyword_frequency": lambda r, c: _in_range(
        len(re.findall(rf"(?<!\w){re.escape(c['word'])}(?!\w)", r, re.IGNORECASE)), c),
    "bullet_count": lambda r, c: len(re.findall(r"^\s*[\*\-]\s+\S", r, re.MULTILINE)) == c["n"],
    "paragraph_count": lambda r, c: len([p for p in re.split(r"\n\s*\n", r.strip()) if p.strip()]) == c["n"],
    "sentence_count": lambda r, c: _in_range(len(re.findall(r"[^.!?]+[.!?]+", r)), c),
    "starts_with": lambda r, c: r.strip().lower().startswith(c["text"].strip().lower()),
    "ends_with": lambda r, c: r.strip().lower().endswith(c["text"].strip().lower()),
    "lowercase": lambda r, c: r == r.lower() and any(ch.isalpha() for ch in r),
    "uppercase": lambda r, c: r == r.upper() and any(ch.isalpha() for ch in r),
    "no_commas": lambda r, c: "," not in r,
    "json_format": lambda r, c: _json_ok(r),
    "title": lambda r, c: re.search(r"<<[^\n]+>>", r) is not None,
    "quotation": lambda r, c: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "placeholders": lambda r, c: len(re.findall(r"\[[^\[\]\n]+\]", r)) >= c["n"],
    "sections": lambda r, c: len(re.findall(rf"^\s*{re.escape(c['marker'])}\s*\d+", r, re.MULTILINE)) == c["n"],
}


def _constraints(reference) -> tuple[list[dict], bool]:
  strict = False
  if isinstance(reference, dict):
    strict = bool(reference.get("all_or_nothing", False))
    reference = reference.get("constraints")
  if not isinstance(reference, list) or not reference:
    raise RewardDataError(f"instruction reward: reference needs a non-empty constraint list, got {reference!r}")
  for c in reference:
    if not isinstance(c, dict) or c.get("type") not in CHECKS:
      raise RewardDataError(f"instruction reward: unknown constraint {c!r}; types: {sorted(CHECKS)}")
  return reference, strict


def instruction_reward(prompt: str, response: str, reference) -> float:
  constraints, strict = _constraints(reference)
  try:
    met = [bool(CHECKS[c["type"]](response, c)) for c in constraints]
  except KeyError as e:
    raise RewardDataError(f"instruction reward: constraint missing argument {e}") from None
  frac = sum(met) / len(met)
  return float(frac == 1.0) if strict else frac

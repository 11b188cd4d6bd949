"""Strict parsing of judge replies and the deterministic accept/borderline/reject decision."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from granite_jax.sft.curation.config import HARD_REJECT_FLAGS, CurationConfig

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


class MalformedReply(ValueError):
  pass


@dataclasses.dataclass
class JudgeVerdict:
  ok: bool  # False: no valid reply within the retries (a judge failure)
  scores: dict[str, float] = dataclasses.field(default_factory=dict)
  flags: list[str] = dataclasses.field(default_factory=list)
  rationale: str = ""
  attempts: int = 0
  error: str = ""
  sample_type: str = ""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def parse_reply(text: str, dimensions: tuple[str, ...]) -> tuple[dict, list[str], str]:
  """(scores, flags, rationale) from a reply that is exactly one JSON object.

  The one leniency is a single ```json fence around the whole reply. Missing or
  unknown dimensions, out-of-range scores and unknown flags are malformed.
  """
  text = text.strip()
  fenced = _FENCE.match(text)
  if fenced:
    text = fenced.group(1).strip()
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise MalformedReply(f"not JSON ({e.msg} at char {e.pos})") from None
  if not isinstance(obj, dict):
    raise MalformedReply(f"expected a JSON object, got {type(obj).__name__}")
  scores, flags, rationale = obj.get("scores"), obj.get("flags", []), obj.get("rationale", "")
  if not isinstance(scores, dict):
    raise MalformedReply("'scores' must be an object")
  missing = [d for d in dimensions if d not in scores]
  extra = [d for d in scores if d not in dimensions]
  if missing or extra:
    raise MalformedReply(f"'scores' missing {missing} / unexpected {extra}")
  for d, v in scores.items():
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 1 <= v <= 10:
      raise MalformedReply(f"scores.{d}={v!r} must be a number in [1, 10]")
  if not isinstance(flags, list) or any(f not in HARD_REJECT_FLAGS for f in flags):
    raise MalformedReply(f"'flags' must be a list drawn from {HARD_REJECT_FLAGS}, got {flags!r}")
  if not isinstance(rationale, str):
    raise MalformedReply("'rationale' must be a string")
  return {d: float(v) for d, v in scores.items()}, sorted(set(flags)), rationale


def weighted_score(scores: dict[str, float], weights: dict[str, float]) -> float:
  used = {d: weights.get(d, 0.0) for d in scores}
  total = sum(used.values())
  return sum(scores[d] * w for d, w in used.items()) / total


def decide(v: JudgeVerdict, cfg: CurationConfig) -> tuple[str, str, str, float | None]:
  """(bucket, reason, detail, weighted score); hard-reject flags win over any score."""
  if not v.ok:
    return cfg.judge_failure_bucket, "judge_failure", v.error, None
  score = round(weighted_score(v.scores, cfg.weights), 3)
  if v.flags:
    return "rejected", "judge_hard_reject", ",".join(v.flags), score
  if score >= cfg.accept_threshold:
    return "accepted", "", "", score
  if score >= cfg.borderline_threshold:
    return "borderline", "judge_borderline", f"score {score} < accept_threshold {cfg.accept_threshold}", score
  return ("rejected", "judge_low_score", f"score {score} < borderline_threshold "
          f"{cfg.borderline_threshold}", score)

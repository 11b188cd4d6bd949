"""Structured output: the response must parse as JSON and validate against a JSON schema.

Reference: the schema (dict or JSON string), or dict(schema=..., expected=...)
where `expected`, if given, must also equal the parsed value. The JSON may be
wrapped in a ```json fence. Reward 1.0 when valid (and equal), else 0.0.
"""
from __future__ import annotations

import json
import re

import jsonschema

from granite_jax.rl.rewards.base import RewardDataError

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(response: str):
  """Parsed JSON of the last fenced block, else of the whole response; raises ValueError."""
  fenced = _FENCE_RE.findall(response)
  return json.loads(fenced[-1] if fenced else response.strip())


def _schema(reference):
  expected, has_expected = None, False
  if isinstance(reference, dict) and "schema" in reference:
    expected, has_expected = reference.get("expected"), "expected" in reference
    reference = reference["schema"]
  if isinstance(reference, str):
    reference = json.loads(reference)
  if not isinstance(reference, dict):
    raise RewardDataError(f"structured reward: schema must be a JSON object, got {type(reference).__name__}")
  try:
    jsonschema.validators.validator_for(reference).check_schema(reference)
  except jsonschema.SchemaError as e:
    raise RewardDataError(f"structured reward: invalid schema: {e.message}") from None
  return reference, expected, has_expected


def structured_reward(prompt: str, response: str, reference) -> float:
  schema, expected, has_expected = _schema(reference)
  try:
    value = extract_json(response)
  except ValueError:
    return 0.0
  if not jsonschema.validators.validator_for(schema)(schema).is_valid(value):
    return 0.0
  return float(not has_expected or value == expected)

"""Reward functions by import path, and the `domain=value,...` config maps of rl.reward_*.

A reward is named by `package.module:function` (the module must be importable: installed, or on
PYTHONPATH). It is called as `fn(prompt, response, reference) -> float`, or batched as
`fn(prompts, responses, references) -> list[float]` when declared so: either the path ends in
`@batched` (`my_pkg.verify:run_tests@batched`) or the function has an attribute `batched = True`.
Built-in domains are import paths too (BUILTIN), so worker processes load every reward the same way.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

BUILTIN = {
    "math": "granite_jax.rl.rewards.math_answer:math_reward",
    "science": "granite_jax.rl.rewards.choice:choice_reward",
    "logic": "granite_jax.rl.rewards.choice:choice_reward",
    "instruction_following": "granite_jax.rl.rewards.instruction:instruction_reward",
    "structured_output": "granite_jax.rl.rewards.structured:structured_reward",
    "text2sql": "granite_jax.rl.rewards.text2sql:text2sql_reward",
    "temporal": "granite_jax.rl.rewards.temporal:temporal_reward",
    "icl": "granite_jax.rl.rewards.icl:icl_reward",
    "identity": "granite_jax.rl.rewards.identity:identity_reward",
    "calibration": "granite_jax.rl.rewards.identity:calibration_reward",
    "tool_call": "granite_jax.rl.rewards.tool_call:tool_call_reward",
}


def split_path(path: str) -> tuple[str, str, bool]:
  """'pkg.mod:fn[@batched]' -> (module, function, batched-by-suffix); ValueError naming the path."""
  p = path.strip()
  batched = p.endswith("@batched")
  if batched:
    p = p[: -len("@batched")]
  module, sep, name = p.partition(":")
  if not sep or not module or not name.isidentifier():
    raise ValueError(f"reward {path!r}: expected 'package.module:function' (optionally '@batched')")
  return module, name, batched


def resolve(path: str, field: str = "rl.reward_fns") -> tuple[Callable, bool]:
  """Imports a reward by path -> (function, batched)."""
  module, name, batched = split_path(path)
  try:
    mod = importlib.import_module(module)
  except ImportError as e:
    raise ValueError(f"{field}: cannot import module {module!r} of {path!r} ({e})") from e
  fn = getattr(mod, name, None)
  if not callable(fn):
    raise ValueError(f"{field}: {module!r} has no function {name!r} ({path!r})")
  return fn, batched or bool(getattr(fn, "batched", False))


def parse_map(value, field: str, cast: Callable = str) -> dict:
  """`domain=value,domain2=value2` (or a dict) -> {domain: cast(value)}; '' -> {}."""
  if isinstance(value, Mapping):
    items = list(value.items())
  else:
    items = []
    for part in str(value or "").split(","):
      if not part.strip():
        continue
      domain, sep, v = part.partition("=")
      if not sep or not domain.strip():
        raise ValueError(f"{field}={value!r}: expected 'domain=value,...', got {part!r}")
      items.append((domain.strip(), v.strip()))
  out = {}
  for domain, v in items:
    try:
      out[str(domain)] = cast(v)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{field}: domain {domain!r}: bad value {v!r} ({e})") from e
  return out


def parse_urls(value, field: str = "rl.reward_url") -> tuple[str, dict[str, str]]:
  """rl.reward_url: a URL for every domain without another reward, or `domain=URL,...`.

  -> (global URL or "", {domain: URL})."""
  if isinstance(value, Mapping):
    return "", parse_map(value, field)
  s = str(value or "").strip()
  if not s:
    return "", {}
  if s.split("=", 1)[0].find("://") >= 0 or "=" not in s:
    if not s.startswith(("http://", "https://")):
      raise ValueError(f"{field}={value!r}: expected an http(s):// URL or 'domain=URL,...'")
    return s, {}
  urls = parse_map(s, field)
  for d, u in urls.items():
    if not u.startswith(("http://", "https://")):
      raise ValueError(f"{field}: domain {d!r}: {u!r} is not an http(s):// URL")
  return "", urls

"""Reading and validating the `data` config section.

Errors name the offending field as it appears in the config (`data.mixture.math`).
Fields: mixture (domain -> weight: its share of the trained TOKENS), sources
(domain -> path, "" = demo corpus), eval_sources (optional, domain -> held-out path), tokenizer ("" = demo),
cache_dir, on_bad_record ("skip" | "raise").
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

from granite_jax.data import demo_corpus
from granite_jax.data.domains import DOMAINS
from granite_jax.data.sources import ON_BAD_RECORD, path_exists

DEFAULT_CACHE_DIR = "~/.cache/granite_jax"
SPLITS = ("train", "eval")


def field(cfg: Any, name: str, default: Any = None) -> Any:
  """`cfg.name` for ConfigDicts, dicts and plain objects alike."""
  if isinstance(cfg, Mapping):
    return cfg.get(name, default)
  try:
    return getattr(cfg, name)
  except (AttributeError, KeyError):
    return default


def as_dict(value: Any, name: str) -> dict[str, Any]:
  if value is None:
    return {}
  if hasattr(value, "to_dict"):
    return dict(value.to_dict())
  if isinstance(value, Mapping):
    return dict(value)
  if hasattr(value, "__dict__"):
    return dict(vars(value))
  raise ValueError(f"{name} must be a mapping of domain -> value, got {type(value).__name__}")


def _ordered(domains) -> list[str]:
  # Canonical recipe order first, then custom domains alphabetically: stable across configs.
  return [d for d in DOMAINS if d in domains] + sorted(d for d in domains if d not in DOMAINS)


def cache_dir(data_cfg: Any) -> str:
  return os.path.expanduser(field(data_cfg, "cache_dir") or DEFAULT_CACHE_DIR)


def on_bad_record(data_cfg: Any) -> str:
  value = field(data_cfg, "on_bad_record") or "raise"
  if value not in ON_BAD_RECORD:
    raise ValueError(f"data.on_bad_record={value!r} must be one of {ON_BAD_RECORD}")
  return value


def mixture_weights(data_cfg: Any) -> dict[str, float]:
  """Normalized weights (token shares) of the domains with weight > 0, in canonical order."""
  raw = as_dict(field(data_cfg, "mixture"), "data.mixture")
  if not raw:
    raise ValueError("data.mixture is empty; give at least one domain a weight > 0")
  for d, w in raw.items():
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
      raise ValueError(f"data.mixture.{d}={w!r} must be a finite number")
    if w < 0:
      raise ValueError(f"data.mixture.{d}={w} must be >= 0")
  total = float(sum(raw.values()))
  if total <= 0:
    raise ValueError(f"data.mixture: all weights are zero ({raw}); give at least one domain a weight > 0")
  return {d: raw[d] / total for d in _ordered([d for d, w in raw.items() if w > 0])}


def resolve_sources(data_cfg: Any, split: str = "train") -> dict[str, str]:
  """Domain -> data path for every mixture domain with weight > 0.

  Domains whose `data.sources` entry is "" (or absent) use the demo corpus,
  which is generated on first use. For split="eval", `data.eval_sources`
  gives held-out paths; demo domains use the demo corpus' eval files.
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  weights = mixture_weights(data_cfg)
  key = "sources" if split == "train" else "eval_sources"
  configured = as_dict(field(data_cfg, key), f"data.{key}")
  train_sources = as_dict(field(data_cfg, "sources"), "data.sources")
  out, demo = {}, []
  for d in weights:
    path = configured.get(d) or ""
    if path:
      if not isinstance(path, str):
        raise ValueError(f"data.{key}.{d}={path!r} must be a path string")
      if not path_exists(path):
        raise ValueError(f"data.{key}.{d}={path!r}: no such file, directory or glob match")
      out[d] = path
    elif split == "eval" and train_sources.get(d):
      raise ValueError(f"data.eval_sources.{d} is not set, but data.sources.{d}={train_sources[d]!r} is "
                       "not the demo corpus; give a held-out path for eval")
    elif d in DOMAINS:
      demo.append(d)
    else:
      raise ValueError(f"data.{key}.{d} is not set and {d!r} is not a demo corpus domain "
                       f"({', '.join(DOMAINS)}); set data.{key}.{d} to a data path")
  if demo:
    paths = demo_corpus.ensure_demo_corpus(cache_dir(data_cfg), split)
    out.update({d: paths[d] for d in demo})
  return {d: out[d] for d in weights}

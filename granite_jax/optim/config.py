"""Optimizer/schedule config: defaults and validation.

Defaults follow the published Granite pretraining recipe where it is public
(Granite 3.0 report: AdamW b1=0.9, b2=0.95, wd=0.1, grad clip 1.0, power
scheduler a=4.6, b=-0.51; power scheduler paper, Shen et al. 2024). The paper
uses muP with peak 0.02; peak_lr=3e-4 here is a standard-parameterisation value,
so set it per model size.
"""

import numbers

from ml_collections import ConfigDict

SCHEDULES = ("power", "exponential", "linear_to_zero", "wsd", "cosine", "constant")


def default_optim_config() -> ConfigDict:
  return ConfigDict(
    dict(
      schedule="power",
      peak_lr=3e-4,
      warmup_steps=2000,
      # > 0: warmup is this fraction of the run's steps (SFT: 0.03), for step counts known
      # only at run time (train.steps derived from the data); overrides warmup_steps.
      warmup_fraction=0.0,
      # End lr of decaying schedules (exponential, wsd, cosine); 0 allowed.
      final_lr=0.0,
      # Power scheduler: lr = min(peak_lr, power_a * tokens_seen**power_b).
      # The paper writes batch_size * a; fold that factor into power_a.
      power_a=4.6,
      power_b=-0.51,
      # wsd: the last decay_fraction of total_steps decays linearly.
      decay_fraction=0.1,
      # exponential with final_lr=0: an exponential never reaches 0, so
      # decay toward peak_lr * min_ratio and drop to 0 at total_steps.
      min_ratio=1e-3,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.1,
      clip_norm=1.0,  # global-norm clipping; 0 disables.
      # power: tokens already seen by earlier stages (continues their curve).
      tokens_offset=0.0,
      decay_embeddings=False,
      decay_norms=False,
    )
  )


def _fail(cfg, field, rule):
  raise ValueError(f"optim.{field}={getattr(cfg, field)!r} must be {rule}")


def _is_int(x):
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def validate_optim_config(cfg) -> None:
  """Raises ValueError naming the offending field and its allowed range."""
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={cfg.schedule!r} is not one of {list(SCHEDULES)}")
  if not cfg.peak_lr > 0:
    _fail(cfg, "peak_lr", "> 0")
  if not _is_int(cfg.warmup_steps) or cfg.warmup_steps < 0:
    _fail(cfg, "warmup_steps", "an integer >= 0")
  if not 0 <= cfg.get("warmup_fraction", 0.0) < 1:
    _fail(cfg, "warmup_fraction", "in [0, 1) (0 = use warmup_steps)")
  if not 0 <= cfg.final_lr <= cfg.peak_lr:
    _fail(cfg, "final_lr", f"in [0, peak_lr={cfg.peak_lr}]")
  if cfg.schedule == "power":
    if not cfg.power_a > 0:
      _fail(cfg, "power_a", "> 0")
    if not cfg.power_b < 0:
      _fail(cfg, "power_b", "< 0 (lr falls as tokens grow)")
  if cfg.schedule == "wsd" and not 0 < cfg.decay_fraction <= 1:
    _fail(cfg, "decay_fraction", "in (0, 1]")
  if cfg.schedule == "exponential" and not 0 < cfg.min_ratio < 1:
    _fail(cfg, "min_ratio", "in (0, 1)")
  for field in ("b1", "b2"):
    if not 0 <= getattr(cfg, field) < 1:
      _fail(cfg, field, "in [0, 1)")
  if not cfg.eps > 0:
    _fail(cfg, "eps", "> 0")
  if not cfg.weight_decay >= 0:
    _fail(cfg, "weight_decay", ">= 0")
  if not cfg.clip_norm >= 0:
    _fail(cfg, "clip_norm", ">= 0 (0 disables clipping)")
  if not cfg.get("tokens_offset", 0.0) >= 0:
    _fail(cfg, "tokens_offset", ">= 0")

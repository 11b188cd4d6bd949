"""Optimizer (AdamW, clipping, accumulation) and learning-rate schedules."""

from granite_jax.optim.config import SCHEDULES, default_optim_config, validate_optim_config
from granite_jax.optim.optimizer import make_optimizer
from granite_jax.optim.schedules import describe_schedule, make_schedule
from granite_jax.optim.weight_decay import weight_decay_mask

__all__ = [
  "SCHEDULES",
  "default_optim_config",
  "validate_optim_config",
  "make_optimizer",
  "describe_schedule",
  "make_schedule",
  "weight_decay_mask",
]

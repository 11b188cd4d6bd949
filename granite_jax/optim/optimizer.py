"""AdamW + global-norm clipping.

Gradient accumulation lives in the jitted train step (`train.grad_accum`), which
normalizes by the global token count, so it is not an optimizer wrapper here.
"""

import functools

import optax

from granite_jax.optim.config import validate_optim_config
from granite_jax.optim.schedules import make_schedule
from granite_jax.optim.weight_decay import weight_decay_mask


def make_optimizer(optim_cfg, *, total_steps, tokens_per_step):
  """Returns (GradientTransformation, schedule).

  Order: clip the raw gradient by global norm, then AdamW with decoupled
  weight decay on the mask from weight_decay.py (lr * wd * param, as optax).
  tokens_per_step is the whole global batch of one optimizer step.
  """
  validate_optim_config(optim_cfg)
  c = optim_cfg
  schedule = make_schedule(c, total_steps=total_steps, tokens_per_step=tokens_per_step)
  mask = functools.partial(weight_decay_mask, decay_embeddings=c.decay_embeddings, decay_norms=c.decay_norms)
  adamw = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=mask)
  tx = optax.chain(optax.clip_by_global_norm(c.clip_norm), adamw) if c.clip_norm > 0 else adamw
  return tx, schedule

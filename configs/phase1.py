"""Phase 1: general pretraining, 10T tokens, power LR schedule with warmup."""
from configs import base

MIXTURE = dict(cc=59, code=20, math=7, technical=10.5, multilingual=2, domain=1.5)


def get_config(arg: str | None = None):
  c = base.get_config(arg)
  c.name = "phase1"
  c.data.mixture = MIXTURE
  c.optim.schedule = "power"
  if base.is_tiny(c.preset):
    c.optim.warmup_steps = 20
  else:
    c.train.tokens = 10e12
    c.optim.warmup_steps = 2000
  return c

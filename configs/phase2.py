"""Phase 2: math/code pretraining, 2T tokens, the power schedule continued from phase 1."""
from configs import base, phase1

MIXTURE = dict(math=35, code=30, cc_hq=12, synthetic=9, technical=10, multilingual=3, domain=1)


def get_config(arg: str | None = None):
  c = phase1.get_config(arg)
  c.name = "phase2"
  c.data.mixture = MIXTURE
  c.optim.schedule = "power"
  if base.is_tiny(c.preset):
    # Standalone demo: a short warmup so that a run from scratch is stable.
    c.optim.warmup_steps = 10
  else:
    c.train.tokens = 2e12
    c.optim.warmup_steps = 0
    # The power law continues where phase 1 stopped: tokens_seen starts at 10T.
    c.optim.tokens_offset = 10e12
  return c

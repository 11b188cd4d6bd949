"""Phase 4: annealing refinement, 0.5T tokens, linear decay to zero."""
from configs import base, phase3

MIXTURE = dict(cc_hq=40, code=20, math=20, long_cot=6, code_instruct=5, lang_instruct=9)


def get_config(arg: str | None = None):
  c = phase3.get_config(arg)
  c.name = "phase4"
  c.data.mixture = MIXTURE
  c.optim.schedule = "linear_to_zero"
  c.optim.peak_lr = c.optim.final_lr  # continue from where phase 3 ended
  c.optim.final_lr = 0.0
  if not base.is_tiny(c.preset):
    c.train.tokens = 0.5e12
  return c

"""Phase 3: high-quality annealing, 2T tokens, exponential LR decay."""
from configs import base, phase2

MIXTURE = dict(cc_hq=16.67, math=16.67, code=16.67, synthetic=8.5, technical=12.5,
               multilingual=4.5, long_cot=12.5, lang_instruct=7.5, code_instruct=4.5)


def get_config(arg: str | None = None):
  c = phase2.get_config(arg)
  c.name = "phase3"
  c.data.mixture = MIXTURE
  c.optim.schedule = "exponential"
  c.optim.warmup_steps = 0
  c.optim.tokens_offset = 0.0
  if not base.is_tiny(c.preset):
    c.train.tokens = 2e12
    # Start where phase 2's power curve ended (after 12T tokens).
    c.optim.peak_lr = min(c.optim.peak_lr, c.optim.power_a * 12e12 ** c.optim.power_b)
  # Decays 10x over the phase (the report gives the kind of schedule, not its range).
  c.optim.final_lr = c.optim.peak_lr / 10
  return c

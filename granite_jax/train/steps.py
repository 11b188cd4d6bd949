"""How many optimizer steps a run makes: from its token budget, its explicit step count, or its data.

Precedence: `train.tokens > 0` (pretraining budgets) -> tokens / (global_batch x seq_len);
else `train.steps > 0` (explicit, always wins over epochs); else `train.steps == 0` with
`train.epochs > 0` on SFT data -> the packed rows of that many passes / global_batch (the
global order's own per-epoch packing plans, data/order.py: the schedule ends where the data does).
"""
from __future__ import annotations

from ml_collections import ConfigDict

NOMINAL_STEPS = 1000  # stands in for a data-derived count where no data may be read (dry runs)


def steps_from_data(c: ConfigDict) -> bool:
  """Whether train.steps=0 means "derive from the data": SFT data with train.epochs >= 1."""
  return bool(c.train.get("epochs", 0)) and c.data.get("kind", "pretrain") == "sft" and not c.train.tokens > 0


def total_steps(c: ConfigDict, *, from_data: bool = True) -> int:
  """Optimizer steps of the run. from_data=False (a dry run: compile, read nothing) gives
  NOMINAL_STEPS where the count would come from the data; the step's program does not depend on it."""
  if c.train.tokens > 0:
    return max(1, int(c.train.tokens // (c.train.global_batch * c.train.seq_len)))
  if c.train.steps > 0:
    return int(c.train.steps)
  epochs = c.train.get("epochs", 0) or 0
  if steps_from_data(c):
    if not from_data:
      return NOMINAL_STEPS
    return sft_epoch_steps(c, epochs)
  raise ValueError(f"train.steps={c.train.steps!r}: 0 derives the step count from train.epochs on SFT "
                   "data (data.kind='sft', train.epochs >= 1); set train.steps > 0 otherwise")


def sft_epoch_steps(c: ConfigDict, epochs: int) -> int:
  """Full global batches in `epochs` passes over the SFT conversations (packed as the run packs them)."""
  from granite_jax.data import pipeline
  order = pipeline.make_order(c.data, seq_len=c.train.seq_len, seed=pipeline.data_seed(c), split="train")
  return order.sources[0].rows_in_epochs(epochs) // c.train.global_batch

"""How many optimizer steps a run makes: from its token budget, its explicit step count, or its data.

Precedence: `train.tokens > 0` (pretraining budgets) -> tokens / (global_batch x seq_len);
else `train.steps > 0` (explicit, always wins over epochs); else `train.steps == 0` with
`train.epochs > 0` on SFT data -> the packed rows of that many passes / global_batch
(data/chat_steps.py: one cached counting pass, then an exact replay of the pipeline).
"""
from __future__ import annotations

import jax
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
    from granite_jax.data.chat_steps import sft_steps
    return sft_steps(c.data, seq_len=c.train.seq_len, global_batch=c.train.global_batch, seed=c.train.seed,
                     epochs=epochs, process_index=jax.process_index(), process_count=jax.process_count())
  raise ValueError(f"train.steps={c.train.steps!r}: 0 derives the step count from train.epochs on SFT "
                   "data (data.kind='sft', train.epochs >= 1); set train.steps > 0 otherwise")

"""Planner and dry run of the recipe's stages at real size (docs/planner.md, docs/stages.md).

  estimate.py  per-device memory of every program, FLOPs, step time, MFU (the CLI)
  memory.py    the memory model (train step, sampler, forward passes), from shapes alone
  stages.py    the planner's stages = configs/<stage>.py on its configs/gb200.py layout
  programs.py  every jitted program of a stage at real shapes from abstract inputs
  dry_run.py   compile them on fake CPU devices; XLA's memory next to the planner's
  table.py     docs/stages.md
  xla.py       XLA's memory of one train step in a subprocess (the planner's CI check)
"""
from granite_jax.plan.estimate import Hardware, Plan, main, plan, plan_config, table  # noqa: F401
from granite_jax.plan.stages import PRESETS, STAGES  # noqa: F401

"""The planner's stages are the recipe's configs: `configs/<stage>.py:<preset>` on its GB200 layout
(`configs/gb200.py`). Everything here reads a ConfigDict; nothing touches devices or data."""
from __future__ import annotations

import importlib
import math
import os
import sys

from ml_collections import ConfigDict

from granite_jax.model.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Recipe order (docs/stages.md rows).
STAGES = ("phase1", "phase2", "phase3", "phase4", "lce_32k", "lce_128k", "lce_512k", "sft",
          "reward_model", "rl_multidomain", "rlhf", "rl_identity", "rl_math")
PRESETS = ("3b", "8b", "30b")
# Racks per stage kind for the table: pretraining's 1024 sequences of 4K at one per GPU needs
# ~16 racks; every other stage keeps the report's batch on one rack's 64 GPUs.
DEFAULT_RACKS = {"pretrain": 16, "long": 1}


def _configs():
  if ROOT not in sys.path:  # `configs` lives at the repo root, beside granite_jax/
    sys.path.insert(0, ROOT)
  return importlib.import_module("configs.gb200")


def kind(c: ConfigDict) -> str:
  return _configs().stage_kind(c)


def load(stage: str, preset: str, racks: int | None = None) -> ConfigDict:
  """configs/gb200.py:STAGE,PRESET,RACKS (RACKS default: DEFAULT_RACKS, else 1). ValueError when
  the recipe has no such stage at that size (lce_512k at 3B) or the layout would change its batch."""
  gb200 = _configs()
  if racks is None:
    probe = importlib.import_module(f"configs.{stage}").get_config(preset)
    racks = DEFAULT_RACKS.get(gb200.stage_kind(probe), 1)
  return gb200.get_config(f"{stage},{preset},{racks}")


def mesh_sizes(c: ConfigDict) -> dict[str, int]:
  """{axis: size} of the whole mesh (all racks); needs mesh.shape without -1."""
  if any(s < 1 for s in c.mesh.shape):
    raise ValueError(f"mesh.shape={tuple(c.mesh.shape)}: the planner needs explicit sizes (no -1)")
  return dict(zip(c.mesh.axes, c.mesh.shape))


def devices(c: ConfigDict) -> int:
  return math.prod(c.mesh.shape)


def model(c: ConfigDict) -> ModelConfig:
  return ModelConfig.from_dict(c.model.to_dict())


def describe_mesh(c: ConfigDict) -> str:
  return ",".join(f"{a}={s}" for a, s in zip(c.mesh.axes, c.mesh.shape))

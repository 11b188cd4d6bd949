"""A run's directories: WORKDIR/ckpt (the CheckpointManager) and WORKDIR/model_config.json.

Every command that reads a checkpoint (eval, SFT eval, HF export) finds the
model shape the same way: `model_config_for(ckpt_dir_of(path))`.
"""
from __future__ import annotations

import json
import os

MODEL_CONFIG = "model_config.json"


def ckpt_dir_of(path: str) -> str:
  """A run's workdir or its ckpt/ dir -> the CheckpointManager directory."""
  path = os.path.abspath(os.path.expanduser(path))
  return os.path.join(path, "ckpt") if os.path.isdir(os.path.join(path, "ckpt")) else path


def model_config_for(ckpt_dir: str, model_config: str | None = None, preset: str | None = None):
  from granite_jax.model.config import ModelConfig
  from granite_jax.model.config import preset as make_preset
  if model_config:
    text = open(model_config).read() if os.path.isfile(model_config) else model_config
    try:
      d = json.loads(text)
    except ValueError as e:
      raise ValueError(f"--model-config: neither a JSON file nor JSON ({e})") from e
    return make_preset(preset, **d) if preset else ModelConfig.from_dict(d)
  if preset:
    return make_preset(preset)
  for d in (ckpt_dir, os.path.dirname(ckpt_dir)):
    file = os.path.join(d, MODEL_CONFIG)
    if os.path.isfile(file):
      with open(file) as f:
        return ModelConfig.from_dict(json.load(f))
  raise FileNotFoundError(f"{ckpt_dir!r}: no {MODEL_CONFIG} here or in its parent; pass --model-config "
                          "JSON or --preset NAME")


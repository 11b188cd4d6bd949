"""A run's directories: WORKDIR/ckpt (the CheckpointManager) and WORKDIR/model_config.json.

Every command that reads a checkpoint (eval, SFT eval, HF export) finds the
model shape the same way: `model_config_for(ckpt_dir_of(path))`.
"""
from __future__ import annotations

import json
import os

MODEL_CONFIG = "model_config.json"


def read_json(path: str, what: str = "JSON"):
  """The JSON in `path`; an empty or malformed file raises ValueError naming the file."""
  with open(path) as f:
    text = f.read()
  if not text.strip():
    raise ValueError(f"{path}: empty file (expected a {what})")
  try:
    return json.loads(text)
  except ValueError as e:
    raise ValueError(f"{path}: not a {what} ({e})") from None


def ckpt_dir_of(path: str) -> str:
  """A run's workdir or its ckpt/ dir -> the CheckpointManager directory."""
  if not os.path.exists(os.path.expanduser(path)):
    raise FileNotFoundError(f"{path}: no such run directory or checkpoint")
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
      d = read_json(file, "model config")
      try:
        return ModelConfig.from_dict(d)
      except (TypeError, ValueError) as e:  # not an object, unknown fields, bad values
        raise ValueError(f"{file}: {e}") from None
  check_not_hf_folder(ckpt_dir)
  raise FileNotFoundError(f"{ckpt_dir!r}: no {MODEL_CONFIG} here or in its parent; pass --model-config "
                          "JSON or --preset NAME")


def check_not_hf_folder(path: str) -> None:
  """Raises ValueError naming config.json when `path` is a Hugging Face folder, not a run."""
  hf = os.path.join(path, "config.json")
  if os.path.isfile(hf):
    d = read_json(hf, "Hugging Face config")
    model_type = d.get("model_type") if isinstance(d, dict) else None
    raise ValueError(f"{hf}: a Hugging Face model folder (model_type={model_type!r}), not a run of "
                     "this project; import a Granite one first: python -m granite_jax.ckpt.hf import")

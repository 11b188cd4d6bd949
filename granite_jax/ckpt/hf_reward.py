"""Released scalar reward models from Hugging Face -> the project's reward-model format.

A Granite- or Llama-style `*ForSequenceClassification` with one label (safetensors: the decoder
under `model.*` plus `score.weight` [1, D], optional `score.bias`) becomes a reward-model workdir
that `rl.reward_model` (rl/rm_scorer.py `load`) loads like one trained here:
  WORKDIR/ckpt/              Orbax, step 0, params {"backbone": Granite params, "head": {"w", "b"}}
  WORKDIR/model_config.json  ModelConfig of the backbone
  WORKDIR/config.json        {"train": {"seq_len": N}} (the longest sequence scored)
  WORKDIR/reward_model.json  {"source", "architecture", "suffix"}: where it came from and the text
                             appended to prompt + response before scoring ("" for HF models)
  WORKDIR/tokenizer.json     the model's own tokenizer, when the HF folder has one, with its
  WORKDIR/tokenizer_config.json  chat template and special tokens: with rl.reward_model_template=auto
                             (the default) the scorer renders prompt + response through that
                             template, as `apply_chat_template` does (rl/rm_scorer.py)
Like transformers, the score is the head applied to the final-normed hidden state at the last
real token. Llama configs map to Granite with unit multipliers and attention scale 1/sqrt(head_dim).

  python -m granite_jax.ckpt.hf import HF_DIR WORKDIR            (auto-detected from architectures)
  python -m granite_jax.ckpt.hf import HF_DIR WORKDIR --reward-model [--seq-len N]
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from granite_jax.ckpt import hf_config, hf_weights
from granite_jax.model.config import ModelConfig

REWARD_MODEL_JSON = "reward_model.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def is_reward_model(hf: dict[str, Any]) -> bool:
  return any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or [])


def _granite_config(hf: dict[str, Any], where: str) -> dict[str, Any]:
  if hf.get("model_type") != "llama":
    return hf
  head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
  if hf.get("pretraining_tp", 1) not in (1, None):
    raise ValueError(f"{where}: pretraining_tp={hf['pretraining_tp']} is not supported")
  return dict(hf, model_type="granite", embedding_multiplier=1.0, residual_multiplier=1.0,
              logits_scaling=1.0, attention_multiplier=head_dim ** -0.5)


def load_reward_model(path: str, **overrides: Any) -> tuple[ModelConfig, dict[str, Any], dict[str, Any]]:
  """(ModelConfig, {"backbone", "head"} params as NumPy, HF config) of a local HF reward-model folder."""
  from granite_jax.ckpt.hf import open_tensors, read_config
  hf = read_config(path)
  where = os.path.join(path, "config.json")
  if not is_reward_model(hf):
    raise ValueError(f"{where}: architectures={hf.get('architectures')} is not a *ForSequenceClassification")
  labels = len(hf.get("id2label") or {}) or hf.get("num_labels", 1)
  if labels != 1:
    raise ValueError(f"{where}: num_labels={labels}; a scalar reward model has exactly one label")
  # No lm_head in a classifier: tie the backbone's (unused) output layer to the embedding.
  cfg = hf_config.from_hf_config(_granite_config(hf, where), where=where,
                                 **{"tie_embeddings": True, **overrides})
  tensors = open_tensors(path)
  get = lambda n: tensors[n].get(n)  # noqa: E731
  backbone = hf_weights.params_from_hf(cfg, get, lambda n: n in tensors,
                                       hybrid=hf["model_type"] == "granitemoehybrid", where=path)
  if "score.weight" not in tensors:
    raise KeyError(f"{path}: missing tensor 'score.weight' (the reward head)")
  w = np.asarray(get("score.weight"), np.float32)
  if w.shape != (1, cfg.d_model):
    raise ValueError(f"{path}: score.weight has shape {w.shape}, expected (1, {cfg.d_model})")
  b = np.asarray(get("score.bias"), np.float32).reshape(()) if "score.bias" in tensors else np.float32(0)
  return cfg, {"backbone": backbone, "head": {"w": w[0], "b": np.asarray(b, np.float32)}}, hf


def import_reward_model(hf_dir: str, workdir: str, *, seq_len: int | None = None,
                        progress: bool = True) -> ModelConfig:
  """HF reward-model folder -> a workdir for `rl.reward_model`."""
  from granite_jax.ckpt.manager import Checkpointer
  cfg, params, hf = load_reward_model(hf_dir)
  seq_len = int(seq_len or min(cfg.max_seq_len, 8192))
  if progress:
    print(f"import reward model {hf_dir}: {cfg.num_params() / 1e6:,.1f}M params, scoring <= {seq_len} "
          "tokens", flush=True)
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=1, async_save=False)
  ckpt.save(0, {"params": params})
  ckpt.close()
  with open(os.path.join(workdir, "model_config.json"), "w") as f:
    json.dump(cfg.to_dict(), f, indent=2)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"train": {"seq_len": seq_len}}, f, indent=2)
  with open(os.path.join(workdir, REWARD_MODEL_JSON), "w") as f:
    json.dump({"source": os.path.abspath(hf_dir), "architecture": hf["architectures"][0], "suffix": ""},
              f, indent=2)
  if os.path.isfile(os.path.join(hf_dir, "tokenizer.json")):
    for name in TOKENIZER_FILES:
      if os.path.isfile(os.path.join(hf_dir, name)):
        shutil.copy(os.path.join(hf_dir, name), os.path.join(workdir, name))
  return cfg

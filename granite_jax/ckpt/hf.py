"""Hugging Face interop: `load_pretrained(path)` and `save_pretrained(cfg, params, path)`.

A folder written here loads with `transformers.AutoModelForCausalLM` as
`GraniteForCausalLM` (and with vLLM; `fp8=True` writes compressed-tensors
FP8). Large models are written as sharded safetensors with
`model.safetensors.index.json`, one tensor at a time. The Orbax <-> HF
commands live in `granite_jax.ckpt.hf_cli`:

  python -m granite_jax.ckpt.hf import HF_DIR CKPT_DIR
  python -m granite_jax.ckpt.hf export CKPT_DIR HF_DIR [--fp8] [--tokenizer PATH]
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from granite_jax.ckpt import fp8 as fp8_lib
from granite_jax.ckpt import hf_config, hf_tokenizer, hf_weights
from granite_jax.ckpt.run_dir import read_json
from granite_jax.ckpt.safetensors_io import SafetensorsFile, write_file
from granite_jax.model.config import ModelConfig

INDEX = "model.safetensors.index.json"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.I)


def parse_size(s: str | int) -> int:
  if isinstance(s, int):
    return s
  m = _SIZE.match(s)
  if not m:
    raise ValueError(f"max_shard_size={s!r}: expected e.g. '5GB', '500MB' or a byte count")
  return int(float(m.group(1)) * 1000 ** "_KMGT".index((m.group(2) or "_").upper()))


def read_config(path: str) -> dict[str, Any]:
  file = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such directory")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path!r}: no config.json (not a Hugging Face model folder)")
  hf = read_json(file, "Hugging Face config")
  if not isinstance(hf, dict):
    raise ValueError(f"{file}: not a Hugging Face config (a JSON object)")
  return hf


def open_tensors(path: str) -> dict[str, SafetensorsFile]:
  """Tensor name -> the (memory-mapped) shard holding it."""
  index = os.path.join(path, INDEX)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = {s: SafetensorsFile(os.path.join(path, s)) for s in sorted(set(weight_map.values()))}
    return {name: files[shard] for name, shard in weight_map.items()}
  shards = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not shards:
    raise FileNotFoundError(f"{path!r}: no *.safetensors files")
  out = {}
  for s in shards:
    f = SafetensorsFile(s)
    out.update({k: f for k in f.keys()})
  return out


def load_pretrained(path: str, **overrides: Any) -> tuple[ModelConfig, dict[str, Any]]:
  """(ModelConfig, params as NumPy) of a local HF Granite folder; `overrides` set ModelConfig fields."""
  hf = read_config(path)
  cfg = hf_config.from_hf_config(hf, where=os.path.join(path, "config.json"), **overrides)
  tensors = open_tensors(path)
  params = hf_weights.params_from_hf(
      cfg, lambda n: tensors[n].get(n), lambda n: n in tensors,
      hybrid=hf["model_type"] == "granitemoehybrid", where=path)
  return cfg, params


def _plan_shards(specs, max_bytes: int) -> list[list]:
  shards, cur, size = [], [], 0
  for spec in specs:
    n = int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize
    if cur and size + n > max_bytes:
      shards.append(cur)
      cur, size = [], 0
    cur.append(spec)
    size += n
  return shards + ([cur] if cur else [])


def save_pretrained(cfg: ModelConfig, params: Any, path: str, dtype: str = "bfloat16", *,
                    fp8: bool = False, tokenizer: Any = None, max_shard_size: str | int = "5GB",
                    progress: bool = False) -> list[str]:
  """Writes an HF Granite folder; `params` is our tree or a `get(path)` callable (streaming)."""
  get: Callable = params if callable(params) else (lambda p: _at(params, p))
  os.makedirs(path, exist_ok=True)
  ids = {}
  if tokenizer is not None:
    ids = hf_tokenizer.write(tokenizer, path, cfg.max_seq_len)
  hf = hf_config.to_hf_config(cfg, dtype, **ids)
  if fp8:
    hf["quantization_config"] = fp8_lib.quantization_config()
  np_dtype = np.dtype({"float32": np.float32, "float16": np.float16}.get(dtype, fp8_lib.ml_dtypes.bfloat16))
  specs = hf_weights.hf_specs(cfg, np_dtype, fp8)
  shards = _plan_shards(specs, parse_size(max_shard_size))
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  total = sum(int(np.prod(s[1], dtype=np.int64)) * np.dtype(s[2]).itemsize for s in specs)
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"export {os.path.basename(path)}")
  stream = hf_weights.hf_tensors(cfg, get, np_dtype, fp8)
  # hf_specs is leaf-major like hf_tensors, so the stream fills the shards in order.
  for name, shard in zip(names, shards):
    write_file(os.path.join(path, name), shard, stream, on_tensor=bar.update if bar else None)
  if bar:
    bar.close()
  for stale in set(glob.glob(os.path.join(path, "model*.safetensors"))) - {os.path.join(path, n) for n in names}:
    os.remove(stale)  # shards of an earlier export into the same folder
  index = os.path.join(path, INDEX)
  if len(names) > 1:
    weight_map = {s[0]: n for n, shard in zip(names, shards) for s in shard}
    with open(index, "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  elif os.path.exists(index):
    os.remove(index)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  gen = {k: v for k, v in ids.items() if v is not None}
  with open(os.path.join(path, "generation_config.json"), "w") as f:
    json.dump(dict(gen, _from_model_config=True), f, indent=2)
  return names


def _at(tree: Any, path: tuple[str, ...]) -> Any:
  for k in path:
    if k not in tree:
      raise KeyError(f"params have no {'/'.join(path)} (at {k!r})")
    tree = tree[k]
  return tree


if __name__ == "__main__":  # `python -m granite_jax.ckpt.hf`: the CLI lives above this library module
  import runpy
  runpy.run_module("granite_jax.ckpt.hf_cli", run_name="__main__")

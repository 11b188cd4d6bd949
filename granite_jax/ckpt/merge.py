"""Weighted average of checkpoints of the same model (the LCE stages' model merge).

`python -m granite_jax.ckpt.merge OUT_DIR CKPT_DIR[:WEIGHT] CKPT_DIR[:WEIGHT] ...`

Reads one tensor at a time from every input (so memory holds the inputs'
copies of a single tensor plus the merged output), refuses mismatched model
configs or shapes with the tensor's name, and writes an Orbax checkpoint whose
`state` item holds `{"params": ...}` — what `--config.init_from=OUT_DIR` reads.
Weights are normalized to sum to 1.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from granite_jax.ckpt.manager import Checkpointer
from granite_jax.ckpt.run_dir import MODEL_CONFIG, check_not_hf_folder, read_json


def _step_dir(ckpt_dir: str, step: int | None = None) -> tuple[str, int]:
  ckpt_dir = os.path.abspath(ckpt_dir)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{ckpt_dir}: no such checkpoint directory")
  mgr = ocp.CheckpointManager(ckpt_dir)
  step = mgr.latest_step() if step is None else step
  mgr.close()
  if step is None:
    check_not_hf_folder(ckpt_dir)
    raise FileNotFoundError(f"{ckpt_dir}: holds no checkpoint step")
  return os.path.join(ckpt_dir, str(step), "state"), step


def _leaves(tree: Any, prefix=()) -> dict[tuple[str, ...], Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_leaves(v, prefix + (k,)))
    return out
  return {prefix: tree}


def _nest(path: tuple[str, ...], value: Any) -> dict:
  for k in reversed(path):
    value = {k: value}
  return value


def param_metadata(state_dir: str) -> dict[tuple[str, ...], Any]:
  md = ocp.PyTreeCheckpointer().metadata(state_dir)
  tree = md.item_metadata.tree if hasattr(md, "item_metadata") else md
  if "params" not in tree:
    raise ValueError(f"{state_dir}: no 'params' in this checkpoint")
  return {("params",) + k: v for k, v in _leaves(dict(tree["params"])).items()}


def read_tensor(state_dir: str, path: tuple[str, ...]) -> np.ndarray:
  item = _nest(path, 0)
  args = _nest(path, ocp.RestoreArgs(restore_type=np.ndarray))
  out = ocp.PyTreeCheckpointer().restore(
      state_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True))
  for k in path:
    out = out[k]
  return np.asarray(out)


def _model_config(ckpt_dir: str) -> dict | None:
  """model_config.json written by the training loop next to WORKDIR/ckpt."""
  path = os.path.join(os.path.dirname(os.path.abspath(ckpt_dir)), MODEL_CONFIG)
  if not os.path.exists(path):
    return None
  return read_json(path, "model config")


# Fields that decide tensor shapes; others (rope_theta, max_seq_len, dtype...) may differ
# between stages being merged, and the merged model takes the first input's.
SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                "tie_embeddings")


def merge(inputs: Sequence[str], weights: Sequence[float], out_dir: str, *, progress: bool = True) -> str:
  if len(inputs) < 2:
    raise ValueError("merge needs at least two checkpoints")
  if len(weights) != len(inputs):
    raise ValueError(f"got {len(weights)} weights for {len(inputs)} checkpoints")
  if any(w < 0 for w in weights) or sum(weights) <= 0:
    raise ValueError(f"weights {list(weights)} must be >= 0 and not all zero")
  w = np.asarray(weights, np.float64) / float(sum(weights))
  configs = [_model_config(d) for d in inputs]
  known = [(d, c) for d, c in zip(inputs, configs) if c is not None]
  for d, c in known[1:]:
    diff = [k for k in SHAPE_FIELDS if c.get(k) != known[0][1].get(k)]
    if diff:
      raise ValueError(f"model configs differ between {known[0][0]} and {d}: {diff}")
  dirs = [_step_dir(d)[0] for d in inputs]
  metas = [param_metadata(d) for d in dirs]
  for d, m in zip(inputs[1:], metas[1:]):
    if set(m) != set(metas[0]):
      missing = sorted("/".join(k) for k in set(metas[0]) ^ set(m))
      raise ValueError(f"{d} and {inputs[0]} hold different tensors: {missing[:5]}")
  merged: dict = {}
  for path in tqdm(sorted(metas[0]), desc="merge", disable=not progress):
    shapes = [tuple(m[path].shape) for m in metas]
    if len(set(shapes)) != 1:
      raise ValueError(f"tensor {'/'.join(path)} has shapes {shapes} in {list(inputs)}")
    acc = None
    for wi, d in zip(w, dirs):  # one input copy of this tensor at a time
      x = read_tensor(d, path)
      acc = x.astype(np.float64) * wi if acc is None else acc + x.astype(np.float64) * wi
    node = merged
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = acc.astype(x.dtype)
  ck = Checkpointer(out_dir, max_to_keep=1, async_save=False)
  ck.save(0, {"params": merged["params"]})
  ck.close()
  if known:
    with open(os.path.join(os.path.dirname(os.path.abspath(out_dir)), "model_config.json"), "w") as f:
      json.dump(known[0][1], f, indent=2)
  return out_dir


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m granite_jax.ckpt.merge", description=__doc__.split("\n")[0])
  p.add_argument("out_dir", help="where to write the merged checkpoint (an Orbax checkpoint directory)")
  p.add_argument("inputs", nargs="+", help="checkpoint directories, each optionally ':WEIGHT' (default 1)")
  a = p.parse_args(argv)
  dirs, weights = [], []
  for spec in a.inputs:
    path, _, weight = spec.rpartition(":") if ":" in spec else (spec, "", "1")
    try:
      weights.append(float(weight))
    except ValueError:
      p.error(f"{spec!r}: the weight after ':' must be a number")
    dirs.append(path)
  merge(dirs, weights, a.out_dir)
  print(f"merged {len(dirs)} checkpoints with weights {weights} into {a.out_dir}")


if __name__ == "__main__":
  import sys

  from granite_jax.cli import run_main
  sys.exit(run_main("granite_jax.ckpt.merge", main))

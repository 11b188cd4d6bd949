"""`python -m granite_jax.ckpt.hf import|export`: Orbax checkpoints <-> HF folders.

import HF_DIR CKPT_DIR   writes an Orbax CheckpointManager dir (step 0, item `state`
                         = {"params"}) that `--config.init_from=CKPT_DIR` loads, plus
                         CKPT_DIR/model_config.json (ModelConfig.to_dict()).
import HF_DIR WORKDIR    a *ForSequenceClassification reward model (auto-detected, or
                         --reward-model) -> an rl.reward_model workdir (ckpt/hf_reward.py)
export CKPT_DIR HF_DIR   reads the params of a training run (WORKDIR or WORKDIR/ckpt)
                         one leaf at a time and streams them into safetensors.
The model config of an export comes from --model-config (JSON or file), --preset,
or a model_config.json in CKPT_DIR or its parent (the run's workdir).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from granite_jax.ckpt.run_dir import MODEL_CONFIG, ckpt_dir_of, model_config_for


def _cpu_abstract(cfg) -> Any:
  import jax

  from granite_jax.model.params import init_params
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=cpu), shapes)


def import_hf(hf_dir: str, ckpt_dir: str, *, progress: bool = True) -> Any:
  """HF folder -> Orbax checkpoint dir readable by `restore_params` (and so by init_from)."""
  import jax

  from granite_jax.ckpt.hf import load_pretrained
  from granite_jax.ckpt.manager import Checkpointer
  cfg, params = load_pretrained(hf_dir)
  leaves = jax.tree.leaves(params)
  if progress:
    print(f"import {hf_dir}: {cfg.num_params() / 1e6:,.1f}M params in {len(leaves)} leaves", flush=True)
  ckpt = Checkpointer(ckpt_dir, max_to_keep=1, async_save=False)
  ckpt.save(0, {"params": params})
  ckpt.close()
  with open(os.path.join(ckpt_dir, MODEL_CONFIG), "w") as f:
    json.dump(cfg.to_dict(), f, indent=2)
  return cfg


def export_hf(ckpt_dir: str, hf_dir: str, *, model_config: str | None = None, preset: str | None = None,
              step: int | None = None, dtype: str = "bfloat16", fp8: bool = False, tokenizer: str | None = None,
              max_shard_size: str = "5GB", progress: bool = True) -> list[str]:
  """A run's checkpoint -> HF folder, restoring one parameter leaf at a time."""
  import jax

  from granite_jax.ckpt.hf import save_pretrained
  from granite_jax.ckpt.manager import restore_params
  ckpt_dir = ckpt_dir_of(ckpt_dir)
  cfg = model_config_for(ckpt_dir, model_config, preset)
  abstract = _cpu_abstract(cfg)

  def get(path):
    sub = abstract
    for k in path:
      sub = sub[k]
    partial = sub
    for k in reversed(path):  # just this leaf, so host memory holds one tensor at a time
      partial = {k: partial}
    out = restore_params(ckpt_dir, partial, step=step)
    for k in path:
      out = out[k]
    return jax.device_get(out)

  return save_pretrained(cfg, get, hf_dir, dtype, fp8=fp8, tokenizer=tokenizer,
                         max_shard_size=max_shard_size, progress=progress)


def _is_reward_model(hf_dir: str) -> bool:
  from granite_jax.ckpt.hf import read_config
  from granite_jax.ckpt.hf_reward import is_reward_model
  return is_reward_model(read_config(hf_dir))


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m granite_jax.ckpt.hf", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  imp = sub.add_parser("import", help="HF folder -> Orbax checkpoint dir")
  imp.add_argument("hf_dir")
  imp.add_argument("ckpt_dir")
  imp.add_argument("--reward-model", action="store_true",
                   help="a *ForSequenceClassification reward model -> an rl.reward_model workdir "
                        "(auto-detected from config.json architectures)")
  imp.add_argument("--seq-len", type=int, help="reward model: longest sequence scored (default: "
                   "max_position_embeddings, at most 8192)")
  exp = sub.add_parser("export", help="Orbax checkpoint (run workdir or its ckpt/) -> HF folder")
  exp.add_argument("ckpt_dir")
  exp.add_argument("hf_dir")
  exp.add_argument("--model-config", help="ModelConfig as JSON text or a JSON file")
  exp.add_argument("--preset", help="model preset (fields of --model-config override it)")
  exp.add_argument("--step", type=int, help="checkpoint step (default: newest)")
  exp.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
  exp.add_argument("--fp8", action="store_true", help="FP8 e4m3 block linears (compressed-tensors)")
  exp.add_argument("--tokenizer", help="tokenizer.json or a folder with HF tokenizer files")
  exp.add_argument("--max-shard-size", default="5GB")
  a = p.parse_args(argv)
  if a.cmd == "import" and (a.reward_model or _is_reward_model(a.hf_dir)):
    from granite_jax.ckpt.hf_reward import import_reward_model
    import_reward_model(a.hf_dir, a.ckpt_dir, seq_len=a.seq_len)
    print(f"wrote reward model {a.ckpt_dir}; use it with --config.rl.reward_model={a.ckpt_dir}")
  elif a.cmd == "import":
    cfg = import_hf(a.hf_dir, a.ckpt_dir)
    print(f"wrote {a.ckpt_dir} (step 0) and {MODEL_CONFIG}; train from it with "
          f"--config.init_from={a.ckpt_dir} and model fields {json.dumps(cfg.to_dict())}")
  else:
    names = export_hf(a.ckpt_dir, a.hf_dir, model_config=a.model_config, preset=a.preset, step=a.step,
                      dtype=a.dtype, fp8=a.fp8, tokenizer=a.tokenizer, max_shard_size=a.max_shard_size)
    print(f"wrote {a.hf_dir}: config.json + {len(names)} safetensors shard(s)")


def cli_main() -> None:
  """`python -m granite_jax.ckpt.hf`: bad input is one line (granite_jax.cli), --debug shows the traceback."""
  from granite_jax.cli import run_main
  sys.exit(run_main("granite_jax.ckpt.hf", main))


if __name__ == "__main__":
  cli_main()

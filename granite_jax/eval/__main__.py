"""`python -m granite_jax.eval WORKDIR_OR_CKPT --length N [--short-length M]`

Long-context report for a checkpoint: RULER-style NIAH scores at `--length`,
loss by position bucket at `--length`, and short-context held-out loss at
`--short-length` (the "no worse than before" check of the LCE merge), and the
long-range copy ratio (eval/copy_ratio.py) at copy distances inside the short
(pretraining) length and past it (`--copy-distances`, default short/2 and 2 x short).
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json

import jax
from ml_collections import ConfigDict

from granite_jax.ckpt.manager import abstract_like, restore_params
from granite_jax.ckpt.run_dir import ckpt_dir_of, model_config_for
from granite_jax.data import config as data_config
from granite_jax.data import demo_corpus
from granite_jax.data.sources import text_dataset
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.eval import copy_ratio, niah, perplexity
from granite_jax.model.config import ModelConfig
from granite_jax.model.params import init_params
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib


def load(path: str, **overrides):
  ckpt = ckpt_dir_of(path)
  cfg = model_config_for(ckpt)
  cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return cfg, restore_params(ckpt, abstract_like(abstract, state_lib.param_shardings(cfg, mesh)))


def copy_distances(arg: str, short_length: int, length: int) -> list[int]:
  """`--copy-distances`: explicit list, 'none', or short/2 and 2 x short (capped by --length)."""
  if arg == "none":
    return []
  if arg:
    try:
      return [int(x) for x in arg.split(",") if x.strip()]
    except ValueError:
      raise SystemExit(f"--copy-distances={arg!r}: expected comma-separated integers or 'none'") from None
  far = min(2 * short_length, length - 80)
  return [short_length // 2] + ([far] if far > short_length else [])


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(prog="python -m granite_jax.eval", description=__doc__.split("\n")[0])
  p.add_argument("ckpt", help="a run's WORKDIR, WORKDIR/ckpt or merged/ckpt (model_config.json beside it)")
  p.add_argument("--length", type=int, required=True, help="context length of the NIAH and bucket evals")
  p.add_argument("--short-length", type=int, default=256)
  p.add_argument("--per-depth", type=int, default=2)
  p.add_argument("--cache-dir", default="")
  p.add_argument("--copy-distances", default="",
                 help="comma-separated copy distances in tokens (default: short/2, 2 x short); 'none' skips")
  p.add_argument("--copy-docs", type=int, default=8, help="documents per copy distance")
  a = p.parse_args(argv)
  cfg, params = load(a.ckpt, max_seq_len=max(a.length + 64, 4096))
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=a.cache_dir)))
  paths = demo_corpus.ensure_demo_corpus(data_config.cache_dir(ConfigDict(dict(cache_dir=a.cache_dir))), "eval")
  texts = [t for d in ("books", "technical", "cc_hq") for t in text_dataset(paths[d]) if t]
  tasks = niah.make_suite(tok, texts, a.length, per_depth=a.per_depth)
  result = {"length": a.length, "niah": niah.run_suite(params, cfg, tok, tasks),
            "bucket_loss": perplexity.bucket_losses(params, cfg, perplexity.long_rows(tok, texts, a.length, 2)),
            "short_loss": float(sum(perplexity.bucket_losses(
                params, cfg, perplexity.long_rows(tok, texts, a.short_length, 8), n_buckets=1)))}
  # The copy-format needle at the short (pretraining) length too: LCE should keep or raise it.
  short_tasks = niah.make_suite(tok, texts, a.short_length, per_depth=a.per_depth, kinds=("niah_copy",))
  result["niah_short"] = niah.run_suite(params, cfg, tok, short_tasks)
  print(f"NIAH @ {a.length}: " + ", ".join(f"{k} {v:.2f}" for k, v in result["niah"].items()))
  print(f"NIAH @ {a.short_length}: niah_copy {result['niah_short']['niah_copy']:.2f}")
  print("loss by position bucket: " + ", ".join(f"{x:.3f}" for x in result["bucket_loss"]))
  print(f"short-context loss @ {a.short_length}: {result['short_loss']:.4f}")
  distances = copy_distances(a.copy_distances, a.short_length, a.length)
  if distances:
    result["copy"] = copy_ratio.copy_report(params, cfg, tok, texts, distances, a.copy_docs)
    print("long-range copy ratio (repeat/first loss): " + ", ".join(
        f"distance {k}: {v['ratio']:.3f}" for k, v in result["copy"].items()))
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  import sys

  from granite_jax.cli import run_main
  sys.exit(run_main("granite_jax.eval", main))

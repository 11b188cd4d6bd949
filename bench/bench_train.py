"""Training throughput: this project vs transformers' GraniteForCausalLM, and MFU.

  python -m bench.bench_train                       # CPU bench shape, + transformers
  python -m bench.bench_train --shape gpu_8b_slice  # one H100: 8B widths, 4 layers, T=4096

Both frameworks train on the same token batches with AdamW of the same
hyperparameters. tokens/s is from the fastest timed step; the peak is a large
jitted matmul measured in the same run (float32 on CPU, bfloat16 on GPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from bench import common
from granite_jax import flops

SHAPES = {"cpu": common.BENCH, "gpu_8b_slice": common.GPU_8B_SLICE}


def torch_step_seconds(cfg, batches, warmup: int = 1) -> list[float]:
  """transformers' Granite + torch.optim.AdamW, eager, on the same batches."""
  import torch
  from transformers import GraniteConfig, GraniteForCausalLM

  torch.manual_seed(0)
  hf = GraniteConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                     num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                     num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                     rms_norm_eps=cfg.rms_eps, tie_word_embeddings=cfg.tie_embeddings,
                     embedding_multiplier=cfg.embedding_multiplier, logits_scaling=cfg.logits_scaling,
                     residual_multiplier=cfg.residual_multiplier,
                     attention_multiplier=cfg.attn_scale, attention_dropout=0.0)
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
  model = GraniteForCausalLM._from_config(hf, attn_implementation="sdpa").to(dev)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=common.LR, betas=common.BETAS, eps=common.EPS,
                          weight_decay=common.WD)

  def step(tokens):
    ids = torch.from_numpy(tokens.astype(np.int64)).to(dev)
    with torch.autocast(dev, dtype=dtype, enabled=dtype != torch.float32):
      loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()  # syncs

  for b in batches[:warmup]:
    step(b)
  times = []
  for b in batches[warmup:]:
    t = time.perf_counter()
    step(b)
    times.append(time.perf_counter() - t)
  return times


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--shape", choices=sorted(SHAPES), default="cpu")
  p.add_argument("--steps", type=int, default=5, help="timed steps per framework")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--batch", type=int, default=0, help="override the shape's batch")
  p.add_argument("--no-torch", action="store_true", help="skip the transformers baseline")
  p.add_argument("--out", default=None, help="JSON path (default bench/results/train_<shape>.json)")
  a = p.parse_args(argv)
  shape = SHAPES[a.shape]
  cfg, T, B = shape["model"], shape["seq_len"], a.batch or shape["batch"]
  batches = common.token_batches(cfg.vocab_size, B, T, a.warmup + a.steps)
  fpt = flops.train_flops_per_token(cfg, T)
  peak_dtype = "bfloat16" if cfg.dtype == "bfloat16" else "float32"

  peak = common.peak_flops(peak_dtype)
  trainer = common.JaxTrainer(cfg)
  jb = [trainer.put(t) for t in batches]
  jax_times = trainer.step_seconds(jb, a.warmup)
  del trainer, jb
  rows = [dict(impl="granite_jax", **_row(B, T, jax_times, fpt, peak))]
  if not a.no_torch:
    rows.append(dict(impl="transformers+torch", **_row(B, T, torch_step_seconds(cfg, batches, a.warmup),
                                                       fpt, peak)))
  peak_after = common.peak_flops(peak_dtype)  # drift of the machine during the run
  title = (f"train throughput | {a.shape}: d={cfg.d_model} L={cfg.n_layers} heads={cfg.n_heads}x"
           f"{cfg.head_dim} kv={cfg.n_kv_heads} mlp={cfg.d_ff} V={cfg.vocab_size} T={T} B={B} "
           f"{cfg.dtype} | {fpt / 1e6:,.1f} MFLOP/token | peak {peak / 1e9:,.1f} GFLOP/s "
           f"({peak_dtype} matmul; {peak_after / 1e9:,.1f} after)")
  result = dict(shape=a.shape, model=dataclasses.asdict(cfg), seq_len=T, batch=B,
                flops_per_token=fpt, peak_flops=peak, peak_flops_after=peak_after, rows=rows)
  if len(rows) == 2:
    result["speedup_vs_transformers"] = rows[0]["tokens_per_sec"] / rows[1]["tokens_per_sec"]
    title += f"\nspeedup vs transformers: {result['speedup_vs_transformers']:.2f}x"
  result["table"] = common.print_table(title, rows, ["impl", "step_s", "tokens_per_sec", "mfu_pct"])
  common.write_json(f"train_{a.shape}", result, a.out)
  return result


def _row(B, T, times, fpt, peak):
  tps = common.tokens_per_sec(B, T, times)
  return dict(step_s=float(np.min(times)), step_times=times, tokens_per_sec=tps,
              mfu_pct=100 * tps * fpt / peak)


if __name__ == "__main__":
  main()

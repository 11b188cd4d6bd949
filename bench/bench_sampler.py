"""Sampler throughput: the KV-cache sampler vs transformers' `generate` with its KV cache.

  python -m bench.bench_sampler                  # tiny preset, batch 16, 128 new tokens
  python -m bench.bench_sampler --no-torch       # the JAX sampler alone

Both frameworks run the SAME weights: the `tiny` preset (float32, random init,
seed 0) is exported with `granite_jax.ckpt.hf.save_pretrained` and loaded as
transformers' GraniteForCausalLM (torch, eval, inference mode). The prompts are
equal-length random tokens (seed 0); decoding is greedy with no stop token, so
every row generates exactly `--new-tokens` tokens in both. Our side is
`granite_jax.infer.sampler.generate` (one jitted program: prefill + a
`lax.while_loop` of 1-token steps over a preallocated cache). tokens/s =
batch x new tokens / the fastest timed run, after warmup runs (the first
compiles); the same rule for both. The note gives how often the two agree.

torch runs with its default thread count (one per core) unless --torch-threads
is set. On a machine whose cores other jobs also use, its OpenMP threads can
stall at every op's barrier: on a busy 2-core machine a 0.46 s run became 7 to
37 s with 2 threads, while 1 thread stayed at 0.6 to 0.8 s. Use
--torch-threads 1 there, or better, a quiet machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile

import jax
import numpy as np

from bench import common
from granite_jax.infer import sampler
from granite_jax.model import preset
from granite_jax.model.params import init_params

PRESET = "tiny"


def torch_generate(cfg, params, prompts: np.ndarray, new_tokens: int, warmup: int, repeats: int,
                   threads: int = 0) -> tuple[np.ndarray, list[float]]:
  """transformers' GraniteForCausalLM.generate (greedy, DynamicCache) on the exported weights."""
  import torch
  from transformers import GraniteForCausalLM

  from granite_jax.ckpt.hf import save_pretrained

  if threads > 0:
    torch.set_num_threads(threads)
  with tempfile.TemporaryDirectory() as d:
    save_pretrained(cfg, params, d, dtype="float32")
    model = GraniteForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
  ids = torch.from_numpy(prompts.astype(np.int64))
  mask = torch.ones_like(ids)
  P = ids.shape[1]

  def fn():
    with torch.inference_mode():
      out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, use_cache=True,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           eos_token_id=None, pad_token_id=0, temperature=None, top_p=None,
                           top_k=None)
    return out[:, P:].numpy()  # torch on CPU is synchronous

  return common.run_times(fn, warmup, repeats)


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
  """Fraction of equal tokens, of tokens before each row's first mismatch, and of identical rows."""
  eq = a == b
  prefix = np.where(eq.all(1), eq.shape[1], np.argmin(eq, axis=1))
  return {"tokens": float(eq.mean()), "prefix": float(prefix.mean() / eq.shape[1]),
          "rows": float(eq.all(1).mean())}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--prompt-len", type=int, default=32)
  p.add_argument("--new-tokens", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5, help="timed runs per framework")
  p.add_argument("--warmup", type=int, default=2, help="untimed runs first (the first compiles)")
  p.add_argument("--no-torch", action="store_true", help="skip the transformers baseline")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch.set_num_threads for the baseline (0: torch's default, one per core)")
  p.add_argument("--out", default=None, help="JSON path (default bench/results/sampler.json)")
  a = p.parse_args(argv)
  cfg = preset(PRESET, dtype="float32", param_dtype="float32")
  B, Pl, N = a.batch, a.prompt_len, a.new_tokens
  warmup = max(a.warmup, 1)
  prompts = common.token_batches(cfg.vocab_size, B, Pl, 1)[0]
  params = init_params(cfg, jax.random.PRNGKey(0))

  jax_out, jax_times = common.run_times(lambda: sampler.generate(params, cfg, prompts, N), warmup, a.repeats)
  jax_tokens = np.asarray(jax_out["tokens"])
  assert (np.asarray(jax_out["lengths"]) == N).all(), "no stop token: every row generates N tokens"
  rows = [dict(impl="granite_jax sampler", **_row(B, N, jax_times))]
  title = (f"sampler throughput | {PRESET}: d={cfg.d_model} L={cfg.n_layers} heads={cfg.n_heads}x"
           f"{cfg.head_dim} kv={cfg.n_kv_heads} mlp={cfg.d_ff} V={cfg.vocab_size} {cfg.dtype} | "
           f"batch {B}, prompt {Pl}, {N} new tokens, greedy")
  result = {"preset": PRESET, "model": dataclasses.asdict(cfg), "batch": B, "prompt_len": Pl,
            "new_tokens": N, "warmup": warmup, "repeats": a.repeats}
  if not a.no_torch:
    import torch
    torch_tokens, torch_times = torch_generate(cfg, params, prompts, N, warmup, a.repeats,
                                               a.torch_threads)
    threads = torch.get_num_threads()
    result["torch_threads"] = threads
    rows.append(dict(impl=f"transformers generate (torch {torch.__version__.split('+')[0]}, "
                          f"{threads} thread{'s' if threads > 1 else ''})", **_row(B, N, torch_times)))
    agree = agreement(jax_tokens, torch_tokens)
    result["speedup_vs_transformers"] = rows[0]["tokens_per_sec"] / rows[1]["tokens_per_sec"]
    result["agreement"] = agree
    title += (f"\nspeedup vs transformers: {result['speedup_vs_transformers']:.2f}x (target >= 3x)"
              f" | greedy tokens equal: {100 * agree['tokens']:.1f}% (before each row's first "
              f"mismatch: {100 * agree['prefix']:.1f}%; rows identical: {100 * agree['rows']:.0f}%)")
  result["rows"] = rows
  result["table"] = common.print_table(title, rows, ["impl", "seconds", "tokens_per_sec"])
  common.write_json("sampler", result, a.out)
  return result


def _row(B, N, times):
  return {"seconds": float(np.min(times)), "run_times": times,
          "tokens_per_sec": common.tokens_per_sec(B, N, times)}


if __name__ == "__main__":
  main()

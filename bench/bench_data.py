"""The data path: rows from token stores vs what training consumes; tokenizing vs its ceiling;
time to the first batch over 10,000 shards.

  python -m bench.bench_data [--steps 40] [--rows 16] [--seq-len 4096] [--shards 10000]

1. Packed rows/s of the global order (data/order.py) read through the Loader (Grain threads), phase
   2's mixture over the demo corpus tokenized into stores (built once in the cache), at seq 4096:
   the tokens/s one process can hand its devices. Compared with (a) what one GPU consumes at the
   8B pretraining layout, estimated as 40% MFU of a GB200's dense bf16 peak (plan/estimate.py) /
   training FLOPs per token (flops.train_flops_per_token at seq 4096), and (b) the measured CPU
   train step of the bench shape (bench/results/train_cpu.json, when present).
2. Tokenizing: `build_store` of the demo corpus in one process, tokens per CPU-second, against
   `tokenizers`' own `encode_batch_fast` on the same texts (the ceiling), one thread each.
3. Time to the first batch: open a store of N shards (written by the real shard writer), build the
   order and read one batch of rows from random shards.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from bench import common


def _cpu() -> float:
  return time.process_time()  # every thread of this process: per CPU-second = per core


def order_rate(steps: int, rows: int, seq_len: int) -> dict[str, float]:
  from configs import phase2
  from granite_jax.data import batches, pipeline

  data = phase2.get_config("tiny").data
  order = pipeline.make_order(data, seq_len=seq_len, seed=0)
  row_ids = np.arange(rows)
  order.batch(0, rows, row_ids)  # handles, doc_ends, caches
  t, c = time.perf_counter(), _cpu()
  for b in range(1, steps + 1):
    order.batch(b, rows, row_ids)
  direct = steps * rows * seq_len / (time.perf_counter() - t)
  direct_cpu = steps * rows * seq_len / max(_cpu() - c, 1e-9)
  ld = batches.Loader(order, rows, row_ids, steps + 1)
  ld.get(steps + 1)
  t = time.perf_counter()
  for s in range(steps + 2, 2 * steps + 2):
    ld.get(s)
  loader = steps * rows * seq_len / (time.perf_counter() - t)
  ld.close()
  return dict(direct_tokens_per_sec=direct, direct_tokens_per_cpu_sec=direct_cpu, loader_tokens_per_sec=loader)


def gpu_consumption(seq_len: int) -> tuple[float, str]:
  from granite_jax import flops
  from granite_jax.model import preset
  from granite_jax.plan.estimate import Hardware

  peak = Hardware().peak_flops
  per_token = flops.train_flops_per_token(preset("8b"), seq_len)
  tps = 0.4 * peak / per_token
  return tps, f"8B at seq {seq_len}: 40% of {peak:.2g} FLOP/s / {per_token:.3g} FLOP per token"


def tokenize_rate() -> dict[str, float]:
  from granite_jax.data import config as data_config
  from granite_jax.data.demo_corpus import ensure_demo_corpus
  from granite_jax.data.sources import TextSource
  from granite_jax.data.store import TokenStore, build_store
  from granite_jax.data.tok_spec import load_tokenizer_spec
  from granite_jax.data.tokenizer import tokenizer_path

  cfg = {"tokenizer": "", "cache_dir": ""}
  spec = load_tokenizer_spec(tokenizer_path(cfg))
  path = ensure_demo_corpus(data_config.cache_dir(cfg), "train")["cc_hq"]
  with tempfile.TemporaryDirectory() as d:
    c = _cpu()
    build_store([path], os.path.join(d, "store"), spec)
    store_cpu = _cpu() - c
    tokens = TokenStore(os.path.join(d, "store")).num_tokens
  src = TextSource(path)
  texts = [src[i] for i in range(len(src))]
  c = _cpu()
  for i in range(0, len(texts), 1024):
    spec.tok.encode_batch_fast(texts[i:i + 1024], add_special_tokens=False)
  ceiling_cpu = _cpu() - c
  return dict(store_tokens_per_cpu_sec=tokens / store_cpu, ceiling_tokens_per_cpu_sec=tokens / ceiling_cpu,
              tokens=tokens)


def first_batch(n_shards: int, rows: int, seq_len: int) -> dict[str, float]:
  from granite_jax.data import store_io
  from granite_jax.data.order import GlobalOrder, WindowRows
  from granite_jax.data.store import TokenStore
  from granite_jax.data.store_writer import write_shard
  from granite_jax.data.tokenize import manifest_of

  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as root:
    kv, dones = store_io.Kv(root), []
    t = time.perf_counter()
    for s in range(n_shards):
      lens = rng.integers(50, 3000, size=4)
      name = store_io.shard_name(s)
      write_shard(root, name, rng.integers(2, 4000, size=int(lens.sum())).astype(np.int32), lens, kv=kv)
      dones.append({"shard": name, "source": f"/data/{name}.jsonl", "size": 0, "records": 4, "docs": 4,
                    "tokens": int(lens.sum()), "skipped": 0})
    plan = {"format": store_io.FORMAT, "kind": "text", "text_field": "text",
            "tokenizer": {"fingerprint": "f" * 16, "eos_id": 1, "pad_id": 0, "vocab_size": 4096, "path": "t"}}
    kv.write_json(store_io.MANIFEST, manifest_of(plan, dones))
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    store = TokenStore(root)
    order = GlobalOrder({"cc": WindowRows(store, seq_len, 0)}, {"cc": 1.0})
    order.batch(0, rows)
    first = time.perf_counter() - t
  return dict(write_sec=write_s, first_batch_sec=first)


def train_cpu_rate() -> tuple[float | None, str]:
  path = os.path.join(common.RESULTS_DIR, "train_cpu.json")
  if not os.path.exists(path):
    return None, "run bench_train first"
  with open(path) as f:
    return json.load(f)["rows"][0]["tokens_per_sec"], os.path.relpath(path)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=40)
  p.add_argument("--rows", type=int, default=16, help="rows per batch read by the process")
  p.add_argument("--seq-len", type=int, default=4096)
  p.add_argument("--shards", type=int, default=10_000)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  r = order_rate(a.steps, a.rows, a.seq_len)
  gpu, gpu_note = gpu_consumption(a.seq_len)
  cpu_train, cpu_note = train_cpu_rate()
  tok = tokenize_rate()
  fb = first_batch(a.shards, a.rows, a.seq_len)
  rows = [
      dict(what="rows from stores, Loader (Grain threads)", tokens_per_sec=r["loader_tokens_per_sec"],
           note=f"{r['loader_tokens_per_sec'] / gpu:.0f}x one GB200 GPU at 8B; target >= 1,000,000 and >= 10x"),
      dict(what="rows from stores, one thread", tokens_per_sec=r["direct_tokens_per_sec"],
           note=f"{r['direct_tokens_per_cpu_sec']:,.0f} per CPU-second"),
      dict(what="one GB200 GPU consumes (estimate)", tokens_per_sec=gpu, note=gpu_note),
      dict(what="CPU train step, bench shape", tokens_per_sec=cpu_train or float("nan"), note=cpu_note),
      dict(what="tokenize: build_store, per CPU-second", tokens_per_sec=tok["store_tokens_per_cpu_sec"],
           note=f"{tok['store_tokens_per_cpu_sec'] / tok['ceiling_tokens_per_cpu_sec']:.0%} of the ceiling"),
      dict(what="tokenize: encode_batch_fast alone", tokens_per_sec=tok["ceiling_tokens_per_cpu_sec"],
           note=f"the ceiling ({tok['tokens']:,} tokens of demo cc_hq)"),
      dict(what=f"first batch over {a.shards:,} shards", tokens_per_sec=float("nan"),
           note=f"{fb['first_batch_sec']:.2f} s to open, order and read {a.rows} rows "
                f"(writing them: {fb['write_sec']:.0f} s)"),
  ]
  table = common.print_table(f"data path | seq {a.seq_len}, {a.rows} rows per batch, one process",
                             rows, ["what", "tokens_per_sec", "note"])
  common.write_json("data", dict(order=r, gpu_tokens_per_sec=gpu, tokenize=tok, first_batch=fb,
                                 table=table), a.out)


if __name__ == "__main__":
  main()

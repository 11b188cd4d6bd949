"""Data pipeline: packed tokens/s of the Grain pipeline vs the train step's consumption.

  python -m bench.bench_data [--batches 200] [--train-tps N]

The pipeline is phase 2's mixture over the demo corpus at the bench shape
(seq 512, batch 8), tokenized and packed on the fly. Consumption is the
granite_jax tokens/s of bench/results/train_cpu.json when present (run
bench_train first), else it is measured here with a few steps.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench import common


def pipeline_rate(n_batches: int, seq_len: int, batch: int) -> dict[str, float]:
  from configs import phase2
  from granite_jax.data import pipeline

  data = phase2.get_config("tiny").data
  it = pipeline.make_iterator(data, seq_len=seq_len, batch_size=batch, seed=0)
  for _ in range(5):  # tokenizer load, first shards and the prefetch thread start
    next(it)
  real = 0
  t = time.perf_counter()
  for _ in range(n_batches):
    real += int(np.count_nonzero(next(it)["segment_ids"]))
  dt = time.perf_counter() - t
  slots = n_batches * batch * seq_len
  return dict(batches_per_sec=n_batches / dt, tokens_per_sec=slots / dt,
              real_tokens_per_sec=real / dt, fill=real / slots)


def train_rate(seq_len: int, batch: int, given: float) -> tuple[float, str]:
  if given > 0:
    return given, "--train-tps"
  path = os.path.join(common.RESULTS_DIR, "train_cpu.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)["rows"][0]["tokens_per_sec"], os.path.relpath(path)
  trainer = common.JaxTrainer(common.BENCH["model"])
  batches = [trainer.put(t) for t in common.token_batches(common.BENCH["model"].vocab_size,
                                                          batch, seq_len, 3)]
  return common.tokens_per_sec(batch, seq_len, trainer.step_seconds(batches, 1)), "measured"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batches", type=int, default=200)
  p.add_argument("--train-tps", type=float, default=0.0, help="train tokens/s to compare against")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  T, B = common.BENCH["seq_len"], common.BENCH["batch"]
  data = pipeline_rate(a.batches, T, B)
  train_tps, source = train_rate(T, B, a.train_tps)
  ratio = data["tokens_per_sec"] / train_tps
  rows = [dict(stage="grain pipeline (packed)", tokens_per_sec=data["tokens_per_sec"],
               note=f"{data['fill']:.1%} of slots hold tokens"),
          dict(stage="train step (consumes)", tokens_per_sec=train_tps, note=source)]
  table = common.print_table(f"data pipeline | seq {T} batch {B} | headroom {ratio:.1f}x (target >= 10x)",
                             rows, ["stage", "tokens_per_sec", "note"])
  common.write_json("data", dict(pipeline=data, train_tokens_per_sec=train_tps, train_source=source,
                                 ratio=ratio, table=table), a.out)


if __name__ == "__main__":
  main()

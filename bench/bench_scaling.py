"""Sharding overhead: 1 vs 8 fake CPU devices at the same global batch.

  python -m bench.bench_scaling [--steps 3]

The 8 devices are XLA host-platform devices sharing the same cores, so no
speedup is possible: the ratio measures what partitioning, collectives and
per-device dispatch cost. Meshes: (1,1,1) on one device; (2,1,1) and (8,1,1)
data parallel; (2,2,2) data x FSDP x tensor.
"""
from __future__ import annotations

import os

# Before jax is imported: 8 host devices for this process only.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402

import jax  # noqa: E402

from bench import common  # noqa: E402

# "2 devices" puts one host device per core of a 2-core machine: whether XLA
# runs a step faster as two data-parallel halves than with intra-op threads.
MESHES = [("1 device", (1, 1, 1), 1), ("2 devices, data=2", (2, 1, 1), 2),
          ("8 devices, data=8", (8, 1, 1), 8), ("8 devices, 2x2x2", (2, 2, 2), 8)]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  cfg, T, B = common.BENCH["model"], common.BENCH["seq_len"], common.BENCH["batch"]
  tokens = common.token_batches(cfg.vocab_size, B, T, a.steps + 1)
  rows = []
  for name, shape, n in MESHES:
    trainer = common.JaxTrainer(cfg, shape, devices=jax.devices()[:n])
    times = trainer.step_seconds([trainer.put(t) for t in tokens], 1)
    rows.append(dict(mesh=name, step_s=min(times), tokens_per_sec=common.tokens_per_sec(B, T, times)))
    del trainer
  for r in rows:
    r["vs_1_device"] = r["tokens_per_sec"] / rows[0]["tokens_per_sec"]
  table = common.print_table(f"sharding overhead | global batch {B} x {T} | 8 fake CPU devices on "
                             f"{os.cpu_count()} cores", rows, ["mesh", "step_s", "tokens_per_sec",
                                                                "vs_1_device"])
  common.write_json("scaling", dict(rows=rows, table=table), a.out)


if __name__ == "__main__":
  main()

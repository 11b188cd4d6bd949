"""Checkpoint checksums vs the checkpoint write: is it cheap enough to run on every save?

Saves a train-state-like tree holding one 1 GiB float32 shard with the project's Checkpointer
(Orbax, synchronous here so the write is timed alone), then times what the integrity manifest
adds: recording size + checksum of every file of the step (`integrity.write_manifest`, what each
process does after a commit) and verifying them (`integrity.verify`, what a restore does first).
The checksum reads the files just written, so they are usually still in the page cache: this
is the CPU cost of the checksum, the part that competes with training; a cold read costs the
disk's read time on top.

  python -m bench.bench_checksum [--gib 1] [--repeats 3] [--dir /tmp/...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import flax.struct
import jax
import numpy as np

from bench.common import print_table, write_json
from granite_jax.ckpt import integrity
from granite_jax.ckpt.manager import Checkpointer


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--gib", type=float, default=1.0)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
  args = ap.parse_args()
  n = int(args.gib * (1 << 30)) // 4
  shard = jax.device_put(np.random.default_rng(0).standard_normal(n, dtype=np.float32))
  state = _State(step=jax.numpy.zeros((), jax.numpy.int32), params={"w": shard})
  root = tempfile.mkdtemp(dir=args.dir, prefix="bench_checksum_")
  rows = []
  try:
    for r in range(args.repeats):
      d = os.path.join(root, f"r{r}")
      ck = Checkpointer(d, async_save=False, verify_checksums=False)
      t0 = time.perf_counter()
      ck.save(1, state)
      ck._mgr.wait_until_finished()
      t_write = time.perf_counter() - t0
      step_dir = os.path.join(d, "1")
      nbytes = sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(step_dir) for f in fs)
      t0 = time.perf_counter()
      integrity.write_manifest(d, 1, checksums=True)
      t_sum = time.perf_counter() - t0
      t0 = time.perf_counter()
      assert integrity.verify(d, 1, checksums=True) is None
      t_verify = time.perf_counter() - t0
      rows.append(dict(repeat=r, gib_written=nbytes / (1 << 30), orbax_write_s=t_write,
                       checksum_s=t_sum, verify_s=t_verify, checksum_gb_s=nbytes / t_sum / 1e9,
                       ratio=t_sum / t_write))
      ck.close()
      shutil.rmtree(d)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  best = dict(repeat="best", **{k: min(r[k] for r in rows) for k in rows[0] if k != "repeat"})
  best["gib_written"] = rows[0]["gib_written"]
  best["checksum_gb_s"] = rows[0]["gib_written"] * (1 << 30) / best["checksum_s"] / 1e9
  best["ratio"] = best["checksum_s"] / best["orbax_write_s"]
  print_table(f"checksum ({integrity.ALGO}) vs Orbax checkpoint write, {args.gib:g} GiB shard",
              rows + [best], ["repeat", "gib_written", "orbax_write_s", "checksum_s", "verify_s",
                              "checksum_gb_s", "ratio"])
  write_json("checksum", dict(algo=integrity.ALGO, gib=args.gib, rows=rows, best=best))


if __name__ == "__main__":
  main()

"""Long-context memory: XLA's per-device memory estimate of one train step, nothing executed.

  python -m bench.bench_long_context                 # both parts
  python -m bench.bench_long_context --part tiny     # tiny model, 1 CPU device
  python -m bench.bench_long_context --part 8b --impls ring allgather

Part `tiny`: the tiny preset at 4K..32K tokens (batch 1) with blockwise
attention, and with the reference `xla` attention (T x T scores) where it fits.
Part `8b`: the Granite-8B shape (all 40 layers: nn.scan compiles one block, so
depth costs no compile time) at 512K tokens per sequence, 9 sequences, on a
72-device fake CPU mesh (default data=9, fsdp=1, tensor=2, context=4: 9 does
not divide the 8B widths, so it cannot be fsdp), compiled from
abstract arrays (`jax.ShapeDtypeStruct` with shardings) in a subprocess that
sets the fake device count. Both report `compiled.memory_analysis()`: bytes
per device for arguments (params + optimizer state + batch), outputs, and the
temporaries XLA's buffer assignment needs at its peak.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

GIB = 2 ** 30


def step_memory(cfg, mesh_shape, axes, batch: int, seq_len: int) -> dict:
  """Lower + compile the jitted train step from abstract inputs; memory_analysis() in GiB."""
  import jax
  import jax.numpy as jnp
  import optax

  from granite_jax.sharding.jit import mesh_context
  from granite_jax.sharding.mesh import make_mesh
  from granite_jax.train import state as state_lib
  from granite_jax.train import step as step_lib

  mesh = make_mesh(mesh_shape, axes)
  tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.1)
  sh = state_lib.state_shardings(cfg, mesh, tx)
  state = jax.eval_shape(state_lib.make_init_fn(cfg, tx, sh), jax.random.PRNGKey(0))
  fn = step_lib.jit_train_step(cfg, mesh, tx, optax.constant_schedule(1e-4), sh)
  b_shard = step_lib.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=b_shard)
           for k in ("tokens", "segment_ids", "positions")}
  with mesh_context(mesh):
    m = fn.jitted.lower(state, batch).compile().memory_analysis()
  arg, out, tmp = m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes
  alias = m.alias_size_in_bytes  # donated state: outputs reuse the argument buffers
  return dict(args_gib=arg / GIB, out_gib=out / GIB, temp_gib=tmp / GIB,
              peak_gib=(arg + out - alias + tmp) / GIB)


def tiny_rows(lengths, xla_lengths, block):
  from granite_jax.model import preset
  rows = []
  for impl, Ts in (("blockwise", lengths), ("xla", xla_lengths)):
    for T in Ts:
      cfg = preset("tiny", max_seq_len=T, attention_impl=impl, attention_block=block)
      r = step_memory(cfg, (1, 1, 1), ("data", "fsdp", "tensor"), 1, T)
      rows.append(dict(model="tiny", impl=impl, tokens=T, **r))
  return rows


def big_rows(impls, seq_len, block, mesh_shape, loss_chunk, name="8b"):
  import math

  from granite_jax.model import preset
  from granite_jax.sharding.rules import MESH_AXES
  rows = []
  batch = mesh_shape[0] * mesh_shape[1]  # one sequence per data/fsdp replica
  for impl in impls:
    cfg = preset(name, max_seq_len=seq_len, attention_impl=impl, attention_block=block, loss_chunk=loss_chunk)
    r = step_memory(cfg, mesh_shape, MESH_AXES, batch, seq_len)
    rows.append(dict(model=name, impl=impl, tokens=seq_len, devices=math.prod(mesh_shape), loss_chunk=loss_chunk,
                     mesh="x".join(map(str, mesh_shape)), **r))
  return rows


def _in_subprocess(part: str, argv: list[str], n_devices: int) -> list[dict]:
  """Fresh process: the fake device count must be set before jax starts."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
  out = subprocess.run([sys.executable, "-m", "bench.bench_long_context", "--part", part,
                        "--child", *argv], env=env, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--part", choices=("tiny", "8b", "all"), default="all")
  p.add_argument("--impls", nargs="+", default=["ring", "allgather"])
  p.add_argument("--block", type=int, default=512)
  p.add_argument("--mesh", type=int, nargs=4, default=[9, 1, 2, 4],
                 help="8b mesh: data fsdp tensor context (fsdp must divide d_model=4096)")
  p.add_argument("--preset", default="8b", help="part 8b: the model shape (8b, or 30b, 3b)")
  p.add_argument("--loss-chunk", type=int, default=1024,
                 help="8b: cross-entropy chunk (model.loss_chunk of the real configs; 0 = full logits)")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  a, rest = p.parse_known_args(argv)
  if a.child:
    rows = (tiny_rows([4096, 8192, 32768], [4096, 8192], a.block) if a.part == "tiny" else
            big_rows(a.impls, 512 * 1024, a.block, tuple(a.mesh), a.loss_chunk, a.preset))
    print(json.dumps(rows))
    return
  common = ["--block", str(a.block), "--mesh", *map(str, a.mesh), "--impls", *a.impls,
            "--loss-chunk", str(a.loss_chunk), "--preset", a.preset]
  rows = []
  if a.part in ("tiny", "all"):
    rows += _in_subprocess("tiny", common, 1)
  if a.part in ("8b", "all"):
    rows += _in_subprocess("8b", common, a.mesh[0] * a.mesh[1] * a.mesh[2] * a.mesh[3])
  print("| model | attention | tokens/seq | mesh | args GiB | temp GiB | peak GiB/device |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['model']} | {r['impl']} | {r['tokens']:,} | {r.get('mesh', '1 device')} | "
          f"{r['args_gib']:.2f} | {r['temp_gib']:.2f} | {r['peak_gib']:.2f} |")


if __name__ == "__main__":
  main()

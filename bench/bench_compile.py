"""Compile time vs depth: the jitted train step at 4, 16 and 40 layers.

  python -m bench.bench_compile [--layers 4 16 40]

Layers run under nn.scan, so XLA compiles one block whatever the depth and
the time should stay flat. Measured with the persistent compilation cache off:
lower + compile of the full train step (forward, backward, AdamW) at the
bench shape, nothing executed.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import optax

from bench import common
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib


def compile_seconds(cfg) -> tuple[float, float]:
  """(trace + lower, compile) seconds for the train step of `cfg` on one device."""
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx = common.make_tx()
  sh = state_lib.state_shardings(cfg, mesh, tx)
  abstract = jax.eval_shape(state_lib.make_init_fn(cfg, tx, sh), jax.random.PRNGKey(0))
  fn = step_lib.jit_train_step(cfg, mesh, tx, optax.constant_schedule(common.LR), sh)
  T, B = common.BENCH["seq_len"], common.BENCH["batch"]
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=step_lib.batch_sharding(mesh))
           for k, v in common.as_lm_batch(common.token_batches(cfg.vocab_size, B, T, 1)[0]).items()}
  with jax.set_mesh(mesh):  # the logical constraints resolve against it
    t = time.perf_counter()
    lowered = fn.jitted.lower(abstract, batch)
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    lowered.compile()
    return t_lower, time.perf_counter() - t


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--layers", type=int, nargs="+", default=[4, 16, 40])
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  jax.config.update("jax_enable_compilation_cache", False)
  compile_seconds(dataclasses.replace(common.BENCH["model"], n_layers=1))  # warm jax/XLA up, untimed
  rows = []
  for n in a.layers:
    cfg = dataclasses.replace(common.BENCH["model"], n_layers=n)
    lower_s, compile_s = compile_seconds(cfg)
    rows.append(dict(layers=n, lower_s=lower_s, compile_s=compile_s, total_s=lower_s + compile_s))
  ratio = rows[-1]["total_s"] / rows[0]["total_s"]
  table = common.print_table(f"compile time vs depth | train step at the bench shape | "
                             f"{rows[-1]['layers']} / {rows[0]['layers']} layers = {ratio:.2f}x",
                             rows, ["layers", "lower_s", "compile_s", "total_s"])
  common.write_json("compile", dict(rows=rows, ratio=ratio, table=table), a.out)


if __name__ == "__main__":
  main()

"""XLA's own per-device memory for the real train step, compiled with abstract inputs.

Nothing is allocated: the step is lowered with `jax.ShapeDtypeStruct`s that
carry the target shardings and compiled for a mesh of fake CPU devices, and
`compiled.memory_analysis()` reports XLA's buffer assignment. Per-device peak
= arguments + outputs - aliased (donated state) + temporaries.
Run through `measure_in_subprocess` so the fake device count is set before
JAX starts (the planner itself never needs devices).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def xla_memory(model: dict[str, Any], mesh_shape: dict[str, int], global_batch: int, seq_len: int,
               grad_accum: int = 1) -> dict[str, int]:
  """Bytes per device of the compiled train step (arguments, temps, peak) on len(mesh) devices."""
  import jax
  import jax.numpy as jnp

  from granite_jax.ckpt.manager import abstract_like
  from granite_jax.model.config import ModelConfig
  from granite_jax.optim import default_optim_config, make_optimizer
  from granite_jax.sharding.jit import mesh_context
  from granite_jax.sharding.mesh import make_mesh
  from granite_jax.train import state as state_lib
  from granite_jax.train import step as step_lib

  cfg = ModelConfig.from_dict(model)
  axes = tuple(mesh_shape)
  n = 1
  for s in mesh_shape.values():
    n *= s
  mesh = make_mesh(tuple(mesh_shape.values()), axes, jax.devices()[:n])
  tx, schedule = make_optimizer(default_optim_config(), total_steps=1000,
                                tokens_per_step=global_batch * seq_len)
  shardings = state_lib.state_shardings(cfg, mesh, tx)
  init = state_lib.make_init_fn(cfg, tx, shardings)
  state = abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), shardings)
  bs = step_lib.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((global_batch, seq_len), jnp.int32, sharding=bs)
           for k in ("tokens", "segment_ids", "positions")}
  fn = step_lib.jit_train_step(cfg, mesh, tx, schedule, shardings, grad_accum).jitted
  with mesh_context(mesh):
    ma = fn.lower(state, batch).compile().memory_analysis()
  out = dict(argument=ma.argument_size_in_bytes, output=ma.output_size_in_bytes,
             alias=ma.alias_size_in_bytes, temp=ma.temp_size_in_bytes)
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def measure_in_subprocess(jobs: list[dict[str, Any]], n_devices: int, timeout: int = 3000) -> list[dict]:
  """Runs xla_memory(**job) for each job in one fresh process with `n_devices` fake CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
  code = ("import json, sys; from granite_jax.plan.xla import xla_memory; "
          "jobs = json.load(sys.stdin); "
          "print('RESULT ' + json.dumps([xla_memory(**j) for j in jobs]))")
  r = subprocess.run([sys.executable, "-c", code], input=json.dumps(jobs), cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=timeout, check=False)
  lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
  if r.returncode or not lines:
    raise RuntimeError(f"XLA memory check failed ({r.returncode}):\n{r.stderr[-4000:]}")
  return json.loads(lines[-1][len("RESULT "):])

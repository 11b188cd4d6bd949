"""Planner vs XLA: per-device memory of the real train step, per preset and stage.

XLA compiles the step for a fake CPU mesh of the stage's size (72 devices, 64
for LCE) with abstract inputs. Full-depth 30B/8B models are slow to compile on
CPU, so the stack is compiled at two depths (default 4 and 8 layers) and XLA's
bytes are extrapolated linearly to the preset's depth: under nn.scan every
per-layer buffer (parameter, optimizer and gradient shards, saved residuals)
is a slice of a [layers, ...] array, so memory is affine in depth. (Not below
4 layers: at 2 XLA schedules differently; 30B SFT grows 1.9 GiB per layer
from 2 to 4 and 1.43 from 4 to 6 and from 6 to 8.)
CPU has no cuDNN: flash attention is stood in for by the `blockwise` impl
(the same O(T) memory class). The rollout KV cache is not part of the train
step, so it is left out of both columns.
"""
from __future__ import annotations

import dataclasses
import math
import time

from granite_jax.plan import STAGES, default_mesh, model_for
from granite_jax.plan_check import measure_in_subprocess
from granite_jax.plan_memory import train_memory


def cpu_model(preset: str, stage: str, **overrides):
  cfg = model_for(preset, stage, **overrides)
  if cfg.attention_impl == "cudnn":
    cfg = dataclasses.replace(cfg, attention_impl="blockwise")
  return cfg


def compare(preset: str, stage: str, depths=(4, 8), mesh: dict | None = None) -> dict:
  mesh = dict(mesh or default_mesh(preset, stage))
  st = STAGES[stage]
  cfg = cpu_model(preset, stage)
  dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
  batch = st.seqs_per_rank * dp
  jobs = [dict(model=dataclasses.replace(cfg, n_layers=d).to_dict(), mesh_shape=mesh, global_batch=batch,
               seq_len=st.seq_len) for d in depths]
  t0 = time.time()
  got = measure_in_subprocess(jobs, math.prod(mesh.values()))
  (d0, d1), (m0, m1) = depths, (got[0]["peak"], got[1]["peak"])
  xla = m0 + (m1 - m0) / (d1 - d0) * (cfg.n_layers - d0)
  mem = train_memory(cfg, mesh, batch, st.seq_len)
  planner = mem.total - mem.kv_cache
  return dict(preset=preset, stage=stage, mesh=mesh, batch=batch, seq_len=st.seq_len, planner=planner,
              xla=xla, xla_depths={d: g["peak"] for d, g in zip(depths, got)},
              planner_depths={d: train_memory(dataclasses.replace(cfg, n_layers=d), mesh, batch,
                                              st.seq_len).total for d in depths},
              seconds=time.time() - t0)


def check_table(presets, stages, depths=(4, 8), mesh: dict | None = None) -> str:
  head = ("| preset | stage | devices (mesh) | batch x seq | planner GiB | XLA GiB | planner/XLA | "
          f"XLA at L={depths[0]},{depths[1]} GiB |")
  rows = [head, "|" + "---|" * 8]
  for p in presets:
    for s in stages:
      try:
        r = compare(p, s, tuple(depths), mesh)
      except Exception as e:  # noqa: BLE001 - report and go on with the other rows
        rows.append(f"| {p} | {s} | | | | compile failed: {str(e).splitlines()[-1][:120]} | | |")
        print(rows[-1], flush=True)
        continue
      m = ",".join(f"{k}={v}" for k, v in r["mesh"].items())
      g = 2**30
      rows.append(f"| {p} | {s} | {math.prod(r['mesh'].values())} ({m}) | {r['batch']} x {r['seq_len']} | "
                  f"{r['planner'] / g:,.1f} | {r['xla'] / g:,.1f} | {r['planner'] / r['xla']:.2f} | "
                  + ", ".join(f"{v / g:,.2f}" for v in r["xla_depths"].values()) + " |")
      print(rows[-1], f"({r['seconds']:.0f}s)", flush=True)
  return "\n".join(rows)

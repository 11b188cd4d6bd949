"""Memory and step-time planner: `python -m granite_jax.plan [--preset=8b] [--stage=pretrain] [--check]`.

For each preset and recipe stage: per-device memory (granite_jax/plan_memory.py),
FLOPs per step, and an estimated step time and MFU from hardware figures
(GB200 defaults). `--check` compiles the real train step with abstract inputs
on fake CPU devices and compares the memory with XLA's `memory_analysis()`
(granite_jax/plan_check.py); docs/planner.md holds that table.

Step time: compute = hardware FLOPs (model FLOPs, plus the forward recomputed
under remat) / peak; communication = FSDP all-gathers (forward, recompute,
backward) and gradient reduce-scatter over NVLink, tensor-parallel
all-reduces over NVLink, the data-parallel gradient all-reduce across racks
over InfiniBand. With the latency-hiding scheduler these overlap, so
step = max(compute, communication). An estimate, not a measurement.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from granite_jax import flops
from granite_jax.model.config import PRESETS, ModelConfig
from granite_jax.plan_memory import Memory, dtype_bytes, train_memory


@dataclasses.dataclass(frozen=True)
class Hardware:
  hbm_gb: float = 186.0        # GB200 HBM3e per GPU
  peak_flops: float = 2.5e15   # dense bf16 per GPU
  nvlink_gbs: float = 1800.0   # GB/s per GPU inside the NVLink domain (NVL72 rack)
  ib_gbps: float = 400.0       # Gb/s InfiniBand per GPU across racks
  gpus_per_domain: int = 72


@dataclasses.dataclass(frozen=True)
class Stage:
  seq_len: int
  seqs_per_rank: int           # sequences per data-parallel rank (data x fsdp) per step
  rollout_seqs: int = 0        # RL: sequences decoded per data-parallel rank, KV cache held


# Tokens per rank per step; the global batch is this x data x fsdp x racks.
STAGES = {
    "pretrain": Stage(4096, 1),
    "lce": Stage(512 * 1024, 1),   # long-context extension: one 512K sequence per rank
    "sft": Stage(16 * 1024, 1),
    "rl": Stage(8192, 1, rollout_seqs=8),
}

# One GB200 NVL72 rack (72 GPUs). 72 = 9 x 8 and every parameter dimension is a
# power of two, so the factor 9 can only be a pure data axis: FSDP/tensor split
# the parameters 8 ways inside two trays, data=9 replicates across the rack (all
# on NVLink); racks add data parallelism over InfiniBand (mesh.dcn_shape).
# LCE splits one 512K sequence 8 ways (context) and 2^19 tokens cannot be split
# 9 ways, so it runs on 64 of the rack's 72 GPUs (8 spares).
MESHES = {
    "pretrain": dict(data=9, fsdp=8, tensor=1),
    "sft": dict(data=9, fsdp=8, tensor=1),
    "rl": dict(data=9, fsdp=8, tensor=1),
    "lce": dict(data=1, fsdp=8, tensor=1, context=8),
}
# Per-preset exceptions to MESHES (none today; e.g. {("30b", "lce"): {...}}).
PRESET_MESHES: dict = {}
CONTEXT_IMPL = "allgather"   # context-parallel attention for the lce stage


def default_mesh(preset: str, stage: str) -> dict:
  return dict(PRESET_MESHES.get((preset, stage), MESHES[stage]))


def model_for(preset: str, stage: str, **overrides) -> ModelConfig:
  # As configs/base.py runs the real sizes: bf16, cuDNN attention, full remat, chunked cross-entropy.
  base = dict(PRESETS[preset], dtype="bfloat16", attention_impl="cudnn", remat_policy="nothing_saveable",
              loss_chunk=1024)
  if stage == "lce":
    base.update(attention_impl=CONTEXT_IMPL, max_seq_len=STAGES[stage].seq_len)
  return ModelConfig(**{**base, **overrides})


@dataclasses.dataclass
class Plan:
  preset: str
  stage: str
  mesh: dict
  racks: int
  memory: Memory
  flops_per_device: float
  step_s: float
  mfu: float
  comm_s: float
  compute_s: float


def plan(preset: str, stage: str, mesh: dict | None = None, racks: int = 16, hw: Hardware = Hardware(),
         **model_overrides) -> Plan:
  st = STAGES[stage]
  mesh = dict(mesh or default_mesh(preset, stage))
  cfg = model_for(preset, stage, **model_overrides)
  dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
  tp, cp, fs = mesh.get("tensor", 1), mesh.get("context", 1), mesh.get("fsdp", 1)
  mem = train_memory(cfg, mesh, st.seqs_per_rank * dp, st.seq_len, kv_cache_seqs=st.rollout_seqs * dp)
  tokens_dev = st.seqs_per_rank * st.seq_len / (tp * cp)
  model_flops = flops.train_flops_per_token(cfg, st.seq_len) * tokens_dev
  recompute = 4 / 3 if cfg.remat_policy != "none" else 1.0  # forward redone in the backward: 8/6
  compute_s = model_flops * recompute / hw.peak_flops
  pb, ab = dtype_bytes(cfg.param_dtype), dtype_bytes(cfg.dtype)
  params = cfg.num_params()
  nvlink = hw.nvlink_gbs * 1e9
  fsdp_bytes = 4 * params / tp * pb * (fs - 1) / fs  # 3 all-gathers + 1 reduce-scatter
  tp_bytes = 4 * cfg.n_layers * st.seqs_per_rank * st.seq_len / cp * cfg.d_model * ab * 2 * (tp - 1) / tp
  cp_bytes = 3 * cfg.n_layers * st.seqs_per_rank * st.seq_len * 2 * cfg.n_kv_heads * cfg.head_dim * ab \
      * (cp - 1) / cp / max(tp, 1)
  shard = params / (fs * tp) * pb  # each GPU all-reduces its gradient shard with its data peers
  dp_in = 2 * shard * (mesh.get("data", 1) - 1) / mesh.get("data", 1)
  dp_ib = 2 * shard * (racks - 1) / racks
  comm_s = (fsdp_bytes + tp_bytes + cp_bytes + dp_in) / nvlink + dp_ib / (hw.ib_gbps / 8 * 1e9)
  step_s = max(compute_s, comm_s)
  return Plan(preset, stage, mesh, racks, mem, model_flops, step_s, model_flops / (step_s * hw.peak_flops),
              comm_s, compute_s)


def gib(x: float) -> str:
  return f"{x / 2**30:,.1f}"


def table(plans: list[Plan], hw: Hardware) -> str:
  head = ("| preset | stage | mesh (per rack) | params+opt | grads | activations | KV cache | total GiB "
          "| fits | TFLOP/step/GPU | step s | MFU |")
  rows = [head, "|" + "---|" * 12]
  for p in plans:
    m = p.memory
    act = m.residuals + m.layer + m.attention + m.logits
    mesh = ",".join(f"{k}={v}" for k, v in p.mesh.items())
    fits = "yes" if m.total <= hw.hbm_gb * 1e9 * 0.95 else "NO"
    rows.append(f"| {p.preset} | {p.stage} | {mesh} | {gib(m.params + m.opt_state)} | {gib(m.grads)} | "
                f"{gib(act)} | {gib(m.kv_cache)} | {gib(m.total)} | {fits} | "
                f"{p.flops_per_device / 1e12:,.0f} | {p.step_s:.2f} | {p.mfu:.0%} |")
  return "\n".join(rows)


def parse_mesh(s: str) -> dict:
  """'data=9,fsdp=8,tensor=1' -> dict."""
  out = {}
  for part in filter(None, s.split(",")):
    k, _, v = part.partition("=")
    if k not in ("data", "fsdp", "tensor", "context") or not v.isdigit():
      raise ValueError(f"--mesh={s!r}: expected axis=size pairs over data,fsdp,tensor,context")
    out[k] = int(v)
  return out


def main(argv: list[str]) -> int:
  ap = argparse.ArgumentParser(description="granite_jax memory / step planner")
  ap.add_argument("--preset", default="all", help="3b, 8b, 30b or all")
  ap.add_argument("--stage", default="all", help=f"{', '.join(STAGES)} or all")
  ap.add_argument("--mesh", default="", help="per-rack mesh, e.g. data=9,fsdp=8,tensor=1 (default per stage)")
  ap.add_argument("--racks", type=int, default=16, help="NVLink domains (data parallel over InfiniBand)")
  for f in dataclasses.fields(Hardware):
    ap.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
  ap.add_argument("--check", action="store_true", help="compare with XLA's memory_analysis (slow)")
  ap.add_argument("--check_layers", default="4,8", help="depths compiled for --check, extrapolated")
  args = ap.parse_args(argv)
  presets = [p for p in PRESETS if p != "tiny"] if args.preset == "all" else [args.preset]
  stages = list(STAGES) if args.stage == "all" else [args.stage]
  for p in presets:
    if p not in PRESETS:
      ap.error(f"--preset={p!r}: choose one of {sorted(PRESETS)} or all")
  for s in stages:
    if s not in STAGES:
      ap.error(f"--stage={s!r}: choose one of {sorted(STAGES)} or all")
  hw = Hardware(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Hardware)})
  mesh = parse_mesh(args.mesh) if args.mesh else None
  plans = [plan(p, s, mesh, args.racks, hw) for p in presets for s in stages]
  print(f"# {args.racks} rack(s) x {hw.gpus_per_domain} GPUs; {hw.hbm_gb:.0f} GB HBM, "
        f"{hw.peak_flops / 1e15:.2f} PFLOP/s, NVLink {hw.nvlink_gbs:.0f} GB/s, "
        f"IB {hw.ib_gbps:.0f} Gb/s per GPU")
  print(table(plans, hw))
  if args.check:
    from granite_jax.plan_compare import check_table
    print()
    print(check_table(presets, stages, [int(x) for x in args.check_layers.split(",")], mesh))
  return 0


if __name__ == "__main__":
  from granite_jax.cli import run_main  # bad input: one line; --debug for the traceback
  sys.exit(run_main("granite_jax.plan", main))

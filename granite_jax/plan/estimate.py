"""Memory and step-time planner: `python -m granite_jax.plan [--preset=8b] [--stage=sft] [--check]`.

Its stages are the recipe's configs (configs/<stage>.py on its configs/gb200.py layout,
granite_jax/plan/stages.py). For each: per-device memory of every jitted program
(granite_jax/plan/memory.py via programs.estimates), FLOPs per step, and an estimated step
time and MFU from hardware figures (GB200 defaults). `--check` runs the dry run
(granite_jax/plan/dry_run.py): XLA compiles every program for the real mesh of fake CPU
devices and its memory_analysis() is printed next to these figures (docs/stages.md).

Step time: compute = hardware FLOPs (model FLOPs, plus the forward recomputed
under remat) / peak; communication = FSDP all-gathers (forward, recompute,
backward) and gradient reduce-scatter over NVLink, tensor-parallel
all-reduces over NVLink, the data-parallel gradient all-reduce across racks
over InfiniBand. With the latency-hiding scheduler these overlap, so
step = max(compute, communication). An RL stage scored by a reward model (RLHF) adds the scoring
of its rollout batch (`score_time`): a forward pass of the reward model over every rollout token
(no LM head), plus one FSDP all-gather of its weights per call, compute and communication again
overlapped. An estimate, not a measurement. For RL stages a second table splits the whole step
(rollout, scoring, log-probs, train; plan/rl_time.py, `Plan.rl`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from granite_jax import flops
from granite_jax.plan import rl_time, stages
from granite_jax.plan.memory import Memory, dtype_bytes


@dataclasses.dataclass(frozen=True)
class Hardware:
  hbm_gb: float = 186.0        # GB200 HBM3e per GPU
  peak_flops: float = 2.5e15   # dense bf16 per GPU
  nvlink_gbs: float = 1800.0   # GB/s per GPU inside the NVLink domain (NVL72 rack)
  ib_gbps: float = 400.0       # Gb/s InfiniBand per GPU across racks
  gpus_per_domain: int = 72
  hbm_tbs: float = 8.0         # TB/s HBM3e bandwidth per GPU (decode reads weights + KV cache)
  efficiency: float = 0.5      # fraction of peak the RL step's compute-bound passes reach (rl_step)
  collective_s: float = 1e-5   # latency of one small NVLink collective (a decode step's all-reduces)


@dataclasses.dataclass
class Plan:
  preset: str
  stage: str
  mesh: dict
  racks: int
  memory: Memory               # the train step
  programs: dict               # every program's Memory (train, rollout, logprobs, score)
  flops_per_device: float
  step_s: float
  mfu: float
  comm_s: float
  compute_s: float
  score_s: float = 0.0         # RLHF: scoring the rollout batch with the reward model (in step_s)
  rl: object = None            # RL stages: the whole step split into phases (plan/rl_time.py RLStep)


def plan_config(c, hw: Hardware = Hardware(), rl_breakdown: bool = True) -> Plan:
  """Memory of every program and the train step's time for a laid-out config (stages.load); for
  an RL stage (with `rl_breakdown`) also the whole step's phases (plan/rl_time.py)."""
  from granite_jax.plan.programs import estimates
  progs = estimates(c)
  mesh = stages.mesh_sizes(c)
  racks = (c.get("gb200") or {}).get("racks", 1)
  cfg = stages.model(c)
  dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
  tp, cp, fs = mesh.get("tensor", 1), mesh.get("context", 1), mesh.get("fsdp", 1)
  seqs = c.train.global_batch / dp  # per data-parallel rank and step
  seq_len = c.train.seq_len
  tokens_dev = seqs * seq_len / (tp * cp)
  model_flops = flops.train_flops_per_token(cfg, seq_len) * tokens_dev
  recompute = 4 / 3 if cfg.remat_policy != "none" else 1.0  # forward redone in the backward: 8/6
  compute_s = model_flops * recompute / hw.peak_flops
  pb, ab = dtype_bytes(cfg.param_dtype), dtype_bytes(cfg.dtype)
  params = cfg.num_params()
  nvlink = hw.nvlink_gbs * 1e9
  fsdp_bytes = 4 * params / tp * pb * (fs - 1) / fs  # 3 all-gathers + 1 reduce-scatter
  tp_bytes = 4 * cfg.n_layers * seqs * seq_len / cp * cfg.d_model * ab * 2 * (tp - 1) / tp
  cp_bytes = 3 * cfg.n_layers * seqs * seq_len * 2 * cfg.n_kv_heads * cfg.head_dim * ab \
      * (cp - 1) / cp / max(tp, 1)
  shard = params / (fs * tp) * pb  # each GPU all-reduces its gradient shard with its data peers
  data_in_rack = mesh.get("data", 1) // racks
  dp_in = 2 * shard * (data_in_rack - 1) / data_in_rack
  dp_ib = 2 * shard * (racks - 1) / racks
  comm_s = (fsdp_bytes + tp_bytes + cp_bytes + dp_in) / nvlink + dp_ib / (hw.ib_gbps / 8 * 1e9)
  score_flops, score_s = score_time(c, hw) if c.get("rl") and "score" in progs else (0.0, 0.0)
  step_s = max(compute_s, comm_s) + score_s
  flops_dev = model_flops + score_flops
  rl = rl_step(c, hw) if c.get("rl") and rl_breakdown else None
  return Plan(c.preset, c.name, mesh, racks, progs["train"], progs, flops_dev, step_s,
              flops_dev / (step_s * hw.peak_flops), comm_s, compute_s, score_s, rl)


def rl_step(c, hw: Hardware = Hardware(), **kw) -> rl_time.RLStep:
  """The RL step of laid-out config `c` in phases (plan/rl_time.py), its train step and reward-model
  scoring timed by this planner at `hw.efficiency` of peak. `kw`: decode_steps, filled_cache."""
  from granite_jax.plan.programs import reward_model_of
  p = plan_config(c, hw, rl_breakdown=False)
  slow = dataclasses.replace(hw, peak_flops=hw.peak_flops * hw.efficiency)
  score_s = score_time(c, slow)[1] if reward_model_of(c) is not None else 0.0
  return rl_time.rl_step(c, hw, train_s=max(p.compute_s / hw.efficiency, p.comm_s), score_s=score_s, **kw)


def rl_step_of(stage: str, preset: str, racks: int | None = None, hw: Hardware = Hardware()) -> dict:
  """`rl_step(stages.load(stage, preset, racks), hw).as_dict()`: seconds per phase (prefill_s,
  decode_s, rollout_s = reshard + prefill + decode, score_s, logprobs_s, train_s, total_s) and the
  decode model's inputs, for docs/stages.md (plan/table.py)."""
  return rl_step(stages.load(stage, preset, racks), hw).as_dict()


def score_time(c, hw: Hardware = Hardware()) -> tuple[float, float]:
  """(FLOPs per device, seconds) of scoring an RL step's rollouts with its reward model
  (rl/rm_scorer.py): every sequence taken at full length (packing leaves no padding but the last
  call's), the forward pass without the LM head, `score_rows` rows a call."""
  from granite_jax.plan.memory import dtype_bytes
  from granite_jax.plan.programs import reward_model_of
  from granite_jax.rl.reward_model import score_rows
  rm_cfg, T = reward_model_of(c)
  mesh = stages.mesh_sizes(c)
  dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
  tp, cp, fs = mesh.get("tensor", 1), mesh.get("context", 1), mesh.get("fsdp", 1)
  tokens = c.train.global_batch * c.train.seq_len
  calls = -(-tokens // (score_rows(c, dp) * T))
  per_token = 2 * (flops.matmul_params(rm_cfg) - rm_cfg.d_model * rm_cfg.vocab_size) \
      + flops.attention_flops_per_token(rm_cfg, min(T, c.train.seq_len)) / 3  # forward only
  flops_dev = per_token * tokens / (dp * tp * cp)
  pb, ab = dtype_bytes(rm_cfg.param_dtype), dtype_bytes(rm_cfg.dtype)
  gather = calls * rm_cfg.num_params() / tp * pb * (fs - 1) / fs
  tp_bytes = 2 * rm_cfg.n_layers * tokens / (dp * cp) * rm_cfg.d_model * ab * 2 * (tp - 1) / tp
  comm = (gather + tp_bytes) / (hw.nvlink_gbs * 1e9)
  return flops_dev, max(flops_dev / hw.peak_flops, comm)


def plan(stage: str, preset: str, racks: int | None = None, hw: Hardware = Hardware()) -> Plan:
  return plan_config(stages.load(stage, preset, racks), hw)


def gib(x: float) -> str:
  return f"{x / 2**30:,.1f}"


def fits(total: float, hw: Hardware) -> bool:
  from granite_jax.plan.dry_run import FIT_FRACTION
  return total <= hw.hbm_gb * 1e9 * FIT_FRACTION


def table(plans: list[Plan], hw: Hardware) -> str:
  head = ("| preset | stage | GPUs (mesh) | params+opt | grads | activations | train GiB "
          "| other programs GiB | fits | TFLOP/step/GPU | step s | MFU |")
  rows = [head, "|" + "---|" * 12]
  for p in plans:
    m = p.memory
    act = m.residuals + m.layer + m.attention + m.logits + m.kv_cache
    mesh = ",".join(f"{k}={v}" for k, v in p.mesh.items())
    gpus = math.prod(p.mesh.values())
    others = ", ".join(f"{k} {gib(v.total)}" for k, v in p.programs.items() if k != "train") or "-"
    ok = "yes" if all(fits(v.total, hw) for v in p.programs.values()) else "NO"
    rows.append(f"| {p.preset} | {p.stage} | {gpus} ({mesh}) | {gib(m.params + m.opt_state)} | "
                f"{gib(m.grads)} | "
                f"{gib(act)} | {gib(m.total)} | {others} | {ok} | "
                f"{p.flops_per_device / 1e12:,.0f} | {p.step_s:.2f} | {p.mfu:.0%} |")
  return "\n".join(rows)


def rl_table(plans: list[Plan], hw: Hardware) -> str:
  """The RL stages' step split into phases (plan/rl_time.py; its docstring states the model)."""
  head = ("| preset | stage | rollout layout | prefill s | decode s (steps x ms; GB read/step/GPU) "
          "| rollout s | scoring s | log-probs s (passes) | train s | RL step s | rollout share |")
  rows = [head, "|" + "---|" * 11]
  for p in plans:
    r = p.rl
    if r is None:
      continue
    read = (r.weight_read + r.cache_read) / 1e9
    rows.append(f"| {p.preset} | {p.stage} | {r.ways} ways x {round(r.rows_per_rank)} rows/rank | "
                f"{r.prefill_s:.2f} | {r.decode_s:.1f} ({r.decode_steps} x {r.decode_step_s * 1e3:.2f}; "
                f"{r.weight_read / 1e9:.1f} + {r.cache_read / 1e9:.1f} = {read:.1f}) | {r.rollout_s:.1f} | "
                f"{r.score_s:.2f} | {r.logprobs_s:.2f} ({r.logprob_passes}) | {r.train_s:.2f} | "
                f"{r.total_s:.1f} | {r.rollout_s / r.total_s:.0%} |")
  if len(rows) == 2:
    return ""
  return (f"# RL step on paper: decode reads weights + KV cache at {hw.hbm_tbs:g} TB/s HBM per step "
          f"(steps: the full response length; cache: the filled one where the engine runs, in the rollout "
          f"layout; each prompt prefilled once there), compute at {hw.efficiency:.0%} of peak, "
          f"{hw.collective_s * 1e6:g} us per decode collective (plan/rl_time.py)\n" + "\n".join(rows))


def main(argv: list[str]) -> int:
  ap = argparse.ArgumentParser(prog="python -m granite_jax.plan",
                               description="granite_jax memory / step planner over the recipe's configs")
  ap.add_argument("--preset", default="all", help="3b, 8b, 30b or all")
  ap.add_argument("--stage", default="all", help=f"a configs/ stage ({', '.join(stages.STAGES)}) or all")
  ap.add_argument("--racks", type=int, default=0, help="GB200 NVL72 racks (0: the stage's default layout)")
  for f in dataclasses.fields(Hardware):
    ap.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
  ap.add_argument("--check", action="store_true",
                  help="also compile every program on fake CPU devices (the dry run; slow)")
  args = ap.parse_args(argv)
  presets = list(stages.PRESETS) if args.preset == "all" else [args.preset]
  names = list(stages.STAGES) if args.stage == "all" else [args.stage]
  for p in presets:
    if p not in stages.PRESETS:
      raise ValueError(f"--preset={p!r}: choose one of {list(stages.PRESETS)} or all")
  for s in names:
    if s not in stages.STAGES:
      raise ValueError(f"--stage={s!r}: choose one of {list(stages.STAGES)} or all")
  hw = Hardware(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Hardware)})
  plans, skipped = [], []
  for p in presets:
    for s in names:
      try:
        plans.append(plan(s, p, args.racks or None, hw))
      except ValueError as e:  # not in the recipe at this size (lce_512k:3b), or a refused layout
        skipped.append(f"{s}:{p}: {e}")
  print(f"# GB200 NVL72 layouts (configs/gb200.py); {hw.hbm_gb:.0f} GB HBM, "
        f"{hw.peak_flops / 1e15:.2f} PFLOP/s, NVLink {hw.nvlink_gbs:.0f} GB/s, "
        f"IB {hw.ib_gbps:.0f} Gb/s per GPU")
  print(table(plans, hw))
  rl = rl_table(plans, hw)
  if rl:
    print(rl)
  for line in skipped:
    print(f"# skipped {line}")
  if args.check:
    import subprocess
    specs = [f"{p.stage}:{p.preset}:{p.racks}" for p in plans]
    return subprocess.call([sys.executable, "-m", "granite_jax.plan.dry_run", *specs], cwd=stages.ROOT)
  return 0

"""Named XLA/GPU settings profiles, applied to the environment before JAX starts a backend.

XLA reads XLA_FLAGS and XLA_PYTHON_CLIENT_* once, when the first backend is
created, so `apply` must run before any jax.devices()/jit call. Flags already
in XLA_FLAGS win over the profile (a user's explicit flag is never overridden).
"""
from __future__ import annotations

import os
from typing import MutableMapping

from ml_collections import ConfigDict

# Why each GB200 flag:
#  - latency-hiding scheduler: overlaps FSDP all-gathers / reduce-scatters with the
#    matmuls of neighbouring layers (the main win for FSDP inside an NVLink domain);
#  - combine thresholds: fewer, larger collectives (one per layer rather than per
#    tensor) so NVLink/IB run near bandwidth rather than latency bound;
#  - pipelined collectives: overlap the per-layer all-gather/reduce-scatter of the
#    scanned stack with the previous/next iteration of the scan;
#  - triton GEMM off: cuBLAS(Lt) is the tuned path for bf16 matmuls on Blackwell;
#  - cuDNN fused attention comes from model.attention_impl=cudnn (the configs' default).
_GB200_FLAGS = {
    "--xla_gpu_enable_latency_hiding_scheduler": "true",
    "--xla_gpu_enable_triton_gemm": "false",
    "--xla_gpu_all_gather_combine_threshold_bytes": str(1 << 30),
    "--xla_gpu_reduce_scatter_combine_threshold_bytes": str(1 << 30),
    "--xla_gpu_all_reduce_combine_threshold_bytes": str(1 << 30),
    "--xla_gpu_enable_pipelined_all_gather": "true",
    "--xla_gpu_enable_pipelined_reduce_scatter": "true",
    "--xla_gpu_enable_pipelined_all_reduce": "true",
    "--xla_gpu_enable_while_loop_double_buffering": "true",
}

PROFILES: dict[str, dict] = {
    "none": dict(flags={}, env={}),
    "gb200": dict(flags=_GB200_FLAGS, env={
        # 186 GB HBM per GPU: leave ~5% to NCCL buffers and cuDNN workspaces outside the JAX pool.
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95",
        # NCCL on GB200: NVLink (NVLS/MNNVL) inside the rack, IB between racks.
        "NCCL_NVLS_ENABLE": "1",
        "NCCL_CUMEM_ENABLE": "1",
    }),
    "h100": dict(flags=_GB200_FLAGS, env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.92"}),
}


def default_config() -> ConfigDict:
  c = ConfigDict()
  c.profile = "none"   # one of PROFILES; real GPU runs use "gb200"
  c.extra_flags = ""   # appended to XLA_FLAGS after the profile, e.g. "--xla_dump_to=/tmp/hlo"
  return c


def _flag_names(xla_flags: str) -> set[str]:
  return {f.split("=", 1)[0] for f in xla_flags.split()}


def apply(c: ConfigDict, env: MutableMapping[str, str] = os.environ) -> list[str]:
  """Sets XLA_FLAGS / environment from the profile; returns the settings applied (for the banner)."""
  if c.profile not in PROFILES:
    raise ValueError(f"xla.profile={c.profile!r} must be one of {sorted(PROFILES)}")
  prof = PROFILES[c.profile]
  current = env.get("XLA_FLAGS", "")
  have = _flag_names(current)
  added = [f"{k}={v}" for k, v in prof["flags"].items() if k not in have]
  added += [f for f in c.extra_flags.split() if f.split("=", 1)[0] not in have]
  if added:
    env["XLA_FLAGS"] = " ".join([current, *added]).strip()
  applied = list(added)
  for k, v in prof["env"].items():
    if k not in env:
      env[k] = v
      applied.append(f"{k}={v}")
  return applied


def describe(c: ConfigDict, applied: list[str]) -> str:
  if not applied:
    return f"xla profile {c.profile}"
  return f"xla profile {c.profile}: " + " ".join(applied)

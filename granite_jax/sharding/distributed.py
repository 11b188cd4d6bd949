"""Multi-controller start-up: one `jax.distributed.initialize` call from config or environment.

JAX's own runtime does the work (coordination service, XLA collectives over
NCCL on GPU, gloo on CPU); this file only decides the arguments:
  - SLURM: process id/count and the coordinator (first node of the job) come
    from SLURM_* variables. One process per GPU by default (`srun
    --ntasks-per-node=4`), or one per 4-GPU tray (`distributed.per_process="tray"`).
  - Any other launcher (Kubernetes, `launch/local.py`): explicit
    `coordinator_address`/`num_processes`/`process_id`, from config or from
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
  - `slice_index` is the NVLink domain (the rack), so that
    `jax.devices()[i].slice_index` groups a rack and the hybrid mesh keeps
    FSDP/tensor traffic inside it. Given directly (GRANITE_SLICE_INDEX or
    `distributed.slice_index`) or derived from the node index when the
    scheduler places `nodes_per_slice` consecutive nodes in one rack (SLURM
    `--segment`).
Must run before anything touches a JAX backend.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

from ml_collections import ConfigDict

MODES = ("auto", "off", "on")
PER_PROCESS = ("gpu", "tray")
GPUS_PER_TRAY = 4  # GB200 NVL72: 18 compute trays x 4 GPUs share one NVLink domain


def default_config() -> ConfigDict:
  c = ConfigDict()
  c.mode = "auto"               # auto: initialize when the environment describes >1 process
  c.coordinator_address = ""    # host:port of process 0; "" = from SLURM or JAX_COORDINATOR_ADDRESS
  c.num_processes = 0           # 0 = from the environment
  c.process_id = -1             # -1 = from the environment
  c.per_process = "gpu"         # "gpu" (one process per GPU) or "tray" (one per 4-GPU node)
  c.slice_index = -1            # NVLink domain of this process; -1 = GRANITE_SLICE_INDEX or nodes_per_slice
  c.nodes_per_slice = 0         # consecutive nodes per NVLink domain (18 trays per NVL72 rack); 0 = unknown
  c.port = 8476                 # coordinator port when derived from SLURM
  c.initialization_timeout = 300
  return c


@dataclasses.dataclass(frozen=True)
class Plan:
  """The arguments of jax.distributed.initialize (None = leave to JAX)."""
  coordinator_address: str
  num_processes: int
  process_id: int
  local_device_ids: tuple[int, ...] | None = None
  slice_index: int | None = None
  source: str = "config"

  def describe(self) -> str:
    s = (f"process {self.process_id}/{self.num_processes}, coordinator {self.coordinator_address} "
         f"({self.source})")
    if self.local_device_ids is not None:
      s += f", local GPUs {list(self.local_device_ids)}"
    if self.slice_index is not None:
      s += f", NVLink domain {self.slice_index}"
    return s


def first_host(nodelist: str) -> str:
  """First hostname of a SLURM nodelist: 'gb[012-015,020],x1' -> 'gb012'."""
  m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
  if not m:
    raise ValueError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read the first host")
  prefix, _, ranges = m.groups()
  if not ranges:
    return prefix
  return prefix + ranges.split(",")[0].split("-")[0]


def _int(env: Mapping[str, str], name: str) -> int | None:
  v = env.get(name, "")
  if v == "":
    return None
  try:
    return int(v)
  except ValueError:
    raise ValueError(f"environment {name}={v!r} must be an integer") from None


def _slice_index(c: ConfigDict, env: Mapping[str, str], node_id: int | None) -> int | None:
  if c.slice_index >= 0:
    return int(c.slice_index)
  if _int(env, "GRANITE_SLICE_INDEX") is not None:
    return _int(env, "GRANITE_SLICE_INDEX")
  if c.nodes_per_slice > 0 and node_id is not None:
    return node_id // int(c.nodes_per_slice)
  return None


def plan(c: ConfigDict, env: Mapping[str, str] = os.environ) -> Plan | None:
  """What to initialize with, or None for a single-process run."""
  if c.mode not in MODES:
    raise ValueError(f"distributed.mode={c.mode!r} must be one of {MODES}")
  if c.per_process not in PER_PROCESS:
    raise ValueError(f"distributed.per_process={c.per_process!r} must be one of {PER_PROCESS}")
  if c.mode == "off":
    return None
  explicit = c.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS", "")
  if explicit:
    n = c.num_processes or _int(env, "JAX_NUM_PROCESSES")
    pid = c.process_id if c.process_id >= 0 else _int(env, "JAX_PROCESS_ID")
    if n is None or pid is None:
      raise ValueError(f"distributed.coordinator_address={explicit!r} needs distributed.num_processes and "
                       "distributed.process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
    if not 0 <= pid < n:
      raise ValueError(f"distributed.process_id={pid} must be in [0, num_processes={n})")
    node = _int(env, "GRANITE_NODE_INDEX")
    return Plan(explicit, int(n), int(pid), None, _slice_index(c, env, node), "explicit")
  ntasks = _int(env, "SLURM_NTASKS") or _int(env, "SLURM_NPROCS")
  if ntasks is not None and _int(env, "SLURM_PROCID") is not None and "SLURM_JOB_NODELIST" in env:
    if ntasks == 1 and c.mode == "auto":
      return None
    host = first_host(env["SLURM_JOB_NODELIST"])
    local_id = _int(env, "SLURM_LOCALID") or 0
    # One process per GPU sees only its own GPU; one per tray sees all four.
    local = (local_id,) if c.per_process == "gpu" else tuple(range(GPUS_PER_TRAY))
    return Plan(f"{host}:{c.port}", ntasks, _int(env, "SLURM_PROCID"), local,
                _slice_index(c, env, _int(env, "SLURM_NODEID")), "slurm")
  if c.mode == "on":
    raise ValueError("distributed.mode='on' but neither distributed.coordinator_address, "
                     "JAX_COORDINATOR_ADDRESS nor a SLURM job step describes the processes")
  return None


def initialize(c: ConfigDict, env: Mapping[str, str] = os.environ) -> Plan | None:
  """Calls jax.distributed.initialize once (a no-op for single-process runs)."""
  p = plan(c, env)
  if p is None:
    return None
  import jax

  if jax.distributed.is_initialized():
    return p
  jax.distributed.initialize(coordinator_address=p.coordinator_address, num_processes=p.num_processes,
                             process_id=p.process_id, local_device_ids=p.local_device_ids,
                             slice_index=p.slice_index,
                             initialization_timeout=int(c.initialization_timeout))
  return p

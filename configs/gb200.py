"""GB200 NVL72 layouts: `--config=configs/gb200.py:PHASE,PRESET,RACKS[,long]` (e.g. `phase2,8b,16`).

Wraps a recipe stage config (configs/<PHASE>.py) with the multi-host mesh,
jax.distributed and XLA settings for RACKS racks of 72 GPUs (18 trays x 4).
launch/slurm_gb200.sbatch uses it; `python -m granite_jax.plan` gives the
memory and step time of each layout (docs/planner.md).

Why these meshes:
- Inside a rack all 72 GPUs share one NVLink domain (1.8 TB/s each); racks talk
  over InfiniBand (400 Gb/s per GPU, ~36x less). So everything that moves
  parameters or activations every layer (FSDP all-gathers/reduce-scatters,
  tensor and context parallel) stays in the rack (`ici` part), and only the
  data-parallel gradient all-reduce, once per step, crosses racks
  (`mesh.dcn_shape = (racks, 1, 1)`).
- 72 = 9 x 8, and every parameter dimension of the presets is a power of two,
  so parameters can be split at most 8 ways inside a rack: FSDP=8 (two trays);
  the factor 9 is a data axis inside the rack (still NVLink). Tensor
  parallelism is not needed at these sizes: the planner puts 30B at ~92 GiB
  per GPU with FSDP=8 for pretraining (186 GB HBM); `tensor=2/4` (within a
  4-GPU tray) would trade activation memory for per-layer all-reduces.
- The global batch must divide by data x fsdp = 72 x racks, so the recipe's
  1024 sequences become the next multiple (1152 on 16 racks, +12.5% tokens per
  step; set train.global_batch to change it).
- Long-context extension (512K) splits each sequence 8 ways (context) and the
  parameters 8 ways (FSDP): 2^19 tokens cannot be split 9 ways, so it runs on
  16 of the 18 trays per rack (64 GPUs; `LCE_ICI`, sbatch --segment=16).
"""
import importlib
import math

from configs import base

GPUS_PER_RACK = 72
NODES_PER_RACK = 18  # trays of 4 GPUs
ICI = {"3b": (9, 8, 1), "8b": (9, 8, 1), "30b": (9, 8, 1)}  # (data, fsdp, tensor) inside one rack
# Long context, 64 GPUs per rack. XLA's estimate at 512K (docs/long_context.md): 8B 96 GiB per GPU;
# 30B 198 GiB, over the 186 GB HBM (needs more context shards or offloading; not done).
LCE_ICI = {"3b": (1, 8, 1, 8), "8b": (1, 8, 1, 8), "30b": (1, 8, 1, 8)}  # (data, fsdp, tensor, context)


def apply(c, racks: int, long_context: bool = False):
  """Sets c.mesh / c.distributed / c.xla (and the batch) for `racks` GB200 NVL72 racks."""
  if racks < 1:
    raise ValueError(f"racks={racks} must be >= 1")
  if long_context:
    axes, ici = ("data", "fsdp", "tensor", "context"), LCE_ICI[c.preset]
  else:
    axes, ici = ("data", "fsdp", "tensor"), ICI[c.preset]
  c.mesh.axes = axes
  c.mesh.shape = (ici[0] * racks, *ici[1:])
  c.mesh.dcn_shape = (racks,) + (1,) * (len(ici) - 1)
  c.distributed.per_process = "gpu"
  c.distributed.nodes_per_slice = math.prod(ici) // 4  # trays per rack actually used
  c.xla.profile = "gb200"
  if long_context:
    c.model.attention_impl = "allgather"
  dp = ici[0] * ici[1] * racks
  c.train.global_batch = -(-c.train.global_batch // dp) * dp  # round up to a multiple of data x fsdp
  return c


def get_config(arg: str | None = None):
  parts = (arg or "phase2,8b,1").split(",")
  if len(parts) not in (3, 4) or parts[3:] not in ([], ["long"]):
    raise ValueError(f"configs/gb200.py:{arg}: expected PHASE,PRESET,RACKS[,long]")
  phase, preset, racks = parts[:3]
  if preset not in ICI:
    raise ValueError(f"configs/gb200.py: preset {preset!r} is not one of {sorted(ICI)}")
  c = importlib.import_module(f"configs.{phase}").get_config(preset)
  if base.is_tiny(c.preset):
    raise ValueError("configs/gb200.py is for the real sizes")
  return apply(c, int(racks), long_context=parts[3:] == ["long"])

"""The one table of logical-axis rules.

Modules name axes logically; this table maps them to mesh axes. Changing the
parallelism is a change of mesh shape in the config, never of the model.
Mesh axes: data (pure data parallel, crosses hosts/racks), fsdp (parameters
sharded, gathered per layer), tensor (Megatron-style heads/mlp split),
context (sequence split for long context).
"""
from __future__ import annotations

from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor", "context")

RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", "context"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def rules_for(mesh: Mesh) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """RULES restricted to the axes this mesh has (size-1 axes are harmless)."""
  names = set(mesh.axis_names)
  out = []
  for logical, physical in RULES:
    if isinstance(physical, tuple):
      kept = tuple(p for p in physical if p in names)
      physical = kept if kept else None
    elif physical is not None and physical not in names:
      physical = None
    out.append((logical, physical))
  return tuple(out)

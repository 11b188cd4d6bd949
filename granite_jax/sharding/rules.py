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
    # The residual stream between (and inside) the layers, i.e. the scanned layer carry and the
    # layer inputs remat saves: its length is split over tensor too (Megatron-style sequence
    # parallelism). The layers' norms and residual adds run on 1/tensor of the positions; XLA
    # all-gathers over tensor entering attention / MLP and reduce-scatters their outputs. Context
    # first: a context shard's positions are split further, so the two layouts meet without moving
    # data across context ranks.
    ("act_res_length", ("context", "tensor")),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def rules_for(mesh: Mesh) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """RULES restricted to the axes this mesh has (size-1 axes are harmless).

  Without tensor parallelism (no `tensor` axis, or one of size 1) `act_res_length` is exactly
  `act_length`: the model's program is then the same as without sequence parallelism."""
  names = set(mesh.axis_names)
  # plan/memory.py passes the axis names only: a tensor axis of unknown size counts as split.
  sizes = dict(getattr(mesh, "shape", None) or {})
  tensor_split = "tensor" in names and sizes.get("tensor", 2) > 1
  out = []
  for logical, physical in RULES:
    if logical == "act_res_length" and not tensor_split:
      physical = dict(RULES)["act_length"]
    if isinstance(physical, tuple):
      kept = tuple(p for p in physical if p in names)
      physical = kept if kept else None
    elif physical is not None and physical not in names:
      physical = None
    out.append((logical, physical))
  return tuple(out)


# The RL rollout's layout (infer/sampler.py make_sampler(rollout_axes=...)): the devices of
# `tensor_axes` (e.g. fsdp and tensor: the 8 GPUs of two trays) split every layer Megatron-style
# (heads, KV heads, MLP and vocabulary), nothing is split along `embed`, and the batch goes over
# the remaining batch axes (data). A decode loop then reads each GPU's 1/ways of the weights and of
# the KV cache (sharded by KV heads) at every step, where the training layout's FSDP all-gathers,
# hoisted out of the loop by XLA, hold the whole model on every GPU.
TENSOR_PARAM_AXES = ("vocab", "heads", "kv_heads", "mlp")
TENSOR_ACT_AXES = ("act_heads", "act_kv_heads", "act_mlp", "act_vocab")


def rollout_rules(mesh: Mesh, tensor_axes) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """RULES for the rollout layout on `mesh`: `tensor_axes` (mesh axes, in order) as tensor-parallel
  ways, the batch over the other batch axes. Axes the mesh lacks are dropped."""
  names = set(mesh.axis_names)
  tp = tuple(a for a in tensor_axes if a in names)
  unknown = [a for a in tensor_axes if a not in MESH_AXES]
  if unknown:
    raise ValueError(f"rollout tensor axes {tuple(tensor_axes)}: unknown axis name(s) {unknown}; "
                     f"allowed {MESH_AXES}")
  batch = tuple(a for a in dict(RULES)["act_batch"] if a in names and a not in tp)
  over = {**{k: tp or None for k in TENSOR_PARAM_AXES + TENSOR_ACT_AXES}, "embed": None,
          "act_batch": batch or None}
  # No sequence parallelism in the rollout: the residual stream's length goes as act_length.
  over["act_res_length"] = dict(rules_for(mesh))["act_length"]
  return tuple((logical, over.get(logical, physical)) for logical, physical in rules_for(mesh))


def tensor_ways(mesh_sizes, tensor_axes) -> int:
  """Devices one rollout layer is split over: the product of `tensor_axes`' sizes ({axis: size})."""
  n = 1
  for a in tensor_axes:
    n *= int(mesh_sizes.get(a, 1))
  return n

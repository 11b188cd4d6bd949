"""The rollout layout's shardings, shared by both samplers (infer/sampler.py's program and
infer/engine.py): the batch arguments' and the parameters' (sharding/rules.py `rollout_rules`),
and where the engine's arrays live on a mesh (`Layout`, `pin`)."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from granite_jax.model import Granite, ModelConfig
from granite_jax.sharding.rules import rollout_rules, rules_for, tensor_ways


def sampler_shardings(mesh: Mesh, rollout_axes: Sequence[str] = ()):
  """(prompt rows [B, P], per-row [B], replicated) shardings of the sampler's batch arguments and
  outputs on `mesh`: over the training batch axes, or with `rollout_axes` over the batch axes the
  rollout layout leaves (sharding/rules.py `rollout_rules`)."""
  rules = rollout_rules(mesh, tuple(rollout_axes)) if rollout_axes else rules_for(mesh)
  batch_axes = dict(rules)["act_batch"]
  return (NamedSharding(mesh, P(batch_axes, None)), NamedSharding(mesh, P(batch_axes)),
          NamedSharding(mesh, P()))


def rollout_param_shardings(cfg: ModelConfig, mesh: Mesh, rollout_axes: Sequence[str]):
  """The parameters' shardings in the rollout layout (`rollout_axes` as tensor-parallel ways).
  ValueError when the ways do not divide the KV heads (each device keeps whole KV heads and
  their query groups)."""
  ways = tensor_ways(dict(mesh.shape), rollout_axes)
  for name, n in (("n_kv_heads", cfg.n_kv_heads), ("n_heads", cfg.n_heads), ("d_ff", cfg.d_ff)):
    if n % ways:
      raise ValueError(f"rollout_axes={tuple(rollout_axes)}: {ways} tensor-parallel ways do not divide "
                       f"{name}={n}; use fewer axes (configs/gb200.py ROLLOUT_AXES)")
  shape_cfg = dataclasses.replace(cfg, attention_impl="xla")  # parameters do not depend on the kernel
  boxed = jax.eval_shape(lambda: Granite(shape_cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  specs = nn.get_partition_spec(boxed)["params"]
  return nn.logical_to_mesh_sharding(specs, mesh, rollout_rules(mesh, tuple(rollout_axes)))


class Layout(NamedTuple):
  """Where the engine's arrays live on a mesh (hashable: a static argument of the jitted pieces)."""
  mesh: Mesh
  rules: tuple  # rollout_rules(mesh, rollout_axes): the model's logical constraints resolve by it
  batch: tuple  # mesh axes of the rows (D ways)
  tp: tuple  # mesh axes of the heads / KV heads (the rollout axes the mesh has)
  D: int

  def spec(self, a, kv: bool = False):
    """[rows, (kv heads,) ...]: rows over the batch axes, kv heads over the tensor axes."""
    if a.ndim == 0:
      return NamedSharding(self.mesh, P())
    return NamedSharding(self.mesh, P(self.batch or None, *((self.tp or None,) if kv else ())))


def pin(lay: Layout | None, tree, kv: bool = False):
  """`tree`'s arrays constrained to `lay.spec` (no-op without a layout: one device)."""
  if lay is None:
    return tree
  return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, lay.spec(a, kv)), tree)


def pin_prompt(lay, prompt):
  """A prompt KV dict (infer/decode.py `prefill`) pinned: KV by KV heads, the rest by rows."""
  return dict(k=pin(lay, prompt["k"], True), v=pin(lay, prompt["v"], True),
              valid_BP=pin(lay, prompt["valid_BP"]), lengths_B=pin(lay, prompt["lengths_B"]))


def axis_rules(lay: Layout | None):
  """The logical axis rules the model's constraints resolve by inside the engine's programs."""
  return nn.logical_axis_rules(lay.rules) if lay is not None else contextlib.nullcontext()

"""The rollout layout's shardings, shared by both samplers (infer/sampler.py's program and
infer/engine.py): the batch arguments' and the parameters' (sharding/rules.py `rollout_rules`)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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

"""TrainState and its shardings, derived from the model's logical axis names."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from granite_jax.model import Granite, ModelConfig
from granite_jax.model.params import init_params
from granite_jax.sharding.rules import rules_for


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _abstract_boxed_params(model: Granite, seq_len: int):
  tokens = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens)["params"])


def param_shardings(cfg: ModelConfig, mesh: Mesh, seq_len: int = 8):
  boxed = _abstract_boxed_params(Granite(cfg), seq_len)
  specs = nn.get_partition_spec(boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules_for(mesh))


def state_shardings(cfg: ModelConfig, mesh: Mesh, tx: optax.GradientTransformation):
  """Shardings for TrainState: optimizer moments follow their parameters."""
  p_shard = param_shardings(cfg, mesh)
  abstract_params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype),
                                 nn.unbox(_abstract_boxed_params(Granite(cfg), 8)))
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  replicated = NamedSharding(mesh, P())
  opt_shard = optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt, p_shard,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=p_shard, opt_state=opt_shard)


def make_init_fn(cfg: ModelConfig, tx: optax.GradientTransformation,
                 shardings: TrainState) -> Callable[[jax.Array], TrainState]:
  """Jitted init that creates every array directly in its sharding (nothing on one device first)."""
  def init(rng):
    params = init_params(cfg, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return jax.jit(init, out_shardings=shardings)


def state_from_params(params, tx: optax.GradientTransformation, shardings: TrainState) -> TrainState:
  """Fresh optimizer state around given parameters (init_from another stage)."""
  def build(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p))
  return jax.jit(build, in_shardings=(shardings.params,), out_shardings=shardings)(params)

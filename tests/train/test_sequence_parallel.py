"""Sequence parallelism (sharding/rules.py `act_res_length`): with tensor > 1 the residual stream
between the layers is split along the length over tensor too. The train step's loss and gradient
norm equal the 1-device step's; with tensor = 1 the program is the one without it."""
import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from granite_jax.model.decoder import _ACT_BTD, _RES_BTD
from granite_jax.sharding.jit import mesh_context
from granite_jax.sharding.mesh import make_mesh
from granite_jax.sharding.rules import MESH_AXES, rollout_rules, rules_for
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib
from tests.train.test_context_parallel_step import run_steps
from tests.train.test_train_step import CFG, SCHED, TX


@pytest.fixture(scope="module")
def one_device_xla():
  return run_steps(CFG, make_mesh((1, 1, 1), devices=jax.devices()[:1]))


@pytest.mark.parametrize("impl,shape", [("xla", (2, 2, 2)), ("ring", (1, 2, 2, 2)),
                                        ("allgather", (2, 1, 2, 2))])
def test_sequence_parallel_step_matches_one_device(one_device_xla, impl, shape):
  cfg = dataclasses.replace(CFG, attention_impl=impl, attention_block=4)
  losses, norms = run_steps(cfg, make_mesh(shape, MESH_AXES[:len(shape)]))
  np.testing.assert_allclose(losses, one_device_xla[0], rtol=1e-5)
  np.testing.assert_allclose(norms, one_device_xla[1], rtol=1e-4)


def _mesh_axes(mesh, axes):
  with nn.logical_axis_rules(rules_for(mesh)):
    return nn.logical_to_mesh_axes(axes)


def test_residual_length_split_over_tensor_only_when_tensor_splits():
  split = make_mesh((1, 2, 2, 2), MESH_AXES)
  assert tuple(_mesh_axes(split, _RES_BTD)) == (("data", "fsdp"), ("context", "tensor"), None)
  assert tuple(_mesh_axes(make_mesh((2, 2, 2), MESH_AXES[:3]), _RES_BTD))[1] in ("tensor", ("tensor",))
  for shape in ((1, 4, 1, 2), (8, 1, 1)):  # tensor = 1: exactly act_length
    mesh = make_mesh(shape, MESH_AXES[:len(shape)])
    assert _mesh_axes(mesh, _RES_BTD) == _mesh_axes(mesh, _ACT_BTD)
  # The rollout layout keeps the length unsplit over its tensor-parallel axes.
  rules = dict(rollout_rules(split, ("fsdp", "tensor")))
  assert rules["act_res_length"] == rules["act_length"]


def _lowered_text(mesh):
  cfg = dataclasses.replace(CFG, attention_impl="ring", attention_block=4)
  sh = state_lib.state_shardings(cfg, mesh, TX)
  state = jax.eval_shape(state_lib.make_init_fn(cfg, TX, sh), jax.random.PRNGKey(0))
  batch = {k: jax.ShapeDtypeStruct((8, 32), np.int32) for k in ("tokens", "segment_ids", "positions")}
  with mesh_context(mesh):
    return step_lib.jit_train_step(cfg, mesh, TX, SCHED, sh).jitted.lower(state, batch).as_text()


def test_lowered_step_splits_the_residual_over_tensor():
  """tensor = 2: the residual stream's constraints name (context, tensor); tensor = 1: nothing
  names tensor for the length (the same constraints as act_length's)."""
  assert '{"context", "tensor"}' in _lowered_text(make_mesh((1, 2, 2, 2), MESH_AXES))
  assert '{"context", "tensor"}' not in _lowered_text(make_mesh((2, 2, 1, 2), MESH_AXES))

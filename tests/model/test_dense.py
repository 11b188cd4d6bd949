"""model/layers.dense: a flattened [B*T] matmul unless the length is split over context with more
than one row per device (or tensor > 1); both give the einsum's result."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.model.layers import dense, flatten_rows
from granite_jax.sharding.jit import mesh_context
from granite_jax.sharding.mesh import make_mesh
from granite_jax.sharding.rules import MESH_AXES, rules_for


@pytest.mark.parametrize("shape,B,flat", [
    ((8, 1, 1), 8, True),          # no context split
    ((2, 2, 1, 2), 8, False),      # 2 rows per device, length split: keep [B, T]
    ((2, 2, 1, 2), 4, True),       # one row per device: the flattening is a bitcast
    ((1, 2, 2, 2), 2, False),      # one row per device, but sequence parallel (tensor = 2)
])
def test_flatten_rows_and_dense_match_einsum(shape, B, flat):
  mesh = make_mesh(shape, MESH_AXES[:len(shape)])
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, 16, 4, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 8, 6)), jnp.float32)

  def f(x, w):
    with nn.logical_axis_rules(rules_for(mesh)):
      return flatten_rows(x.shape[0]), dense(x, w, n_in=2)

  with mesh_context(mesh):
    got_flat, y = f(x, w)
    y_jit = jax.jit(lambda x, w: f(x, w)[1])(x, w)
  assert got_flat == flat
  want = jnp.einsum("btnh,nhd->btd", x, w)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y_jit, want, rtol=1e-5, atol=1e-5)
  assert flatten_rows(B)  # no rules or mesh in context: flattened

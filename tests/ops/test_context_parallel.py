"""Ring and all-gather attention on 8 fake devices (tensor=2 x context=4) vs the references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from granite_jax.ops import context_parallel as cp
from granite_jax.ops.attention import attention
from granite_jax.sharding.mesh import make_mesh
from granite_jax.sharding.rules import MESH_AXES
from tests.ops.test_blockwise import B, SCALE, T, packed_batch, reference

CONTEXT = 4


@pytest.fixture(scope="module")
def mesh():
  return make_mesh((1, 1, 2, CONTEXT), MESH_AXES)


def _unpacked(seed):
  q, k, v, _, _ = packed_batch(seed)
  return q, k, v, np.ones((B, T), np.int32), np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))


@pytest.fixture(scope="module")
def grad_fns(mesh):
  """One compiled value-and-grad per impl, shared by the tests (cheap on 2 CPU cores)."""
  def make(impl):
    def f(q, k, v, seg, pos):
      o = attention(q, k, v, scale=SCALE, segment_ids_BT=seg, positions_BT=pos, impl=impl, block=4)
      return jnp.sum(jnp.sin(o)), o
    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))
    def call(*args):
      with jax.set_mesh(mesh):
        return vg(*args)
    return call
  return {impl: make(impl) for impl in ("ring", "allgather", "xla")}


def _shard(mesh, q, k, v, seg, pos):
  heads, seq = NamedSharding(mesh, P(None, "context", "tensor")), NamedSharding(mesh, P(None, "context"))
  return (jax.device_put(q, heads), jax.device_put(k, heads), jax.device_put(v, heads),
          jax.device_put(seg, seq), jax.device_put(pos, seq))


@pytest.mark.parametrize("impl", ["ring", "allgather"])
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("balanced", [True, False])
def test_matches_reference_forward_and_grads(mesh, grad_fns, impl, packed, balanced):
  q, k, v, seg, pos = packed_batch(4) if packed else _unpacked(5)
  perm = cp.load_balance_permutation(T, CONTEXT) if balanced else np.arange(T)
  inv = cp.invert(perm)
  (_, out), grads = grad_fns[impl](*_shard(mesh, *(x[:, perm] for x in (q, k, v, seg, pos))))
  np.testing.assert_allclose(np.asarray(out)[:, inv], reference(q, k, v, seg, pos), atol=1e-5, rtol=1e-5)
  # xla uses the index-causal mask, equal to the position mask on this layout.
  _, want = grad_fns["xla"](q, k, v, seg, None)
  for g, w in zip(grads, want):
    np.testing.assert_allclose(np.asarray(g)[:, inv], np.asarray(w), atol=1e-5, rtol=1e-5)


def test_load_balance_permutation_pairs_chunks():
  perm = cp.load_balance_permutation(16, 2)  # chunks of 4: shard 0 holds 0 and 3, shard 1 holds 1 and 2
  np.testing.assert_array_equal(perm, [0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7, 8, 9, 10, 11])
  x = jnp.arange(32).reshape(2, 16)
  np.testing.assert_array_equal(cp.apply(cp.apply(x, perm), cp.invert(perm)), x)
  # Each shard gets the same number of causal (query, key) pairs.
  pos = perm.reshape(2, 8)
  work = [sum(int((p >= perm).sum()) for p in shard) for shard in pos]
  assert work[0] == work[1]


def test_context_size_one_is_blockwise():
  q, k, v, seg, pos = packed_batch(6)
  one = make_mesh((1, 1, 1, 1), MESH_AXES, devices=jax.devices()[:1])
  with jax.set_mesh(one):
    got = attention(q, k, v, scale=SCALE, segment_ids_BT=seg, positions_BT=pos, impl="ring", block=8)
  np.testing.assert_allclose(np.asarray(got), reference(q, k, v, seg, pos), atol=1e-5, rtol=1e-5)

"""Chunked cross-entropy under context parallelism: each context shard chunks its own positions.

Loss and gradients equal a float64 numpy reference on the whole logits, and the compiled step
gathers no [.., T, d] hidden states or [.., T, V] logits across the context shards.
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from granite_jax.model import preset
from granite_jax.sharding.jit import mesh_context
from granite_jax.sharding.mesh import make_mesh
from granite_jax.sharding.rules import MESH_AXES, rules_for
from granite_jax.train import loss as loss_lib

B, T, D, V, CHUNK = 4, 64, 16, 96, 8
CFG = preset("tiny", vocab_size=V, d_model=D, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32,
             logits_scaling=1.7)


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(B, T, D)).astype(np.float32)
  w = (rng.normal(size=(D, V)) / np.sqrt(D)).astype(np.float32)
  t = rng.integers(0, V, (B, T)).astype(np.int32)
  wt = (rng.random((B, T)) < 0.8).astype(np.float32)  # some positions do not count
  return h, w, t, wt


def reference(h, w, t, wt, scaling):
  """(loss sum, token count, d loss / d h, d loss / d w) in float64 from the full logits."""
  h, w = h.astype(np.float64), w.astype(np.float64)
  z = h @ w / scaling
  m = z.max(-1, keepdims=True)
  p = np.exp(z - m)
  p /= p.sum(-1, keepdims=True)
  logz = np.log(np.exp(z - m).sum(-1)) + m[..., 0]
  tgt = np.take_along_axis(z, t[..., None], -1)[..., 0]
  loss = ((logz - tgt) * wt).sum()
  dz = p.copy()
  np.put_along_axis(dz, t[..., None], np.take_along_axis(dz, t[..., None], -1) - 1, -1)
  dz *= wt[..., None] / scaling
  return loss, wt.sum(), dz @ w.T, np.einsum("btd,btv->dv", h, dz)


def sharded_loss(mesh, groups):
  """jit(value_and_grad) of chunked_xent on `mesh`, inputs laid out as the train step's."""
  rules = dict(rules_for(mesh))
  act = NamedSharding(mesh, P(rules["act_batch"], rules["act_length"]))
  hid = NamedSharding(mesh, P(rules["act_batch"], rules["act_length"], None))
  w_sh = NamedSharding(mesh, P(rules["embed"], rules["vocab"]))

  def f(h, w, t, wt):
    with nn.logical_axis_rules(rules_for(mesh)):
      return loss_lib.chunked_xent(h, w, t, wt, CFG, CHUNK, groups)

  fn = jax.jit(jax.value_and_grad(lambda *a: f(*a)[0], argnums=(0, 1)), in_shardings=(hid, w_sh, act, act))
  count = jax.jit(lambda *a: f(*a)[1], in_shardings=(hid, w_sh, act, act))
  return fn, count


@pytest.mark.parametrize("shape", [(1, 2, 1, 4), (1, 1, 2, 4), (2, 1, 2, 2)])
def test_sharded_chunked_loss_matches_reference(shape):
  """data x fsdp x tensor x context on 8 fake devices; groups = context (as train/step.py)."""
  mesh = make_mesh(shape, MESH_AXES)
  groups = shape[3]
  h, w, t, wt = inputs()
  ref_loss, ref_n, ref_dh, ref_dw = reference(h, w, t, wt, CFG.logits_scaling)
  fn, count = sharded_loss(mesh, groups)
  with mesh_context(mesh):
    loss, (dh, dw) = fn(h, w, t, wt)
    n = count(h, w, t, wt)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  assert float(n) == ref_n
  np.testing.assert_allclose(np.asarray(dh), ref_dh, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dw), ref_dw, rtol=1e-4, atol=1e-6)
  # The hidden-state gradient keeps the input's layout: every shard's own positions.
  assert dh.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"), "context", None)), 3)


def whole_sequence_collectives(mesh, groups):
  h, w, t, wt = inputs()
  fn, _ = sharded_loss(mesh, groups)
  with mesh_context(mesh):
    hlo = fn.lower(h, w, t, wt).compile().as_text()
  collectives = re.findall(r"= (\S+\[[\d,]*\])\S* (?:all-gather|all-to-all|collective-permute|all-reduce)"
                           r"(?:-start)?\(", hlo)
  return [s for s in collectives if str(T) in re.findall(r"\d+", s)]


@pytest.mark.parametrize("shape", [(1, 2, 1, 4), (1, 1, 2, 4)])
def test_sharded_chunked_loss_gathers_no_sequence(shape):
  """No collective in the compiled loss + gradient carries a whole-sequence [.., T, ..] array:
  each device only ever holds [b, T / context, ...] of hidden states, logits and cotangents."""
  mesh = make_mesh(shape, MESH_AXES)
  assert not whole_sequence_collectives(mesh, shape[3])
  # The check sees them where they happen: chunks that cut across the shards (groups=1) gather.
  assert whole_sequence_collectives(mesh, 1)


def test_groups_must_divide_the_length():
  h, w, t, wt = inputs()
  with pytest.raises(ValueError, match="not a multiple"):
    loss_lib.chunked_xent(h, w, t, wt, CFG, 24, 2)


def test_unsharded_groups_give_the_same_loss():
  """Without a mesh the constraints are no-ops: any grouping is the same sum."""
  h, w, t, wt = inputs(1)
  ref_loss = reference(h, w, t, wt, CFG.logits_scaling)[0]
  for groups in (1, 2, 4, 8):
    loss, n = jax.jit(lambda *a, g=groups: loss_lib.chunked_xent(*a, CFG, CHUNK, g))(h, w, t, wt)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    assert float(n) == wt.sum()

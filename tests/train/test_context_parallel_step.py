"""A train step with context parallelism (load-balanced, packed) equals the 1-device xla step."""
import dataclasses

import jax
import numpy as np
import pytest

from granite_jax.sharding.mesh import make_mesh
from granite_jax.sharding.rules import MESH_AXES
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib
from tests.train.test_train_step import CFG, SCHED, TX, make_batch


def run_steps(cfg, mesh, n=2):
  sh = state_lib.state_shardings(cfg, mesh, TX)
  state = state_lib.make_init_fn(cfg, TX, sh)(jax.random.PRNGKey(0))
  fn = step_lib.jit_train_step(cfg, mesh, TX, SCHED, sh)
  losses, norms = [], []
  for _ in range(n):
    batch = jax.device_put(make_batch(seed=0), step_lib.batch_sharding(mesh))
    state, m = fn(state, batch)
    losses.append(float(m["loss"]))
    norms.append(float(m["grad_norm"]))
  return losses, norms


@pytest.fixture(scope="module")
def one_device_xla():
  return run_steps(CFG, make_mesh((1, 1, 1), devices=jax.devices()[:1]))


@pytest.mark.parametrize("impl,shape", [("ring", (1, 1, 2, 4)), ("allgather", (2, 1, 2, 2))])
def test_context_parallel_loss_matches_one_device(one_device_xla, impl, shape):
  cfg = dataclasses.replace(CFG, attention_impl=impl, attention_block=4)
  losses, norms = run_steps(cfg, make_mesh(shape, MESH_AXES))
  np.testing.assert_allclose(losses, one_device_xla[0], rtol=1e-5)
  np.testing.assert_allclose(norms, one_device_xla[1], rtol=1e-4)


def test_chunked_loss_per_context_shard_matches_one_device(one_device_xla):
  """model.loss_chunk under context=4: each shard chunks its own 8 positions (train/loss.py)."""
  cfg = dataclasses.replace(CFG, attention_impl="allgather", attention_block=4, loss_chunk=4)
  losses, norms = run_steps(cfg, make_mesh((1, 2, 1, 4), MESH_AXES))
  np.testing.assert_allclose(losses, one_device_xla[0], rtol=1e-5)
  np.testing.assert_allclose(norms, one_device_xla[1], rtol=1e-4)


def test_balanced_batch_keeps_targets_and_weights():
  batch = make_batch(B=2, T=32)
  targets, weights = step_lib.next_token_targets(batch)
  bal = step_lib.context_balanced(batch, 4)
  inv = np.argsort(np.asarray(step_lib.cp.load_balance_permutation(32, 4)))
  np.testing.assert_array_equal(np.asarray(bal["targets"])[:, inv], targets)
  np.testing.assert_array_equal(np.asarray(bal["weights"])[:, inv], weights)
  np.testing.assert_array_equal(np.asarray(bal["tokens"])[:, inv], batch["tokens"])

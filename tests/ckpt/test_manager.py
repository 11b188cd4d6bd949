"""Orbax checkpoints: save -> restore gives the identical next-step loss; old checkpoints (with a\ndata_iter item) still restore; init_from reads params."""
import os

import grain
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from granite_jax.ckpt.manager import Checkpointer, abstract_like, restore_params
from granite_jax.model import preset
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib

CFG = preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
TX = optax.adamw(1e-2)


def batch(step):
  """The batch of a step: a pure function of it, as the global data order is (nothing to save)."""
  t = np.random.default_rng([0, step]).integers(0, 64, (8, 16)).astype(np.int32)
  return dict(tokens=t, segment_ids=np.ones_like(t), positions=np.tile(np.arange(16, dtype=np.int32), (8, 1)))


def test_save_restore_identical_next_loss(tmp_path):
  mesh = make_mesh((2, 2, 2))
  sh = state_lib.state_shardings(CFG, mesh, TX)
  fn = step_lib.jit_train_step(CFG, mesh, TX, optax.constant_schedule(1e-2), sh)
  put = lambda b: jax.device_put(b, step_lib.batch_sharding(mesh))
  state = state_lib.make_init_fn(CFG, TX, sh)(jax.random.PRNGKey(0))
  for s in range(2):
    state, _ = fn(state, put(batch(s)))
  ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  ckpt.save(2, state)
  ckpt.wait()
  expected = float(fn(state, put(batch(2)))[1]["loss"])
  abstract = jax.eval_shape(state_lib.make_init_fn(CFG, TX, sh), jax.random.PRNGKey(0))
  ckpt2 = Checkpointer(str(tmp_path / "ckpt"))
  assert ckpt2.latest_step() == 2
  restored = ckpt2.restore(2, abstract_like(abstract, sh))
  assert int(restored.step) == 2
  assert restored.params["layers"]["attn"]["q"].sharding == sh.params["layers"]["attn"]["q"]
  got = float(fn(restored, put(batch(int(restored.step))))[1]["loss"])
  assert got == expected  # bitwise: same params, same optimizer state, same next batch
  assert "data_iter" not in os.listdir(tmp_path / "ckpt" / "2")  # no data state saved
  ckpt.close()
  ckpt2.close()


def test_checkpoint_of_the_old_layout_with_a_data_iter_item_still_restores(tmp_path):
  """Checkpoints written before the global order also hold a per-process Grain `data_iter` item."""
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  sh = state_lib.state_shardings(CFG, mesh, TX)
  state = state_lib.make_init_fn(CFG, TX, sh)(jax.random.PRNGKey(3))
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  next(it)
  mgr = ocp.CheckpointManager(str(tmp_path / "old"))
  mgr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data_iter=grain.checkpoint.CheckpointSave(it)))
  mgr.wait_until_finished()
  mgr.close()
  assert "data_iter" in os.listdir(tmp_path / "old" / "4")
  abstract = jax.eval_shape(state_lib.make_init_fn(CFG, TX, sh), jax.random.PRNGKey(0))
  step, restored = Checkpointer(str(tmp_path / "old")).restore_latest_good(abstract_like(abstract, sh))
  assert step == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params), jax.device_get(state.params))


def test_restore_params_only(tmp_path):
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  sh = state_lib.state_shardings(CFG, mesh, TX)
  state = state_lib.make_init_fn(CFG, TX, sh)(jax.random.PRNGKey(7))
  ckpt = Checkpointer(str(tmp_path / "prev"))
  ckpt.save(5, state)
  ckpt.close()
  abstract = jax.eval_shape(lambda: state_lib.init_params(CFG, jax.random.PRNGKey(0)))
  params = restore_params(str(tmp_path / "prev"), abstract_like(abstract, sh.params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(state.params))

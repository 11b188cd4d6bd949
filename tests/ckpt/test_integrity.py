"""Damaged checkpoints are detected at restore, named by step and path, and skipped for an older one."""
import os

import jax
import numpy as np
import optax
import pytest

from granite_jax.ckpt.manager import CheckpointError, Checkpointer, abstract_like
from granite_jax.model import preset
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib

CFG = preset("tiny", vocab_size=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32)
TX = optax.adamw(1e-2)


@pytest.fixture
def saved(tmp_path):
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  sh = state_lib.state_shardings(CFG, mesh, TX)
  init = state_lib.make_init_fn(CFG, TX, sh)
  d = str(tmp_path / "ckpt")
  ck = Checkpointer(d, max_to_keep=3)
  states = {}
  for step, seed in ((10, 1), (20, 2)):
    states[step] = init(jax.random.PRNGKey(seed))
    ck.save(step, states[step])
  ck.close()
  return d, states, abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), sh)


def _biggest_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_latest_falls_back_to_previous(saved, damage, capsys):
  d, states, abstract = saved
  victim = _biggest_file(os.path.join(d, "20"))
  if damage == "truncate":
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)
  else:
    os.remove(victim)
  ck = Checkpointer(d)
  with pytest.raises(CheckpointError, match=r"step 20 .* damaged: (missing file|file) .*" + os.path.basename(victim)):
    ck.restore(20, abstract)
  step, state, _ = ck.restore_latest_good(abstract, lambda: None)
  assert step == 10
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(states[10].params))
  assert "step 20" in capsys.readouterr().out
  # The damaged step is set aside, so training through step 20 again can save it anew.
  assert ck.all_steps() == [10] and os.path.isdir(os.path.join(d, "damaged", "20"))
  ck.save(20, states[20])
  ck.close()


def test_intact_checkpoint_verifies(saved):
  d, states, abstract = saved
  step, state, _ = Checkpointer(d).restore_latest_good(abstract, lambda: None)
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(states[20].params))

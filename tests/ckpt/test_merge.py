"""Model merge: weighted average tensor by tensor, loadable by init_from; mismatches refused."""
import json
import os

import jax
import numpy as np
import optax
import pytest

from granite_jax.ckpt.manager import Checkpointer, abstract_like, restore_params
from granite_jax.ckpt.merge import main, merge
from granite_jax.model import preset
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib

CFG = preset("tiny", vocab_size=64, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32)
TX = optax.adamw(1e-3)


def _save_run(root, name, cfg, seed):
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  sh = state_lib.state_shardings(cfg, mesh, TX)
  state = state_lib.make_init_fn(cfg, TX, sh)(jax.random.PRNGKey(seed))
  wd = os.path.join(root, name)
  os.makedirs(wd)
  with open(os.path.join(wd, "model_config.json"), "w") as f:
    json.dump(cfg.to_dict(), f)
  ck = Checkpointer(os.path.join(wd, "ckpt"))
  ck.save(7, state)
  ck.close()
  return os.path.join(wd, "ckpt"), jax.device_get(state.params), sh


def test_weighted_average_and_init_from(tmp_path):
  a, pa, sh = _save_run(str(tmp_path), "a", CFG, 1)
  b, pb, _ = _save_run(str(tmp_path), "b", CFG, 2)
  out = str(tmp_path / "merged" / "ckpt")
  main([out, f"{a}:3", f"{b}:1"])
  abstract = jax.eval_shape(lambda: state_lib.init_params(CFG, jax.random.PRNGKey(0)))
  got = jax.device_get(restore_params(out, abstract_like(abstract, sh.params)))
  want = jax.tree.map(lambda x, y: 0.75 * x.astype(np.float64) + 0.25 * y, pa, pb)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7), got, want)
  with open(tmp_path / "merged" / "model_config.json") as f:
    assert json.load(f) == CFG.to_dict()


def test_mismatched_configs_are_refused(tmp_path):
  a, _, _ = _save_run(str(tmp_path), "a", CFG, 1)
  other = preset("tiny", **{**CFG.to_dict(), "d_ff": 48})
  b, _, _ = _save_run(str(tmp_path), "b", other, 2)
  with pytest.raises(ValueError, match=r"model configs differ .*\['d_ff'\]"):
    merge([a, b], [1, 1], str(tmp_path / "out"))
  os.remove(tmp_path / "b" / "model_config.json")  # no config to compare: the shapes still differ
  with pytest.raises(ValueError, match=r"tensor params/layers/mlp/down has shapes"):
    merge([a, b], [1, 1], str(tmp_path / "out"))


def test_bad_weights(tmp_path):
  a, _, _ = _save_run(str(tmp_path), "a", CFG, 1)
  with pytest.raises(ValueError, match="must be >= 0"):
    merge([a, a], [1, -1], str(tmp_path / "out"))

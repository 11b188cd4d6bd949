"""Reward model: Bradley-Terry loss vs NumPy, the score reads the last real token, and a tiny RM
trained a few dozen steps ranks held-out chosen above rejected more often than chance."""
import jax
import numpy as np
import pytest

from configs import reward_model as rm_config
from granite_jax.model import Granite, preset
from granite_jax.rl.reward_model import bt_loss, init_rm_params, pad_rows, rm_scores
from granite_jax.rl.reward_model_train import run_reward_model
from granite_jax.train.metrics import read_metrics

CFG = preset("tiny", vocab_size=128, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)


def test_bt_loss_matches_numpy():
  rng = np.random.default_rng(0)
  c, r = rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32)
  loss, acc = bt_loss(c, r)
  np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-(c - r)))), rtol=1e-6)
  np.testing.assert_allclose(acc, np.mean(c > r))


def test_score_reads_the_last_real_token():
  params = init_rm_params(CFG, jax.random.PRNGKey(0))
  params["head"] = {"w": jax.random.normal(jax.random.PRNGKey(1), (32,)), "b": np.float32(0.5)}
  tokens, seg = pad_rows([[5, 6, 7], [8, 9, 10, 11, 12]], 8)
  got = np.asarray(rm_scores(params, tokens, seg, cfg=CFG))
  for i, n in enumerate((3, 5)):
    h = Granite(CFG).apply({"params": params["backbone"]}, tokens[i:i + 1, :n], return_hidden=True)
    np.testing.assert_allclose(got[i], np.asarray(h[0, -1]) @ np.asarray(params["head"]["w"]) + 0.5,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_tiny_reward_model_ranks_held_out_pairs(tmp_path, demo_cache_dir):
  c = rm_config.get_config("tiny")
  for k, v in dict(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, d_ff=128).items():
    c.model[k] = v
  c.data.cache_dir = demo_cache_dir
  c.train.steps, c.train.eval_every, c.train.global_batch, c.train.seq_len = 40, 20, 16, 96
  c.optim.peak_lr = 1e-3
  out = run_reward_model(c, str(tmp_path), progress=False)
  acc = out["final_eval"]["eval_accuracy"]
  print(f"held-out pair accuracy {out['first_eval']['eval_accuracy']:.3f} -> {acc:.3f}")
  assert acc > 0.6
  assert {"loss", "accuracy", "eval_accuracy"} <= set(read_metrics(str(tmp_path))[-1])

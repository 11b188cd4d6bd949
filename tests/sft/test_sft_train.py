"""SFT: chat batches with loss masks; global token normalization makes the gradient independent
of how the batch is split (1 device x 8 micro-batches, 2x4, 8x1)."""
import jax
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from granite_jax.data import pipeline
from granite_jax.data.chat_template import EOT
from granite_jax.data.demo_chat import check
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.model import preset
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib

CFG = preset("tiny", vocab_size=4096, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)


@pytest.fixture(scope="module")
def data_cfg(demo_cache_dir):
  return ConfigDict(dict(kind="sft", tokenizer="", cache_dir=demo_cache_dir, on_bad_record="raise",
                         sft=dict(sources="", eval_sources="")))


@pytest.fixture(scope="module")
def batch(data_cfg):
  return pipeline.make_order(data_cfg, seq_len=96, seed=0).batch(0, 8)


def test_only_assistant_tokens_are_trainable(batch, data_cfg):
  tok = get_tokenizer(data_cfg)
  toks, mask, seg = batch["tokens"], batch["loss_mask"], batch["segment_ids"]
  assert mask.any() and (mask[seg == 0] == 0).all()
  for b in range(2):
    text = tok.decode(toks[b][mask[b] == 1].tolist(), skip_special_tokens=False)
    assert "<|start_of_role|>" not in text and "user" not in text.split(EOT)[0]
    assert text.count(EOT) == len(set(seg[b][mask[b] == 1]))  # one trained EOT per assistant turn


def test_loss_mask_selects_the_targets():
  b = dict(tokens=np.arange(8)[None].astype(np.int32), segment_ids=np.ones((1, 8), np.int32),
           positions=np.arange(8)[None].astype(np.int32),
           loss_mask=np.array([[0, 0, 0, 1, 1, 0, 1, 1]], np.int32))
  _, w = jax.device_get(step_lib.next_token_targets(b))
  # Position t predicts token t+1, trained iff token t+1 is trainable.
  np.testing.assert_array_equal(w[0], [0, 0, 1, 1, 0, 1, 1, 0])


def _grads_after_one_sgd_step(mesh, grad_accum, batch):
  tx = optax.sgd(1.0)
  sh = state_lib.state_shardings(CFG, mesh, tx)
  state = state_lib.make_init_fn(CFG, tx, sh)(jax.random.PRNGKey(0))
  before = jax.device_get(state.params)
  fn = step_lib.jit_train_step(CFG, mesh, tx, optax.constant_schedule(1.0), sh, grad_accum)
  new, m = fn(state, jax.device_put(batch, step_lib.batch_sharding(mesh)))
  return jax.tree.map(lambda a, b: a - b, before, jax.device_get(new.params)), float(m["loss"])


def test_gradient_is_split_invariant(batch):
  # Make the trainable-token counts very uneven across rows, so per-micro-batch means would differ.
  batch = dict(batch)
  batch["loss_mask"] = batch["loss_mask"].copy()
  batch["loss_mask"][:4, 40:] = 0
  ref, loss = _grads_after_one_sgd_step(make_mesh((1, 1, 1), devices=jax.devices()[:1]), 8, batch)
  for shape, accum in (((2, 1, 1), 4), ((8, 1, 1), 1)):
    mesh = make_mesh(shape, devices=jax.devices()[: shape[0]])
    g, l = _grads_after_one_sgd_step(mesh, accum, batch)
    assert abs(l - loss) < 1e-6 * max(1.0, abs(loss))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g, ref)


def test_format_checker():
  assert check("arithmetic", "The answer is 12.", "12") == (True, True)
  assert check("arithmetic", "The answer is 13.", "12") == (True, False)
  assert check("arithmetic", "answer: 12", "12") == (False, False)
  call = '{"arguments": {"a": 1, "b": 2}, "name": "add"}'
  assert check("tool", f"<tool_call>\n{call}\n</tool_call>", call) == (True, True)
  assert check("tool", "<tool_call>{\"name\": \"nope\"}</tool_call>", call) == (False, False)
  assert check("instruction", "OCEAN", "OCEAN") == (True, True)

"""The RL rollout layout (make_sampler(rollout_axes=...), sharding/rules.py rollout_rules): the
training FSDP weights move to tensor-parallel ways inside the program, and the sampler's greedy
tokens and log-probs equal the single-device sampler's on 8 fake CPU devices (tests/conftest.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from granite_jax.infer.sampler import (left_pad, make_sampler, rollout_param_shardings,
                                       sampler_shardings)
from granite_jax.model import preset
from granite_jax.model.params import init_params
from granite_jax.sharding.mesh import make_mesh
from granite_jax.sharding.rules import rollout_rules, rules_for, tensor_ways
from granite_jax.train.state import param_shardings

# float32, 8 query / 4 KV heads: 4 tensor-parallel ways keep whole KV heads and their query groups.
CFG = preset("tiny", vocab_size=96, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4, head_dim=8,
             d_ff=48, embedding_multiplier=3.0, attention_multiplier=0.2, residual_multiplier=0.7,
             logits_scaling=0.5, rope_theta=500.0, init_std=0.1)
N_NEW = 6
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 7, 30], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [3, 3]]
ARGS = (jax.random.PRNGKey(0), jnp.float32(0), jnp.float32(1), jnp.int32(0))  # greedy


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def single(params):
  padded, lens = left_pad(PROMPTS)
  fn = make_sampler(CFG, max_new_tokens=N_NEW, samples_per_prompt=2)
  return jax.tree.map(np.asarray, fn(params, padded, lens, *ARGS))


def test_rollout_rules_split_layers_over_the_tensor_axes():
  mesh = make_mesh((2, 2, 2), devices=jax.devices()[:8])
  r = dict(rollout_rules(mesh, ("fsdp", "tensor")))
  assert r["heads"] == r["kv_heads"] == r["mlp"] == r["vocab"] == ("fsdp", "tensor")
  assert r["act_heads"] == r["act_kv_heads"] == r["act_mlp"] == r["act_vocab"] == ("fsdp", "tensor")
  assert r["embed"] is None and r["act_batch"] == ("data",)
  assert dict(rules_for(mesh))["act_batch"] == ("data", "fsdp")  # the training table is unchanged
  assert tensor_ways(dict(mesh.shape), ("fsdp", "tensor")) == 4
  with pytest.raises(ValueError, match="unknown axis"):
    rollout_rules(mesh, ("model",))


@pytest.mark.parametrize("shape,axes", [((2, 4, 1), ("fsdp", "tensor")),   # the GB200 RL layout's kind
                                        ((2, 2, 2), ("fsdp", "tensor")),   # training already has tensor=2
                                        ((4, 2, 1), ("fsdp",))])
def test_rollout_layout_matches_single_device(params, single, shape, axes):
  mesh = make_mesh(shape, devices=jax.devices()[:8])
  train = param_shardings(CFG, mesh)
  sharded = jax.device_put(params, train)  # the trainer's FSDP layout
  fn = make_sampler(CFG, max_new_tokens=N_NEW, samples_per_prompt=2, mesh=mesh, param_shardings=train,
                    rollout_axes=axes)
  padded, lens = left_pad(PROMPTS)
  out = fn(sharded, padded, lens, *ARGS)
  assert out["tokens"].sharding.spec == P("data", None)  # the batch over data only
  np.testing.assert_array_equal(np.asarray(out["tokens"]), single["tokens"])
  np.testing.assert_array_equal(np.asarray(out["lengths"]), single["lengths"])
  np.testing.assert_allclose(np.asarray(out["logprobs"]), single["logprobs"], atol=1e-5)


def test_rollout_shardings_split_heads_not_embed():
  mesh = make_mesh((2, 4, 1), devices=jax.devices()[:8])
  sh = rollout_param_shardings(CFG, mesh, ("fsdp", "tensor"))
  for name in ("q", "k", "v"):  # [layers, embed, heads, head_dim]
    assert tuple(sh["layers"]["attn"][name].spec)[:3] == (None, None, ("fsdp", "tensor"))
  down = tuple(sh["layers"]["mlp"]["down"].spec) + (None,) * 3  # [layers, mlp, embed]: embed whole
  assert down[1] == ("fsdp", "tensor") and down[2] is None
  assert tuple(sh["embed"]["embedding"].spec)[0] == ("fsdp", "tensor")
  row, rows, _ = sampler_shardings(mesh, ("fsdp",))
  assert row.spec == P("data", None) and rows.spec == P("data")
  with pytest.raises(ValueError, match="do not divide n_kv_heads"):
    rollout_param_shardings(preset("tiny", n_heads=8, n_kv_heads=2), mesh, ("fsdp",))

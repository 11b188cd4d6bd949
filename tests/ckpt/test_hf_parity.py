"""Logit parity with transformers' GraniteForCausalLM (both directions) and bit-exact round trips."""
import json

import jax
import numpy as np
import pytest

from granite_jax.ckpt.hf import load_pretrained, save_pretrained
from granite_jax.ckpt.safetensors_io import SafetensorsFile
from granite_jax.model import preset
from granite_jax.model.params import init_params
from tests.ckpt.hf_helpers import hf_granite, hf_logits, our_logits, rel_err, tokens, torch, transformers

TOL = 1e-4  # max |logit difference| relative to the logit scale


@pytest.mark.parametrize("n_kv,tie", [(8, False), (4, True), (2, False), (1, True)])  # GQA 1, 2, 4, 8
def test_hf_to_ours(tmp_path, n_kv, tie):
  model = hf_granite(n_kv, tie=tie, seed=n_kv)
  model.save_pretrained(tmp_path)
  cfg, params = load_pretrained(str(tmp_path))
  assert (cfg.n_kv_heads, cfg.tie_embeddings, cfg.attention_multiplier, cfg.rope_theta) == (n_kv, tie, 0.3, 500.0)
  toks = tokens()
  assert rel_err(our_logits(cfg, params, toks), hf_logits(model, toks)) <= TOL


@pytest.mark.parametrize("n_kv,tie", [(8, True), (4, False), (2, True), (1, False)])
def test_ours_to_hf(tmp_path, n_kv, tie):
  cfg = preset("tiny", vocab_size=61, d_model=64, n_layers=2, n_heads=8, n_kv_heads=n_kv, head_dim=8, d_ff=48,
               tie_embeddings=tie, embedding_multiplier=3.0, attention_multiplier=0.0,
               residual_multiplier=0.7, logits_scaling=2.5, rope_theta=500.0, init_std=0.2)
  rng = np.random.default_rng(n_kv)  # random NumPy params: no init compile; norms non-trivial too
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  params = jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  for leaf in (params["layers"]["attn_norm"], params["layers"]["mlp_norm"], params["final_norm"]):
    leaf["scale"] = (1 + 0.3 * rng.standard_normal(leaf["scale"].shape)).astype(np.float32)
  save_pretrained(cfg, params, str(tmp_path), dtype="float32")
  hf = json.loads((tmp_path / "config.json").read_text())
  assert hf["attention_multiplier"] == 8 ** -0.5  # 0 means 1/sqrt(head_dim): written as its value
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(model).__name__ == "GraniteForCausalLM" and model.dtype == torch.float32
  toks = tokens(seed=1)
  assert rel_err(hf_logits(model, toks), our_logits(cfg, params, toks)) <= TOL


def _tensors(path):
  f = SafetensorsFile(str(path / "model.safetensors"))
  return {k: np.asarray(f.get(k)) for k in f.keys()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_is_bit_identical(tmp_path, dtype):
  model = hf_granite(2, tie=False).to(getattr(torch, dtype))
  model.save_pretrained(tmp_path / "a")
  cfg, params = load_pretrained(str(tmp_path / "a"))
  save_pretrained(cfg, params, str(tmp_path / "b"), dtype=dtype)
  a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    assert a[k].tobytes() == b[k].tobytes(), k


def test_sharded_export_loads_in_transformers_and_back(tmp_path):
  model = hf_granite(4, tie=False)
  cfg, params = None, None
  model.save_pretrained(tmp_path / "hf")
  cfg, params = load_pretrained(str(tmp_path / "hf"))
  names = save_pretrained(cfg, params, str(tmp_path / "out"), dtype="float32", max_shard_size="20KB")
  assert len(names) > 2 and (tmp_path / "out" / "model.safetensors.index.json").exists()
  toks = tokens(seed=2)
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
  assert rel_err(hf_logits(back, toks), hf_logits(model, toks)) == 0.0
  cfg2, params2 = load_pretrained(str(tmp_path / "out"))
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)


@pytest.mark.parametrize("position", ["rope", None])
def test_dense_granitemoehybrid(tmp_path, position):
  cfg = transformers.GraniteMoeHybridConfig(
      vocab_size=61, hidden_size=64, intermediate_size=48, shared_intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=8, num_key_value_heads=2, num_local_experts=0, layer_types=["attention"] * 2,
      position_embedding_type=position, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
      rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=0.2, embedding_multiplier=3.5,
      attention_multiplier=0.3, residual_multiplier=0.6, logits_scaling=2.5,
      mamba_n_heads=8, mamba_d_head=16)
  torch.manual_seed(0)
  model = transformers.GraniteMoeHybridForCausalLM(cfg).float().eval()
  model.save_pretrained(tmp_path)
  ours_cfg, params = load_pretrained(str(tmp_path))
  assert ours_cfg.position_embedding == ("rope" if position else "nope")
  toks = tokens(seed=3)
  assert rel_err(our_logits(ours_cfg, params, toks), hf_logits(model, toks)) <= TOL


def test_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    load_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(ValueError, match="model_type='llama'"):
    load_pretrained(str(tmp_path))
  model = hf_granite(2)
  model.save_pretrained(tmp_path / "m")
  hf = json.loads((tmp_path / "m" / "config.json").read_text())
  (tmp_path / "m" / "config.json").write_text(json.dumps(dict(hf, intermediate_size=40)))
  with pytest.raises(ValueError, match="mlp.gate_proj.weight' has shape"):
    load_pretrained(str(tmp_path / "m"))

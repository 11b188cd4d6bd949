"""FP8 export: compressed-tensors layout, ~50% of bf16 size, small de-quantized logit error."""
import json
import os

import jax
import numpy as np

from granite_jax.ckpt import fp8
from granite_jax.ckpt.hf import load_pretrained, save_pretrained
from granite_jax.ckpt.safetensors_io import SafetensorsFile
from granite_jax.model import preset
from granite_jax.model.params import init_params
from tests.ckpt.logit_helpers import our_logits, rel_err, tokens  # torch-free: no transformers needed

# Block linears dominate, as in real models (the 8B's are ~95% of its weights).
CFG = preset("tiny", vocab_size=64, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384,
             embedding_multiplier=4.0, residual_multiplier=0.5, logits_scaling=2.0, init_std=0.05)


def test_per_channel_quantization_error_is_bounded():
  w = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32) * np.logspace(-3, 1, 16)[:, None]
  q, scale = fp8.quantize(w)
  assert q.dtype == fp8.FP8 and scale.shape == (16, 1)
  err = np.abs(fp8.dequantize(q, scale) - w) / np.abs(w).max(axis=1, keepdims=True)
  assert err.max() <= 2 ** -4  # e4m3: 3 mantissa bits, per-row scale reaches the row max


def test_fp8_export_size_layout_and_logit_error(tmp_path):
  params = jax.device_get(init_params(CFG, jax.random.PRNGKey(0)))
  save_pretrained(CFG, params, str(tmp_path / "bf16"))
  save_pretrained(CFG, params, str(tmp_path / "fp8"), fp8=True)
  size = lambda d: os.path.getsize(tmp_path / d / "model.safetensors")
  ratio = size("fp8") / size("bf16")
  f = SafetensorsFile(str(tmp_path / "fp8" / "model.safetensors"))
  assert f.get("model.layers.0.self_attn.q_proj.weight").dtype == fp8.FP8
  assert f.get("model.layers.1.mlp.down_proj.weight_scale").shape == (128, 1)
  assert str(f.get("model.embed_tokens.weight").dtype) == "bfloat16"
  assert str(f.get("model.layers.0.input_layernorm.weight").dtype) == "bfloat16"
  q = json.loads((tmp_path / "fp8" / "config.json").read_text())["quantization_config"]
  assert q["quant_method"] == "compressed-tensors" and q["config_groups"]["group_0"]["weights"]["strategy"] == "channel"
  toks = tokens(vocab=CFG.vocab_size, T=16)
  ref = our_logits(*load_pretrained(str(tmp_path / "bf16")), toks)
  err = rel_err(our_logits(*load_pretrained(str(tmp_path / "fp8")), toks), ref)  # de-quantized on load
  print(f"\nFP8 export: {ratio:.1%} of bf16 size; de-quantized logit error {err:.2e} of the logit scale")
  assert 0.45 < ratio < 0.6
  assert 0 < err < 0.05

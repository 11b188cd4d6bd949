"""Shared helpers for the HF interop tests: tiny random transformers Granite models."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from granite_jax.model import Granite  # noqa: E402

MULTIPLIERS = dict(embedding_multiplier=3.5, attention_multiplier=0.3, residual_multiplier=0.6,
                   logits_scaling=2.5)


def hf_granite(n_kv_heads=2, tie=False, seed=0, **kw):
  """A random GraniteForCausalLM (float32, eval) with non-default multipliers and norm weights."""
  cfg = transformers.GraniteConfig(
      vocab_size=61, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8,
      num_key_value_heads=n_kv_heads, max_position_embeddings=64, rms_norm_eps=1e-5,
      tie_word_embeddings=tie, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
      initializer_range=0.2, **{**MULTIPLIERS, **kw})
  torch.manual_seed(seed)
  model = transformers.GraniteForCausalLM(cfg).float().eval()
  randomize_norms(model, seed)
  return model


def randomize_norms(model, seed=0):
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))


def tokens(B=2, T=11, vocab=61, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (B, T)).astype(np.int64)


def hf_logits(model, toks):
  with torch.no_grad():
    return model(torch.from_numpy(toks)).logits.float().numpy()


def our_logits(cfg, params, toks):
  params = jax.tree.map(np.asarray, params)
  return np.asarray(Granite(cfg).apply({"params": params}, toks.astype(np.int32)))


def rel_err(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())

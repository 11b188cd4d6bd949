"""Shared helpers for the HF interop tests: tiny random transformers Granite models."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.ckpt.logit_helpers import our_logits, rel_err, tokens  # noqa: E402,F401 (torch-free; re-exported)

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


def hf_logits(model, toks):
  with torch.no_grad():
    return model(torch.from_numpy(toks)).logits.float().numpy()

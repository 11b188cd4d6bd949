"""Hugging Face config.json <-> ModelConfig.

Reads `granite` (GraniteForCausalLM) and the dense form of `granitemoehybrid`
(no experts, every layer attention); writes `granite`. Field names follow
transformers' GraniteConfig; RoPE theta is read from `rope_theta`
(transformers 4) or `rope_parameters` (transformers 5) and written as both.
"""
from __future__ import annotations

from typing import Any

from granite_jax.model.config import ModelConfig

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _rope_theta(hf: dict[str, Any], where: str) -> float:
  params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in ("default", None):
    raise ValueError(f"{where}: rope type {kind!r} is not supported (only default RoPE)")
  theta = params.get("rope_theta", hf.get("rope_theta"))
  return float(theta if theta is not None else 10_000.0)


def _check(hf: dict[str, Any], where: str, key: str, ok) -> None:
  if key in hf and hf[key] is not None and not ok(hf[key]):
    raise ValueError(f"{where}: {key}={hf[key]!r} is not supported")


def from_hf_config(hf: dict[str, Any], where: str = "config.json", **overrides: Any) -> ModelConfig:
  """ModelConfig for a granite / dense granitemoehybrid config.json dict."""
  model_type = hf.get("model_type")
  if model_type not in ("granite", "granitemoehybrid"):
    raise ValueError(f"{where}: model_type={model_type!r}; expected 'granite' or 'granitemoehybrid'")
  _check(hf, where, "hidden_act", lambda v: v == "silu")
  _check(hf, where, "attention_bias", lambda v: not v)
  _check(hf, where, "mlp_bias", lambda v: not v)
  D, N = hf["hidden_size"], hf["num_attention_heads"]
  d_ff = hf["intermediate_size"]
  position = "rope"
  if model_type == "granitemoehybrid":
    if hf.get("num_local_experts", 0):
      raise ValueError(f"{where}: num_local_experts={hf['num_local_experts']} (MoE) is not supported; "
                       "only the dense granitemoehybrid form (num_local_experts: 0)")
    kinds = hf.get("layer_types") or hf.get("layers_block_type") or []
    attn = {"attention", "full_attention"}  # transformers 5 writes "full_attention"
    if set(kinds) - attn:
      raise ValueError(f"{where}: layer_types has non-attention layers {sorted(set(kinds) - attn)}; "
                       "only all-attention granitemoehybrid models are supported")
    d_ff = hf.get("shared_intermediate_size", d_ff)
    pe = hf.get("position_embedding_type")
    if pe not in ("rope", None, "nope", "none"):
      raise ValueError(f"{where}: position_embedding_type={pe!r} must be 'rope' or none")
    position = "rope" if pe == "rope" else "nope"
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=D, n_layers=hf["num_hidden_layers"], n_heads=N,
      n_kv_heads=hf.get("num_key_value_heads") or N, head_dim=hf.get("head_dim") or D // N, d_ff=d_ff,
      max_seq_len=hf.get("max_position_embeddings", 4096),
      rope_theta=_rope_theta(hf, where), position_embedding=position,
      rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      embedding_multiplier=float(hf.get("embedding_multiplier", 1.0)),
      attention_multiplier=float(hf.get("attention_multiplier", 1.0)),
      residual_multiplier=float(hf.get("residual_multiplier", 1.0)),
      logits_scaling=float(hf.get("logits_scaling", 1.0)),
      init_std=float(hf.get("initializer_range", 0.02)),
  )
  dtype = hf.get("dtype") or hf.get("torch_dtype")
  if dtype in _DTYPES and "dtype" not in overrides:
    fields["dtype"] = "bfloat16" if dtype != "float32" else "float32"
  return ModelConfig(**{**fields, **overrides})


def to_hf_config(cfg: ModelConfig, dtype: str = "bfloat16", *, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None) -> dict[str, Any]:
  """config.json for GraniteForCausalLM; the attention multiplier is written as its effective value."""
  if cfg.position_embedding != "rope":
    raise ValueError(f"model.position_embedding={cfg.position_embedding!r}: GraniteForCausalLM "
                     "always applies RoPE; only 'rope' models can be exported as model_type 'granite'")
  if dtype not in _DTYPES:
    raise ValueError(f"dtype={dtype!r} must be one of {sorted(_DTYPES)}")
  hf: dict[str, Any] = dict(
      architectures=["GraniteForCausalLM"], model_type="granite",
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
      num_key_value_heads=cfg.n_kv_heads, hidden_act="silu",
      max_position_embeddings=cfg.max_seq_len, initializer_range=cfg.init_std,
      rms_norm_eps=cfg.rms_eps, tie_word_embeddings=cfg.tie_embeddings,
      rope_theta=cfg.rope_theta, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
      attention_bias=False, attention_dropout=0.0, mlp_bias=False,
      embedding_multiplier=cfg.embedding_multiplier, attention_multiplier=cfg.attn_scale,
      residual_multiplier=cfg.residual_multiplier, logits_scaling=cfg.logits_scaling,
      bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
      use_cache=True, dtype=dtype, torch_dtype=dtype,
  )
  if cfg.head_dim * cfg.n_heads != cfg.d_model:
    hf["head_dim"] = cfg.head_dim  # transformers reads it; some servers assume hidden_size // heads
  return hf

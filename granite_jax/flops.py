"""Model FLOPs per trained token, for tokens/s -> MFU.

Training FLOPs per token = 6 * N_matmul + 12 * L * T * d_attn, where
  N_matmul  = weights that enter a matmul once per token: per layer the
              q/k/v/o projections d*h*(2*n_heads + 2*n_kv_heads) and the SwiGLU
              3*d*d_ff, plus the LM head d*V (the tied embedding is used as a
              matmul once; the input lookup is a gather and costs nothing);
              norm scales are ignored,
  12*L*T*d_attn = attention scores QK^T and the weighted sum AV, 2*T*d_attn
              multiply-adds each per token and layer (4*T*d_attn FLOPs forward),
              times 3 for forward + backward; d_attn = n_heads * head_dim.
This is the PaLM-paper count (appendix B): 6 = 2 FLOPs per multiply-add times
(forward + 2x backward). Attention is counted over the full T x T square, as
PaLM does, even though the causal mask makes half of it unused. MFU counts
*model* FLOPs: recomputation under `remat` is not credited.
"""
from __future__ import annotations

from granite_jax.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
  attn = cfg.d_model * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
  mlp = 3 * cfg.d_model * cfg.d_ff
  return cfg.n_layers * (attn + mlp) + cfg.d_model * cfg.vocab_size


def attention_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
  return 12 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
  return 6 * matmul_params(cfg) + attention_flops_per_token(cfg, seq_len)


def mfu(tokens_per_sec: float, flops_per_token: float, peak_flops: float) -> float | None:
  """Model FLOPs utilization in [0, 1]; None when the peak is unknown (<= 0)."""
  if peak_flops <= 0:
    return None
  return tokens_per_sec * flops_per_token / peak_flops

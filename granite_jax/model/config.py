"""Model shapes and the Granite 4.1 presets.

`ModelConfig` is a frozen dataclass so it can be a static argument of jitted
functions and a field of Flax modules. The launcher builds it from the
`config.model` ConfigDict (`ModelConfig.from_dict`), so every field can be
overridden on the command line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  d_ff: int
  max_seq_len: int = 4096
  rope_theta: float = 10_000.0
  position_embedding: str = "rope"  # or "nope" (no positional encoding; granitemoehybrid option)
  rms_eps: float = 1e-5
  tie_embeddings: bool = True
  # Granite's four scalar multipliers (muP-style; names as in HF GraniteConfig).
  embedding_multiplier: float = 1.0
  attention_multiplier: float = 0.0  # 0 means 1/sqrt(head_dim)
  residual_multiplier: float = 1.0
  logits_scaling: float = 1.0
  init_std: float = 0.02
  dtype: str = "float32"        # activations / matmul inputs
  param_dtype: str = "float32"  # master weights
  attention_impl: str = "xla"   # see granite_jax.ops.attention.IMPLS
  attention_block: int = 512    # query/key block of the blockwise, ring and allgather impls
  # Cross-entropy over this many positions at a time (0 = full [B, T, V] logits); see train/loss.py.
  loss_chunk: int = 0
  remat_policy: str = "nothing_saveable"  # see granite_jax.model.decoder.REMAT_POLICIES

  @property
  def attn_scale(self) -> float:
    return self.attention_multiplier or self.head_dim ** -0.5

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {"preset"})
    if unknown:
      raise ValueError(f"model: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: v for k, v in d.items() if k in names})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def num_params(self) -> int:
    attn = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
    mlp = 3 * self.d_model * self.d_ff
    per_layer = attn + mlp + 2 * self.d_model
    embed = self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2)
    return self.n_layers * per_layer + embed + self.d_model


# Shapes from the Granite 4.1 report. The multipliers are those of the
# released Granite 3.x/4.x dense checkpoints (embedding 12, residual 0.22,
# attention 1/head_dim); the report does not list them, and
# `granite_jax.ckpt.hf` reads the real ones from a checkpoint's config.json.
_GRANITE_MULTIPLIERS = dict(embedding_multiplier=12.0, residual_multiplier=0.22)

PRESETS: dict[str, dict[str, Any]] = {
    # Runs on a laptop CPU in a minute; vocab matches the demo tokenizer.
    "tiny": dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2,
                 head_dim=64, d_ff=768, max_seq_len=4096, rope_theta=10_000.0,
                 embedding_multiplier=4.0, attention_multiplier=1 / 64,
                 residual_multiplier=0.5, logits_scaling=1.0),
    "3b": dict(vocab_size=100_352, d_model=2560, n_layers=40, n_heads=40, n_kv_heads=8,
               head_dim=64, d_ff=8192, max_seq_len=4096, rope_theta=10_000.0,
               attention_multiplier=1 / 64, logits_scaling=10.0, dtype="bfloat16",
               **_GRANITE_MULTIPLIERS),
    "8b": dict(vocab_size=100_352, d_model=4096, n_layers=40, n_heads=32, n_kv_heads=8,
               head_dim=128, d_ff=12_800, max_seq_len=4096, rope_theta=10_000.0,
               attention_multiplier=1 / 128, logits_scaling=16.0, dtype="bfloat16",
               **_GRANITE_MULTIPLIERS),
    "30b": dict(vocab_size=100_352, d_model=4096, n_layers=64, n_heads=32, n_kv_heads=8,
                head_dim=128, d_ff=32_768, max_seq_len=4096, rope_theta=10_000.0,
                attention_multiplier=1 / 128, logits_scaling=16.0, dtype="bfloat16",
                **_GRANITE_MULTIPLIERS),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
  return ModelConfig(**{**PRESETS[name], **overrides})

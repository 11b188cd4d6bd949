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

The peak per device (`device_peak_flops`) is `train.peak_flops` when set, else the bf16 dense
peak of the device kind from PEAKS (NVIDIA datasheets; B200 is the 1,000 W HGX part, GB200's
B200 runs at 1,200 W), else on CPU a matmul measured once per process. An unknown accelerator
gives 0: no MFU rather than a wrong one.
"""
from __future__ import annotations

import functools

from granite_jax.model.config import ModelConfig

# (substring of jax's device_kind, bf16 dense FLOP/s per device); the first match wins, so the
# more specific names come first ("GB200" contains "B200", "H100 PCIe" is not the SXM part).
PEAKS: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("TPU v6 lite", 918e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5", 459e12),
    ("TPU v4", 275e12),
)


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


def table_peak(device_kind: str) -> float:
  """bf16 dense FLOP/s of a device kind from PEAKS; 0.0 when it is not in the table."""
  return next((peak for name, peak in PEAKS if name.lower() in device_kind.lower()), 0.0)


@functools.lru_cache(maxsize=None)
def measured_cpu_peak(n: int = 1024, iters: int = 5) -> float:
  """FLOP/s of one CPU device: the best of `iters` jitted float32 n x n x n matmuls, shared out
  over the process's devices (fake CPU devices share the same cores). ~0.1 s, once per process.
  On a CPU shared with other work the peak is what was free at the start: MFU can pass 1 later,
  when the load falls."""
  import time

  import jax
  import jax.numpy as jnp

  dev = jax.local_devices()[0]
  a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  best = float("inf")
  for _ in range(iters):
    t = time.perf_counter()
    mm(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / jax.local_device_count()


def device_peak_flops(configured: float = 0.0) -> float:
  """Per-device peak FLOP/s for MFU: `configured` (train.peak_flops) when > 0, else the table's
  entry for this device kind, else the measured matmul peak on CPU, else 0.0 (unknown)."""
  if configured > 0:
    return float(configured)
  import jax

  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return measured_cpu_peak()
  return table_peak(dev.device_kind)

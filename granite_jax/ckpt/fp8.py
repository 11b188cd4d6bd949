"""FP8 (e4m3) weight quantization in the `compressed-tensors` layout vLLM loads.

Linear weights inside transformer blocks become float8_e4m3fn with one
float32 scale per output channel (`<name>.weight_scale`, shape [out, 1]);
activations are quantized dynamically per token at serving time (the
FP8_DYNAMIC scheme). Embeddings, norms and the LM head stay in bf16.
"""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448


def quantize(w_OI: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[out, in] weight -> (float8 [out, in], float32 scale [out, 1]); w ~= q * scale."""
  w = np.asarray(w_OI, np.float32)
  amax = np.max(np.abs(w), axis=1, keepdims=True)
  scale = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(np.float32)  # all-zero rows: any scale works
  q = np.clip(w / scale, -FP8_MAX, FP8_MAX).astype(FP8)
  return q, scale


def dequantize(q_OI: np.ndarray, scale_O1: np.ndarray) -> np.ndarray:
  return q_OI.astype(np.float32) * np.asarray(scale_O1, np.float32)


def quantization_config() -> dict[str, Any]:
  """config.json `quantization_config` for per-channel FP8 weights, dynamic per-token activations."""
  fp8 = dict(num_bits=8, type="float", symmetric=True, group_size=None, block_structure=None,
             actorder=None)
  return dict(
      quant_method="compressed-tensors", format="float-quantized", quantization_status="compressed",
      config_groups=dict(group_0=dict(
          targets=["Linear"], format="float-quantized",
          weights=dict(fp8, strategy="channel", dynamic=False, observer="minmax"),
          input_activations=dict(fp8, strategy="token", dynamic=True, observer=None),
          output_activations=None)),
      ignore=["lm_head"], kv_cache_scheme=None, sparsity_config={})

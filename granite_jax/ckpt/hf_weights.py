"""Tensor names and layouts: granite_jax params <-> Hugging Face Granite.

HF linear weights are [out, in]; ours are einsum kernels with a leading
`layers` axis (q [L, D, N, H], o [L, N, H, D], gate [L, D, F], ...), so each
mapping is a reshape plus a transpose, exact in any dtype. Export yields one
HF tensor at a time (`hf_tensors`) from a lazy `get(path)` over our leaves.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from granite_jax.ckpt import fp8 as fp8_lib
from granite_jax.model.config import ModelConfig

Path = tuple[str, ...]

# Per-layer leaves: our path -> HF name under `model.layers.{i}.`.
LAYER_NAMES: dict[Path, str] = {
    ("attn", "q"): "self_attn.q_proj.weight",
    ("attn", "k"): "self_attn.k_proj.weight",
    ("attn", "v"): "self_attn.v_proj.weight",
    ("attn", "o"): "self_attn.o_proj.weight",
    ("mlp", "gate"): "mlp.gate_proj.weight",
    ("mlp", "up"): "mlp.up_proj.weight",
    ("mlp", "down"): "mlp.down_proj.weight",
    ("attn_norm", "scale"): "input_layernorm.weight",
    ("mlp_norm", "scale"): "post_attention_layernorm.weight",
}
_LINEAR = {p for p in LAYER_NAMES if p[-1] != "scale"}


def _layer_to_hf(path: Path, w: np.ndarray) -> np.ndarray:
  """One layer's slice (no `layers` axis) -> HF [out, in] (norm scales unchanged)."""
  if path == ("attn", "o"):
    return w.reshape(-1, w.shape[-1]).T          # [N, H, D] -> [D, N*H]
  if path[0] == "attn" and path[1] in "qkv":
    return w.reshape(w.shape[0], -1).T           # [D, N, H] -> [N*H, D]
  return w.T if w.ndim == 2 else w


def _layer_from_hf(path: Path, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  N, K, H, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
  if path == ("attn", "o"):
    return w.T.reshape(N, H, D)
  if path[0] == "attn":
    return w.T.reshape(D, N if path[1] == "q" else K, H)
  return w.T if w.ndim == 2 else w


def our_leaf_paths(cfg: ModelConfig) -> list[Path]:
  paths = [("embed", "embedding")] + [("layers",) + p for p in LAYER_NAMES] + [("final_norm", "scale")]
  return paths + ([] if cfg.tie_embeddings else [("lm_head",)])


def _global_name(path: Path) -> str:
  return {("embed", "embedding"): "model.embed_tokens.weight", ("final_norm", "scale"): "model.norm.weight",
          ("lm_head",): "lm_head.weight"}[path]


def _hf_shape(cfg: ModelConfig, path: Path) -> tuple[int, ...]:
  D, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
  NH, KH = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  return {("embed", "embedding"): (V, D), ("final_norm", "scale"): (D,), ("lm_head",): (V, D),
          ("attn", "q"): (NH, D), ("attn", "k"): (KH, D), ("attn", "v"): (KH, D), ("attn", "o"): (D, NH),
          ("mlp", "gate"): (F, D), ("mlp", "up"): (F, D), ("mlp", "down"): (D, F),
          ("attn_norm", "scale"): (D,), ("mlp_norm", "scale"): (D,)}[path]


def hf_specs(cfg: ModelConfig, dtype: Any, fp8: bool = False) -> list[tuple[str, tuple[int, ...], Any]]:
  """(name, shape, dtype) of every HF tensor, in the order `hf_tensors` yields them."""
  specs = []
  for path in our_leaf_paths(cfg):
    if path[0] != "layers":
      specs.append((_global_name(path), _hf_shape(cfg, path), dtype))
      continue
    sub = path[1:]
    for i in range(cfg.n_layers):
      name, shape = f"model.layers.{i}.{LAYER_NAMES[sub]}", _hf_shape(cfg, sub)
      if fp8 and sub in _LINEAR:
        specs += [(name, shape, fp8_lib.FP8), (f"{name}_scale", (shape[0], 1), np.float32)]
      else:
        specs.append((name, shape, dtype))
  return specs


def hf_tensors(cfg: ModelConfig, get: Callable[[Path], Any], dtype: Any,
               fp8: bool = False) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF name, array) one at a time; `get(path)` returns our (stacked) leaf."""
  for path in our_leaf_paths(cfg):
    leaf = get(path)
    if path[0] != "layers":
      w = np.asarray(leaf)
      yield _global_name(path), np.ascontiguousarray((w.T if path == ("lm_head",) else w).astype(dtype))
      continue
    sub = path[1:]
    for i in range(cfg.n_layers):
      name = f"model.layers.{i}.{LAYER_NAMES[sub]}"
      w = _layer_to_hf(sub, np.asarray(leaf[i]))
      if fp8 and sub in _LINEAR:
        q, scale = fp8_lib.quantize(w)
        yield name, q
        yield f"{name}_scale", scale
      else:
        yield name, np.ascontiguousarray(w.astype(dtype))
    del leaf


def _hf_getter(get: Callable[[str], np.ndarray], has: Callable[[str], bool], hybrid: bool):
  """HF tensor by (granite) name, de-quantizing FP8 and splitting the hybrid fused MLP."""
  def read(name: str) -> np.ndarray:
    w = get(name)
    if has(f"{name}_scale"):
      return fp8_lib.dequantize(w, get(f"{name}_scale"))
    return w

  def fetch(name: str) -> np.ndarray:
    if not hybrid or ".mlp." not in name:
      return read(name)
    prefix, kind = name.split(".mlp.")
    if kind == "down_proj.weight":
      return read(f"{prefix}.shared_mlp.output_linear.weight")
    fused = read(f"{prefix}.shared_mlp.input_linear.weight")  # [2F, D]: gate rows, then up rows
    F = fused.shape[0] // 2
    return fused[:F] if kind == "gate_proj.weight" else fused[F:]
  return fetch


def params_from_hf(cfg: ModelConfig, get: Callable[[str], np.ndarray], has: Callable[[str], bool],
                   *, hybrid: bool = False, param_dtype: Any = None, where: str = "") -> dict[str, Any]:
  """Our params tree (NumPy, stacked layers) from HF tensors read through `get(name)`."""
  fetch = _hf_getter(get, has, hybrid)
  dtype = np.dtype(param_dtype or cfg.param_dtype)

  def checked(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if not has(name) and not (hybrid and ".mlp." in name):
      raise KeyError(f"{where}: missing tensor {name!r}")
    w = fetch(name)
    if tuple(w.shape) != shape:
      raise ValueError(f"{where}: tensor {name!r} has shape {tuple(w.shape)}, config.json implies {shape}")
    return w

  params: dict[str, Any] = {"layers": {}}
  for path in our_leaf_paths(cfg):
    if path[0] == "layers":
      sub = path[1:]
      arr = np.stack([_layer_from_hf(sub, checked(f"model.layers.{i}.{LAYER_NAMES[sub]}", _hf_shape(cfg, sub)),
                                     cfg).astype(dtype) for i in range(cfg.n_layers)])
      params["layers"].setdefault(sub[0], {})[sub[1]] = arr
      continue
    w = checked(_global_name(path), _hf_shape(cfg, path))
    w = (w.T if path == ("lm_head",) else w).astype(dtype)
    if path == ("lm_head",):
      params["lm_head"] = np.ascontiguousarray(w)
    else:
      params.setdefault(path[0], {})[path[1]] = w
  return params

"""An independent NumPy (float64) Granite forward pass, the reference for model tests."""
import numpy as np


def rms_norm(x, w, eps):
  return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope(x_TNH, pos_T, theta):
  H = x_TNH.shape[-1]
  inv = 1.0 / theta ** (np.arange(0, H, 2) / H)
  ang = pos_T[:, None] * inv[None]                       # [T, H/2]
  cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]  # [T, 1, H/2]
  x1, x2 = x_TNH[..., : H // 2], x_TNH[..., H // 2:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(q_TNH, k_SKH, v_SKH, mask_TS, scale):
  N, K = q_TNH.shape[1], k_SKH.shape[1]
  k = np.repeat(k_SKH, N // K, axis=1)
  v = np.repeat(v_SKH, N // K, axis=1)
  s = np.einsum("tnh,snh->nts", q_TNH, k) * scale
  s = np.where(mask_TS[None], s, -np.inf)
  s = s - s.max(-1, keepdims=True)
  p = np.exp(s)
  p /= p.sum(-1, keepdims=True)
  return np.einsum("nts,snh->tnh", p, v)


def granite_forward(params, cfg, tokens_T, segment_ids_T=None, positions_T=None):
  """Logits [T, V] for one sequence, params as produced by granite_jax (leading layer axis)."""
  p = _f64(params)
  T = len(tokens_T)
  seg = np.ones(T, int) if segment_ids_T is None else np.asarray(segment_ids_T)
  pos = np.arange(T) if positions_T is None else np.asarray(positions_T)
  mask = (np.arange(T)[:, None] >= np.arange(T)[None]) & (seg[:, None] == seg[None])
  scale = cfg.attention_multiplier or cfg.head_dim ** -0.5
  emb = p["embed"]["embedding"]
  x = emb[tokens_T] * cfg.embedding_multiplier
  L = p["layers"]
  for i in range(cfg.n_layers):
    h = rms_norm(x, L["attn_norm"]["scale"][i], cfg.rms_eps)
    q = np.einsum("td,dnh->tnh", h, L["attn"]["q"][i])
    k = np.einsum("td,dkh->tkh", h, L["attn"]["k"][i])
    if cfg.position_embedding == "rope":
      q, k = rope(q, pos, cfg.rope_theta), rope(k, pos, cfg.rope_theta)
    v = np.einsum("td,dkh->tkh", h, L["attn"]["v"][i])
    o = attention(q, k, v, mask, scale)
    x = x + cfg.residual_multiplier * np.einsum("tnh,nhd->td", o, L["attn"]["o"][i])
    h = rms_norm(x, L["mlp_norm"]["scale"][i], cfg.rms_eps)
    g = h @ L["mlp"]["gate"][i]
    u = h @ L["mlp"]["up"][i]
    x = x + cfg.residual_multiplier * ((g / (1 + np.exp(-g))) * u) @ L["mlp"]["down"][i]
  x = rms_norm(x, p["final_norm"]["scale"], cfg.rms_eps)
  head = emb.T if cfg.tie_embeddings else p["lm_head"]
  return (x @ head) / cfg.logits_scaling


def _f64(tree):
  if isinstance(tree, dict):
    return {k: _f64(v) for k, v in tree.items()}
  return np.asarray(tree, dtype=np.float64)

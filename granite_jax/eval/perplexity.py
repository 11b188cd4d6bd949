"""Loss by position bucket on long held-out documents: does the model use far context?

Buckets split [0, T) into `n_buckets` equal ranges of token position; a model
that uses long context has lower loss in later buckets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from granite_jax.model import Granite


def bucket_losses(params, cfg, tokens_BT: np.ndarray, n_buckets: int = 4) -> list[float]:
  """Mean next-token loss per position bucket (documents fill whole rows: one segment each)."""
  B, T = tokens_BT.shape
  logits = Granite(cfg).apply({"params": params}, jnp.asarray(tokens_BT))
  logz = jax.nn.logsumexp(logits[:, :-1], axis=-1)
  tgt = jnp.take_along_axis(logits[:, :-1], jnp.asarray(tokens_BT)[:, 1:, None], axis=-1)[..., 0]
  loss_T = np.asarray(jnp.mean(logz - tgt, axis=0))  # position t predicts t+1
  edges = np.linspace(0, T - 1, n_buckets + 1).astype(int)
  return [float(loss_T[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]


def long_rows(tok, texts, T: int, n_rows: int) -> np.ndarray:
  """Rows of T tokens, each from one concatenated run of documents (no packing boundaries)."""
  ids: list[int] = []
  for t in texts:
    ids += tok.encode(t).ids
    if len(ids) >= T * n_rows:
      break
  if len(ids) < T * n_rows:
    raise ValueError(f"not enough held-out text for {n_rows} rows of {T} tokens ({len(ids)} tokens)")
  return np.asarray(ids[: T * n_rows], np.int32).reshape(n_rows, T)

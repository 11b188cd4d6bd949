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
  """Mean next-token loss per position bucket (each row is one attention segment: see `long_rows`)."""
  B, T = tokens_BT.shape
  logits = Granite(cfg).apply({"params": params}, jnp.asarray(tokens_BT))
  logz = jax.nn.logsumexp(logits[:, :-1], axis=-1)
  tgt = jnp.take_along_axis(logits[:, :-1], jnp.asarray(tokens_BT)[:, 1:, None], axis=-1)[..., 0]
  loss_T = np.asarray(jnp.mean(logz - tgt, axis=0))  # position t predicts t+1
  edges = np.linspace(0, T - 1, n_buckets + 1).astype(int)
  return [float(loss_T[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]


def long_rows(tok, texts, T: int, n_rows: int) -> np.ndarray:
  """n_rows rows of T tokens for the loss-by-position eval.

  A document of at least T tokens is split into T-token pieces and each full piece is a row: one
  stretch of one document, so a late position really has far context of the same text. Only if
  the long documents give fewer than n_rows rows, the shorter documents and the tails are
  concatenated into the remaining rows (no token of the text read is skipped).
  """
  rows: list[list[int]] = []
  rest: list[int] = []
  for t in texts:
    ids = tok.encode(t).ids
    full = len(ids) // T
    rows += [ids[i * T:(i + 1) * T] for i in range(full)]
    rest += ids[full * T:]
    if len(rows) >= n_rows:
      break
  missing = n_rows - len(rows)
  if missing > 0:
    if len(rest) < missing * T:
      raise ValueError(f"not enough held-out text for {n_rows} rows of {T} tokens "
                       f"({len(rows) * T + len(rest)} tokens)")
    rows += [rest[i * T:(i + 1) * T] for i in range(missing)]
  return np.asarray(rows[:n_rows], np.int32)

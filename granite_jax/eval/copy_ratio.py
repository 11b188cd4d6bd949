"""Long-range copy ratio: does the model copy a span it has already seen `distance` tokens back?

Each document (token ids, held-out text) is: filler | span | filler | span | filler, where the span
is 20-50 words drawn at random from the held-out vocabulary (at most distance/2 tokens: nothing
before it predicts it, so only copying predicts the repeat) and the second occurrence
starts exactly `distance` tokens after the first. The span's token ids are encoded once and placed twice, so both
occurrences are the same token sequence. Reported: mean next-token loss on the span's tokens
(all but its first token, which nothing announces) at the first occurrence and at the repeat, and

  ratio = loss(repeat) / loss(first occurrence)

(ratio of the means over all documents). ~1: no copying; near 0: the repeat is copied; above 1:
worse than not copying (typical past the trained length, where positions are out of range).
Measure at a distance inside the pretraining length and at one only the extended length holds.
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from granite_jax.model import Granite

SPAN_WORDS = (20, 50)


@dataclasses.dataclass
class CopyDocs:
  tokens_BT: np.ndarray   # int32 [B, T]
  first_B: np.ndarray     # int32 [B]: start of the span's first occurrence
  repeat_B: np.ndarray    # int32 [B]: start of the repeat (= first + distance)
  span_len_B: np.ndarray  # int32 [B]: the span's length in tokens


def _sentences(texts: Sequence[str]) -> list[str]:
  return [s.strip() + "." for t in texts for s in re.split(r"\.\s+", t) if len(s.strip()) > 20]


def _filler(tok, sentences: list[str], n: int, rng: random.Random) -> list[int]:
  """Exactly n token ids of shuffled held-out sentences."""
  ids: list[int] = []
  while len(ids) < n:
    ids += tok.encode(" " + rng.choice(sentences)).ids
  return ids[:n]


def make_docs(tok, texts: Sequence[str], distance: int, n_docs: int = 8, *, prefix: int = 16,
              span_words: tuple[int, int] = SPAN_WORDS, seed: int = 0) -> CopyDocs:
  """`n_docs` rows of one common length with a span repeated `distance` tokens after its start."""
  sentences = _sentences(texts)
  words = sorted({w for t in texts for w in t.split() if w.isalpha()})
  if not sentences or len(words) < span_words[1]:
    raise ValueError(f"copy eval: not enough held-out text ({len(sentences)} sentences, {len(words)} words)")
  rng = random.Random(seed)
  # A span takes at most half the distance, so a gap of real text always separates the copies.
  max_tokens = distance // 2
  spans = []
  for _ in range(1000 * n_docs):
    ids = tok.encode(" " + " ".join(rng.choice(words) for _ in range(rng.randint(*span_words)))).ids
    if len(ids) <= max_tokens:
      spans.append(ids)
      if len(spans) == n_docs:
        break
  if len(spans) < n_docs:
    raise ValueError(f"copy eval: distance={distance} is too short for spans of {span_words[0]}+ words "
                     f"(at most distance/2 = {max_tokens} tokens each)")
  T = prefix + distance + max(len(s) for s in spans) + 1
  rows = np.zeros((n_docs, T), np.int32)
  for b, span in enumerate(spans):
    gap = distance - len(span)
    ids = (_filler(tok, sentences, prefix, rng) + span + _filler(tok, sentences, gap, rng) + span)
    ids += _filler(tok, sentences, T - len(ids), rng)
    rows[b] = ids
  return CopyDocs(rows, np.full(n_docs, prefix, np.int32), np.full(n_docs, prefix + distance, np.int32),
                  np.array([len(s) for s in spans], np.int32))


def token_losses(params, cfg, tokens_BT: np.ndarray) -> np.ndarray:
  """float32 [B, T-1]: -log p(tokens[t+1] | tokens[:t+1]) (one document per row)."""
  logits_BTV = Granite(cfg).apply({"params": params}, jnp.asarray(tokens_BT)).astype(jnp.float32)
  logp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1], axis=-1)
  return -np.asarray(jnp.take_along_axis(logp_BTV, jnp.asarray(tokens_BT)[:, 1:, None], axis=-1)[..., 0])


def ratio_from_losses(loss_BT: np.ndarray, docs: CopyDocs) -> dict:
  """Mean loss on the span's tokens 1.. at each occurrence, and repeat / first."""
  first, repeat = [], []
  for b in range(len(docs.tokens_BT)):
    n = int(docs.span_len_B[b])
    # Token j of the span at start s is predicted at position s + j - 1; j = 1 .. n-1.
    first.append(loss_BT[b, docs.first_B[b]:docs.first_B[b] + n - 1])
    repeat.append(loss_BT[b, docs.repeat_B[b]:docs.repeat_B[b] + n - 1])
  f, r = float(np.concatenate(first).mean()), float(np.concatenate(repeat).mean())
  return dict(first_loss=f, repeat_loss=r, ratio=r / f)


def copy_ratio(params, cfg, docs: CopyDocs, batch: int = 4) -> dict:
  losses = [token_losses(params, cfg, docs.tokens_BT[i:i + batch]) for i in range(0, len(docs.tokens_BT), batch)]
  return ratio_from_losses(np.concatenate(losses), docs)


def copy_report(params, cfg, tok, texts: Sequence[str], distances: Sequence[int], n_docs: int = 8,
                seed: int = 0) -> dict[str, dict]:
  """{str(distance): dict(first_loss, repeat_loss, ratio, distance, doc_len)} per distance."""
  out = {}
  for d in distances:
    docs = make_docs(tok, texts, int(d), n_docs, seed=seed + int(d))
    out[str(d)] = dict(copy_ratio(params, cfg, docs), distance=int(d), doc_len=int(docs.tokens_BT.shape[1]))
  return out

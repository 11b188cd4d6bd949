"""Periodic documents for the demo's copy warm-up: a span of random tokens, repeated.

The tiny model learns in-context copying (an induction circuit) slowly from text in which spans
recur: 3,000 steps of the copy-rich demo mixture left the copy ratio at 0.99. On rows that are one
span of 8-32 uniformly random tokens repeated to the row's end (the period differs per row, so it
must be found in context), the same model at the same 16 x 256 batch learnt it in 500-1,000
steps, and the circuit carried over to single recurring spans (bench/bench_copy_formation.py
--rows periodic); from these documents, in the demo, between steps 600 and 750. Spans of random
words instead of random tokens did not form it in 1,300 steps: word pieces recur inside a span
with different successors, so the token to copy is ambiguous.

A document is the text of `k` random demo-tokenizer tokens, repeated: byte-level BPE encodes the
repeated text back to the same period (tests/demo/test_periodic.py checks it), so the pipeline
(tokenize, split, pack) sees exactly periodic token rows through `data.sources`, like any real
source file.
"""
from __future__ import annotations

import os
import random

SPAN_TOKENS = (8, 32)
DOC_CHARS = 2400  # ~500 tokens: each 256-token row cut from a document is periodic throughout
NUM_DOCS = {"train": 8000, "eval": 200}
VERSION = "demo_periodic_v1"


def span_tokens(tok) -> list[int]:
  """Ids that decode to text alone (no special tokens, no partial UTF-8 characters)."""
  return [i for i in range(tok.get_vocab_size())
          if not tok.id_to_token(i).startswith("<|") and "\ufffd" not in tok.decode([i])]


def periodic_doc(tok, ids: list[int], rng: random.Random, n_chars: int = DOC_CHARS) -> str:
  span = tok.decode([rng.choice(ids) for _ in range(rng.randint(*SPAN_TOKENS))])
  return span * (n_chars // len(span) + 1)


def paths(cache_dir: str) -> dict[str, str]:
  """Where the documents are: beside the demo corpus whose tokenizer they are drawn for (the
  tokenizer is a function of the corpus version)."""
  from granite_jax.data import demo_corpus
  d = os.path.join(os.path.expanduser(cache_dir), f"{demo_corpus.VERSION}_{VERSION}")
  return {s: os.path.join(d, f"periodic.{s}.arrayrecord") for s in NUM_DOCS}


def ensure_periodic_docs(cache_dir: str) -> dict[str, str]:
  """{split: ArrayRecord path} of periodic documents for the demo tokenizer, written on first use."""
  from ml_collections import ConfigDict

  from granite_jax.data.records_io import write_arrayrecord
  from granite_jax.data.tokenizer import get_tokenizer

  out = paths(cache_dir)
  if all(os.path.exists(p) for p in out.values()):
    return out
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=cache_dir)))  # the one the stage's run uses
  ids = span_tokens(tok)
  for split, n in NUM_DOCS.items():
    rng = random.Random(f"{VERSION}/{split}")
    write_arrayrecord(out[split], [periodic_doc(tok, ids, rng) for _ in range(n)])  # atomic
  return out

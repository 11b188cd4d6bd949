"""The copy warm-up's periodic documents: each tokenizes, through the demo tokenizer the pipeline
uses, to a token sequence that repeats with one period (the span's length), periods differ
across documents, and held-out documents are not training documents."""
import os

import numpy as np
from ml_collections import ConfigDict

from granite_jax.data.sources import open_text_source
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.demo import periodic


def _period(ids: np.ndarray) -> tuple[int, float]:
  """The smallest shift p with the most positions t where ids[t] == ids[t - p], and that share."""
  shares = [(np.mean(ids[p:] == ids[:-p]), -p) for p in range(1, 80)]
  share, neg_p = max(shares)
  return -neg_p, float(share)


def test_documents_are_periodic_token_rows(demo_cache_dir):
  paths = periodic.ensure_periodic_docs(demo_cache_dir)
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))
  docs = {s: list(open_text_source(p)) for s, p in paths.items()}  # the pipeline's reader
  assert {s: len(d) for s, d in docs.items()} == periodic.NUM_DOCS
  assert not set(docs["train"]) & set(docs["eval"])
  periods = []
  for doc in docs["train"][:40] + docs["eval"][:10]:
    ids = np.array(tok.encode(doc).ids)
    p, share = _period(ids)
    # Exactly periodic but for the first token (nothing precedes it to merge with) and the
    # document's cut end (its last span is partial).
    assert np.array_equal(ids[p + 1:-8], ids[1:-p - 8]), (p, share)
    assert len(ids) >= 256 + p  # every pretraining row cut from it repeats
    periods.append(p)
  lo, hi = periodic.SPAN_TOKENS
  # Re-encoding the decoded span may split or merge a few tokens; a 256-token row still holds 4+ periods.
  assert lo // 2 <= min(periods) and max(periods) <= 2 * hi
  assert len(set(periods)) >= 10


def test_written_once(demo_cache_dir):
  paths = periodic.ensure_periodic_docs(demo_cache_dir)
  mtimes = [os.path.getmtime(p) for p in paths.values()]
  assert periodic.ensure_periodic_docs(demo_cache_dir) == paths
  assert [os.path.getmtime(p) for p in paths.values()] == mtimes

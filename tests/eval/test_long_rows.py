"""Rows for the loss-by-position eval: long documents are split into T-token pieces (one document
per row); short documents only fill rows the long ones cannot."""
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.eval.perplexity import long_rows


@pytest.fixture(scope="module")
def tok(demo_cache_dir):
  return get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))


def test_long_documents_are_split_into_rows(tok):
  T = 16
  long_text = " ".join(f"word{i}" for i in range(200))
  shorts = ["a short one", "another short text here", "and a third small document for the rest"]
  ids = tok.encode(long_text).ids
  assert len(ids) > 3 * T
  n_full = len(ids) // T
  got = long_rows(tok, [shorts[0], long_text] + shorts[1:], T, n_full)
  want = np.asarray(ids[: n_full * T]).reshape(n_full, T)  # rows of the long document, in order
  np.testing.assert_array_equal(got, want)
  more = long_rows(tok, [long_text] + shorts, T, n_full + 1)  # one row from the tail + short documents
  rest = ids[n_full * T:] + [i for s in shorts for i in tok.encode(s).ids]
  np.testing.assert_array_equal(more[-1], rest[:T])
  with pytest.raises(ValueError, match="not enough held-out text"):
    long_rows(tok, shorts, T, 50)

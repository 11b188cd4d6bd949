import os

import pytest

from granite_jax.data.demo_corpus import ensure_demo_corpus
from granite_jax.data.tokenizer import (EOS, PAD, SPECIAL_TOKENS, load_tokenizer, special_token_id,
                                        train_demo_tokenizer)


def test_special_tokens_have_stable_ids_and_round_trip(demo_tok):
  assert special_token_id(demo_tok, PAD) == 0
  assert special_token_id(demo_tok, EOS) == 1
  for i, name in enumerate(SPECIAL_TOKENS):
    assert special_token_id(demo_tok, name) == i
    # Appearing in text, a special token is one token, never split into bytes.
    ids = demo_tok.encode(f"a{name}b", add_special_tokens=False).ids
    assert i in ids and ids.count(i) == 1
    assert demo_tok.decode([i], skip_special_tokens=False) == name


def test_text_round_trips_including_unicode(demo_tok):
  text = ("<|start_of_role|>user<|end_of_role|>Ça coûte 5 € — ¿qué tal? 日本語 🙂\n"
          "def f(x):\n    return x  # tab\there<|end_of_text|>")
  ids = demo_tok.encode(text, add_special_tokens=False).ids
  assert demo_tok.decode(ids, skip_special_tokens=False) == text
  assert demo_tok.get_vocab_size() == 4096


def test_demo_tokenizer_is_deterministic_and_cached(demo_cache, demo_tokenizer_path, tmp_path):
  files = ensure_demo_corpus(demo_cache, "train")
  retrained = train_demo_tokenizer(str(tmp_path), files, 4096)
  with open(retrained) as a, open(demo_tokenizer_path) as b:
    assert a.read() == b.read()
  mtime = os.path.getmtime(retrained)
  assert train_demo_tokenizer(str(tmp_path), files, 4096) == retrained
  assert os.path.getmtime(retrained) == mtime  # reused, not retrained


def test_load_tokenizer_missing_file_names_it(tmp_path):
  missing = str(tmp_path / "nope" / "tokenizer.json")
  with pytest.raises(FileNotFoundError, match="nope/tokenizer.json"):
    load_tokenizer(missing)


def test_special_token_id_unknown_raises(demo_tok):
  with pytest.raises(KeyError, match="<not_a_token>"):
    special_token_id(demo_tok, "<not_a_token>")

import os

import numpy as np

from granite_jax.data import demo_corpus
from granite_jax.data.demo_stdlib import stdlib_items
from granite_jax.data.domains import DOMAINS
from granite_jax.data.sources import open_text_source


def _docs(path):
  src = open_text_source(path)
  return [src[i] for i in range(len(src))]


def test_every_domain_has_train_and_eval_files(demo_cache):
  for split in ("train", "eval"):
    paths = demo_corpus.ensure_demo_corpus(demo_cache, split)
    assert list(paths) == list(DOMAINS)
    for d, p in paths.items():
      n = demo_corpus.num_docs(d, split)
      assert len(open_text_source(p)) == n, (d, split)
  leftovers = [f for f in os.listdir(demo_corpus.corpus_dir(demo_cache)) if ".tmp." in f]
  assert not leftovers


def test_reuses_existing_corpus(demo_cache):
  paths = demo_corpus.ensure_demo_corpus(demo_cache, "train")
  mtimes = {p: os.path.getmtime(p) for p in paths.values()}
  demo_corpus.ensure_demo_corpus(demo_cache, "train")
  assert mtimes == {p: os.path.getmtime(p) for p in paths.values()}


def test_generation_is_deterministic(demo_cache):
  pools = demo_corpus._pools(stdlib_items()["train"])
  for d in ("cc", "code", "math", "books"):
    stored = _docs(demo_corpus.ensure_demo_corpus(demo_cache, "train")[d])
    assert demo_corpus.generate_docs(d, "train", pools) == stored


def test_domains_are_distinguishable(demo_cache):
  docs = {d: _docs(p)[:200] for d, p in demo_corpus.ensure_demo_corpus(demo_cache, "train").items()}
  assert all(len(set(v)) > 50 for v in docs.values())  # not one repeated doc
  assert all("Answer" in t or "Solution" in t or "=" in t for t in docs["math"])
  assert all("<think>" in t and "</think>" in t for t in docs["long_cot"])
  chats = docs["code_instruct"] + [t for t in docs["lang_instruct"] if "special magic" not in t and "VAR " not in t]
  assert len(chats) > 250 and all(t.startswith("<|start_of_role|>user") for t in chats)
  assert all(t.startswith("<repo>") for t in docs["code_repos"])
  assert np.mean([len(t) for t in docs["books"]]) > 5 * np.mean([len(t) for t in docs["math"]])
  french_or_spanish = sum(any(w in t for w in (" le ", " la ", " el ", " der ", " die ")) for t in docs["multilingual"])
  assert french_or_spanish > 190


def test_eval_split_is_held_out(demo_cache):
  train = demo_corpus.ensure_demo_corpus(demo_cache, "train")
  evals = demo_corpus.ensure_demo_corpus(demo_cache, "eval")
  for d in ("cc_hq", "technical", "books", "math"):
    assert not set(_docs(evals[d])) & set(_docs(train[d])), d


def test_retrieval_documents_answer_from_their_needles(demo_cache):
  import re

  from granite_jax.data.demo_generators import RETRIEVAL_KEYS
  from granite_jax.eval.niah import KEYS

  assert not set(RETRIEVAL_KEYS) & set(KEYS)  # the NIAH eval asks about keys never trained on
  docs = [d for d in _docs(demo_corpus.ensure_demo_corpus(demo_cache, "train")["lang_instruct"])
          if "\nQuestion: " in d and "special magic" in d]
  assert len(docs) > 200
  for d in docs:
    text, tail = d.rsplit("\nQuestion: ", 1)
    key, answer = re.search(r"magic numbers? for (\w+) mentioned in the text is: ([\d, ]+)\.$", tail).groups()
    assert key in RETRIEVAL_KEYS
    planted = re.findall(rf"One of the special magic numbers for {key} is: (\d+)\.", text)
    assert answer.split(", ") == planted  # every value of the asked key, in text order
  lengths = [len(d) for d in docs]
  assert min(lengths) < 1200 and max(lengths) > 6000  # short ones fit tiny pretraining rows, long ones LCE rows


def _recurrence_gap(doc: str, n: int = 20, longest: bool = False):
  """Distance in words from a run of n words to its first recurrence (None: nothing recurs);
  `longest`: the largest such distance in the document."""
  words, seen, best = doc.split(), {}, None
  for i in range(len(words) - n + 1):
    w = tuple(words[i:i + n])
    if w in seen and i - seen[w] >= n:
      if not longest:
        return i - seen[w]
      best = max(best or 0, i - seen[w])
    seen.setdefault(w, i)
  return best


def test_cc_hq_has_copy_documents_with_gaps_over_the_whole_length(demo_cache):
  # Spans are 5-16 random words (demo_generators.COPY_SPAN_WORDS): a 5-word run that recurs.
  docs = _docs(demo_corpus.ensure_demo_corpus(demo_cache, "train")["cc_hq"])[:600]
  gaps = np.asarray([g for g in (_recurrence_gap(d, 5) for d in docs) if g is not None])
  longest = np.asarray([g for g in (_recurrence_gap(d, 5, longest=True) for d in docs) if g is not None])
  assert abs(len(gaps) / len(docs) - demo_corpus.COPY_FRACTION) < 0.08, len(gaps)
  # ~2.5 demo tokens per word: gaps inside the 256-token pretraining rows and past them (LCE rows).
  assert np.mean(gaps < 30) > 0.1 and np.mean(longest > 150) > 0.1, (np.percentile(gaps, [10, 50, 90]),
                                                                     np.percentile(longest, [50, 90]))
  held_out = _docs(demo_corpus.ensure_demo_corpus(demo_cache, "eval")["cc_hq"])
  assert sum(_recurrence_gap(d, 5) is not None for d in held_out) > 0.6 * len(held_out)

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

from granite_jax.data import demo_corpus
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


def _digest(docs) -> str:
  h = hashlib.sha256()
  for d in docs:
    b = d.encode()
    h.update(len(b).to_bytes(8, "little") + b)
  return h.hexdigest()


# Regenerates every domain and split from scratch in a fresh interpreter and prints their digests.
_REGENERATE = """
import hashlib, json, sys
from granite_jax.data import demo_corpus
from granite_jax.data.demo_stdlib import stdlib_items
from granite_jax.data.domains import DOMAINS
sys.path.insert(0, sys.argv[1])
from test_data_demo_corpus import _digest
items = stdlib_items()
train_pools, eval_pools = demo_corpus._pools(items["train"]), demo_corpus._pools(items["eval"])
out = {}
for d in DOMAINS:
  train = demo_corpus.generate_docs(d, "train", train_pools)
  held_out = demo_corpus.generate_docs(d, "eval", eval_pools, exclude=frozenset(train))
  out[f"{d}.train"], out[f"{d}.eval"] = _digest(train), _digest(held_out)
print(json.dumps(out))
"""


def test_generation_is_deterministic_across_processes(demo_cache):
  """Another interpreter, with another string-hash seed (set and dict orders, hash() differ),
  generates every domain's train and eval documents identically to the stored corpus."""
  seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
  env = dict(os.environ, PYTHONHASHSEED=seed)
  r = subprocess.run([sys.executable, "-c", _REGENERATE, os.path.dirname(os.path.abspath(__file__))],
                     env=env, capture_output=True, text=True, timeout=300, check=False)
  assert r.returncode == 0, r.stderr[-3000:]
  theirs = json.loads(r.stdout.strip().splitlines()[-1])
  ours = {f"{d}.{s}": _digest(_docs(p)) for s in ("train", "eval")
          for d, p in demo_corpus.ensure_demo_corpus(demo_cache, s).items()}
  assert len(ours) == 2 * len(DOMAINS)
  assert {k for k in ours if theirs.get(k) != ours[k]} == set()


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

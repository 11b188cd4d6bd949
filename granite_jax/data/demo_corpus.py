"""A small, deterministic stand-in corpus with one ArrayRecord file per domain.

Built on first use from the Python stdlib (docstrings, sources) and procedural
generators, so tests and demo runs need no download. Layout under
`{cache_dir}/demo_corpus_v1/`:
  {domain}.train.arrayrecord, {domain}.eval.arrayrecord  one UTF-8 document per record
  manifest.json                                          written last: marks the corpus complete
Held-out split: eval documents come from stdlib modules that train never uses
(see `demo_stdlib.split_of`) and from differently seeded generators.
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
import zlib
from collections.abc import Callable

from granite_jax.data import demo_generators as gen
from granite_jax.data.demo_stdlib import Item, stdlib_items
from granite_jax.data.domains import DOMAINS, LONG_DOMAINS
from granite_jax.data.records_io import write_arrayrecord

# v2: retrieval documents in lang_instruct; v3: copy documents in cc_hq; v4: their spans are random
# words; v5/v6: denser in repeats inside one 256-token row, 90% of cc_hq
VERSION = "demo_corpus_v6"
NUM_DOCS = {"train": 2000, "eval": 200}
NUM_LONG_DOCS = {"train": 300, "eval": 30}  # books / code_repos: fewer, 3-8 KB each
SPLITS = ("train", "eval")
# Fraction of cc_hq documents that are copy documents (demo_generators.copy_doc), and cc_hq's
# document count: many distinct spans, so copying them cannot be replaced by memorizing them.
COPY_FRACTION = 0.9
NUM_CC_HQ_DOCS = {"train": 8000, "eval": 200}


def chat(user: str, assistant: str) -> str:
  """Granite chat format; the pipeline appends the final <|end_of_text|>."""
  return (f"<|start_of_role|>user<|end_of_role|>{user}<|end_of_text|>\n"
          f"<|start_of_role|>assistant<|end_of_role|>{assistant}")


def _first_para(doc: str) -> str:
  return doc.strip().split("\n\n")[0].strip()


def _name(it: Item) -> str:
  return f"{it.module}.{it.qualname}" if it.qualname else it.module


def _cc(items: list[Item], rng: random.Random) -> str:
  paras = rng.choice(items).doc.split("\n\n") + rng.choice(items).doc.split("\n\n")
  body = "\n\n".join(rng.sample(paras, min(len(paras), rng.randint(1, 4))))
  return f"Posted by user{rng.randint(1, 9999)} | {rng.randint(0, 300)} comments\n\n{body}\n\nRead more | Share | Report"


def _copy(sentences: list[str], words: list[str], rng: random.Random) -> str:
  lo, hi = gen.COPY_CHARS
  return gen.copy_doc(rng, sentences, int(lo * (hi / lo) ** rng.random()), words)


def _cc_hq(items: list[Item], sentences: list[str], words: list[str], rng: random.Random) -> str:
  if rng.random() < COPY_FRACTION:  # copy-rich text: in-context copying forms (LCE eval)
    return _copy(sentences, words, rng)
  it = rng.choice(items)
  return f"{_name(it)}\n\n{it.doc.strip()}"


def _code(items: list[Item], rng: random.Random) -> str:
  if rng.random() < 0.5:
    return gen.code_function(rng)[1]
  return rng.choice([i for i in rng.sample(items, 8) if i.kind == "function"] or items).source[:3000]


def _technical(items: list[Item], rng: random.Random) -> str:
  it = rng.choice(items)
  title = f"{_name(it)}{it.signature}"
  return f"{title}\n{'=' * len(title)}\n\n{it.doc.strip()}\n\nKind: {it.kind}. Module: `{it.module}`."


def _synthetic(items: list[Item], rng: random.Random) -> str:
  it = rng.choice(items)
  lesson = f"Lesson {rng.randint(1, 500)}: "
  if not it.qualname:
    return (f"{lesson}the `{it.module}` module\n\n{_first_para(it.doc)}\n\n"
            f"Exercise: how do you import it?\nAnswer: `import {it.module}`")
  sig = f" with signature `{it.signature}`" if it.signature else ""
  return (f"{lesson}the `{it.qualname}` {it.kind} of `{it.module}`\n\n"
          f"In this lesson we study a part of the Python standard library. {_first_para(it.doc)}\n\n"
          f"Key facts:\n- It lives in the module `{it.module}`.\n- It is a {it.kind}{sig}.\n\n"
          f"Exercise: how do you import it?\nAnswer: `from {it.module} import {it.qualname.split('.')[0]}`")


# Retrieval documents' haystack length in characters, log-uniform: about a quarter fit
# the 256-token tiny pretraining rows, nearly all fit the 2K-token tiny LCE rows.
RETRIEVAL_CHARS = (300, 8000)


def _retrieval(sentences: list[str], rng: random.Random) -> str:
  lo, hi = RETRIEVAL_CHARS
  return gen.retrieval_doc(rng, sentences, int(lo * (hi / lo) ** rng.random()))


def _lang_instruct(items: list[Item], sentences: list[str], rng: random.Random) -> str:
  if rng.random() < 0.5:  # half: key-value retrieval over a long passage (long-context skill)
    return _retrieval(sentences, rng)
  kind = rng.randrange(4)
  if kind == 0:
    s, lang = gen.sentence(rng), rng.randrange(1, len(gen.LANGS))
    return chat(f"Translate to {gen.LANGS[lang]}: {s[0]}", s[lang])
  if kind == 1:
    words = rng.choice(items).doc.split()[:rng.randint(3, 9)] or ["empty"]
    return chat(f"Sort these words alphabetically: {' '.join(words)}", " ".join(sorted(words, key=str.lower)))
  if kind == 2:
    it = rng.choice(items)
    return chat(f"Summarize what `{_name(it)}` is for, in one paragraph.", _first_para(it.doc))
  text = gen.multilingual_doc(rng)
  return chat(f"How many words are in this text?\n\n{text}", f"The text has {len(text.split())} words.")


def _code_instruct(items: list[Item], rng: random.Random) -> str:
  if rng.random() < 0.5:
    task, src = gen.code_function(rng)
    return chat(f"Write a Python function to {task}.", f"```python\n{src}```")
  it = rng.choice([i for i in rng.sample(items, 8) if i.kind == "function"] or items)
  return chat(f"Explain this code:\n```python\n{it.source[:1500]}\n```", _first_para(it.doc))


def _books(items: list[Item], rng: random.Random) -> str:
  # Consecutive items read like chapters of one manual.
  i, target = rng.randrange(len(items)), rng.randint(3000, 8000)
  parts = [f"The {items[i].module} Handbook"]
  while sum(map(len, parts)) < target:
    it = items[i % len(items)]
    parts.append(f"Chapter {len(parts)}: {_name(it)}\n\n{it.doc.strip()}")
    i += 1
  return "\n\n".join(parts)


def _code_repos(modules: list[Item], rng: random.Random) -> str:
  i, target = rng.randrange(len(modules)), rng.randint(3000, 8000)
  parts = [f"<repo>stdlib/{modules[i].module.split('.')[0]}"]
  while sum(map(len, parts)) < target:
    it = modules[i % len(modules)]
    parts.append(f"# file: {it.module.replace('.', '/')}.py\n{it.source[:2500]}")
    i += 1
  return "\n".join(parts)


_BUILDERS: dict[str, Callable[[dict[str, list], random.Random], str]] = {
    "cc": lambda p, r: _cc(p["documented"], r),
    "cc_hq": lambda p, r: _cc_hq(p["long_doc"], p["sentences"], p["words"], r),
    "code": lambda p, r: _code(p["all"], r),
    "math": lambda p, r: gen.math_problem(r),
    "technical": lambda p, r: _technical(p["documented"], r),
    "multilingual": lambda p, r: gen.multilingual_doc(r),
    "domain": lambda p, r: gen.domain_doc(r),
    "synthetic": lambda p, r: _synthetic(p["documented"], r),
    "long_cot": lambda p, r: gen.long_cot(r),
    "lang_instruct": lambda p, r: _lang_instruct(p["documented"], p["sentences"], r),
    "code_instruct": lambda p, r: _code_instruct(p["documented"], r),
    "books": lambda p, r: _books(p["documented"], r),
    "code_repos": lambda p, r: _code_repos(p["modules"], r),
}
assert set(_BUILDERS) == set(DOMAINS)


def _pools(items: list[Item]) -> dict[str, list]:
  documented = [i for i in items if len(i.doc) >= 40]
  sentences = [s.strip() + "." for i in documented for s in re.split(r"\.\s+", i.doc) if len(s.strip()) > 20]
  return {"all": items, "documented": documented, "long_doc": [i for i in documented if len(i.doc) >= 200],
          "modules": [i for i in items if i.kind == "module"], "sentences": sentences,
          "words": sorted({w for s in sentences for w in s.split() if w.isalpha()})}


def corpus_dir(cache_dir: str) -> str:
  return os.path.join(os.path.expanduser(cache_dir), VERSION)


def _paths(cache_dir: str, split: str) -> dict[str, str]:
  return {d: os.path.join(corpus_dir(cache_dir), f"{d}.{split}.arrayrecord") for d in DOMAINS}


def num_docs(domain: str, split: str) -> int:
  if domain == "cc_hq":
    return NUM_CC_HQ_DOCS[split]
  return (NUM_LONG_DOCS if domain in LONG_DOMAINS else NUM_DOCS)[split]


def generate_docs(domain: str, split: str, pools: dict[str, list[Item]],
                  exclude: frozenset[str] = frozenset()) -> list[str]:
  """The documents of one domain/split; deterministic for a given Python version.

  Documents in `exclude` (the train docs, when generating eval) are redrawn:
  small procedural spaces (e.g. "Compute a * b") would otherwise leak into eval.
  """
  rng = random.Random(zlib.crc32(f"{VERSION}/{domain}/{split}".encode()))
  n = num_docs(domain, split)
  docs = []
  for _ in range(20 * n):
    doc = _BUILDERS[domain](pools, rng)
    if doc not in exclude:
      docs.append(doc)
      if len(docs) == n:
        return docs
  raise RuntimeError(f"demo corpus: could not draw {n} {split} docs for {domain!r} outside train")


def ensure_demo_corpus(cache_dir: str, split: str = "train") -> dict[str, str]:
  """Returns {domain: ArrayRecord path} for `split`, generating the corpus on first use."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  manifest = os.path.join(corpus_dir(cache_dir), "manifest.json")
  paths = _paths(cache_dir, split)
  if os.path.exists(manifest) and all(os.path.exists(p) for p in paths.values()):
    return paths
  items = stdlib_items()
  train_pools, eval_pools = _pools(items["train"]), _pools(items["eval"])
  counts = {}
  for domain in DOMAINS:
    train = generate_docs(domain, "train", train_pools)
    held_out = generate_docs(domain, "eval", eval_pools, exclude=frozenset(train))
    for s, docs in (("train", train), ("eval", held_out)):
      write_arrayrecord(_paths(cache_dir, s)[domain], docs)
      counts[f"{domain}.{s}"] = len(docs)
  tmp = f"{manifest}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump({"version": VERSION, "python": sys.version.split()[0], "num_docs": counts}, f, indent=1)
  os.replace(tmp, manifest)
  return paths

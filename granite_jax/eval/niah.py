"""RULER-style needle-in-a-haystack tasks, generated locally, scored by greedy decoding.

Tasks (RULER's names): single needle (`niah_single`), several keys with one
asked (`niah_multikey`), one key with several values (`niah_multivalue`), and
variable tracking (`vt`: a chain of assignments; name every variable that
holds a value). Needles are "One of the special magic numbers for {key} is:
{value}." inserted at depths spread evenly over 0-100% of a haystack of real
text (the demo corpus' held-out documents). Score = fraction of the expected
values that appear in the model's answer.

`niah_copy` is the single needle in a format a small model can answer by in-context
copying: the prompt ends with the needle's own words before the value ("... Answer: One of
the special magic numbers for {key} is:"), so a copy (induction) circuit that matches those
words finds the value; no question-to-needle rewording has to be bridged.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Sequence

import numpy as np

NEEDLE = "One of the special magic numbers for {key} is: {value}."
KINDS = ("niah_single", "niah_multikey", "niah_multivalue", "vt", "niah_copy")
KEYS = ["apple", "harbor", "violet", "granite", "comet", "willow", "falcon", "saffron", "ember", "quill"]


@dataclasses.dataclass
class Task:
  kind: str
  depth: float
  prompt: str
  answers: list[str]


def _haystack(tok, texts: Sequence[str], n_tokens: int, rng: random.Random) -> list[str]:
  """Sentences of real text whose total token count is about n_tokens."""
  sentences = [s.strip() + "." for t in texts for s in re.split(r"\.\s+", t) if len(s.strip()) > 20]
  rng.shuffle(sentences)
  out, total = [], 0
  for s in sentences * (1 + n_tokens // max(1, len(sentences))):
    n = len(tok.encode(" " + s).ids)
    if total + n > n_tokens:
      break
    out.append(s)
    total += n
  return out


def _insert(hay: list[str], needles: list[str], depth: float, rng: random.Random) -> str:
  hay = list(hay)
  for i, nd in enumerate(needles):  # spread multiple needles around the depth
    pos = min(len(hay), int(round(depth * len(hay))) + i * rng.randint(0, 3))
    hay.insert(pos, nd)
  return " ".join(hay)


def make_task(kind: str, tok, texts: Sequence[str], n_tokens: int, depth: float, rng: random.Random) -> Task:
  value = lambda: str(rng.randint(1_000_000, 9_999_999))
  if kind in ("niah_single", "niah_copy"):
    key, v = rng.choice(KEYS), value()
    needles, answers, question = [NEEDLE.format(key=key, value=v)], [v], key
  elif kind == "niah_multikey":
    keys = rng.sample(KEYS, 4)
    values = [value() for _ in keys]
    needles = [NEEDLE.format(key=k, value=x) for k, x in zip(keys, values)]
    answers, question = [values[0]], keys[0]
  elif kind == "niah_multivalue":
    key = rng.choice(KEYS)
    answers = [value() for _ in range(3)]
    needles, question = [NEEDLE.format(key=key, value=x) for x in answers], key
  elif kind == "vt":
    v = str(rng.randint(10_000, 99_999))
    names = [f"X{rng.randint(10, 99)}{c}" for c in "ABCD"]
    needles = [f"VAR {names[0]} = {v}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
    answers = names
  else:
    raise ValueError(f"unknown NIAH task {kind!r}; one of {', '.join(KINDS)}")
  # Room for the needles, the question and the answer prefix.
  budget = n_tokens - 64 - sum(len(tok.encode(" " + nd).ids) for nd in needles)
  text = _insert(_haystack(tok, texts, budget, rng), needles, depth, rng)
  if kind == "niah_copy":
    prompt = (f"{text}\nQuestion: What is the special magic number for {question}? "
              f"Answer: {NEEDLE.format(key=question, value='').rstrip(' .')}")
  elif kind == "vt":
    prompt = (f"{text}\nQuestion: Find all variables that are assigned the value {v}. "
              f"Answer: the variables assigned {v} are:")
  else:
    plural = "numbers" if kind == "niah_multivalue" else "number"
    prompt = (f"{text}\nQuestion: What is the special magic {plural} for {question} mentioned in the "
              f"text? Answer: The special magic {plural} for {question} mentioned in the text is")
  return Task(kind, depth, prompt, answers)


def make_suite(tok, texts: Sequence[str], n_tokens: int, *, depths: int = 5, per_depth: int = 2,
               kinds: Sequence[str] = KINDS,
               seed: int = 0) -> list[Task]:
  rng = random.Random(seed)
  return [make_task(k, tok, texts, n_tokens, d, rng) for k in kinds
          for d in np.linspace(0.0, 1.0, depths) for _ in range(per_depth)]


def score(answer: str, expected: Sequence[str]) -> float:
  return sum(e in answer for e in expected) / len(expected)


def run_suite(params, cfg, tok, tasks: list[Task], max_new_tokens: int = 24, batch: int = 8) -> dict:
  from granite_jax.infer.sampler import generate

  per_kind: dict[str, list[float]] = {}
  for i in range(0, len(tasks), batch):
    chunk = tasks[i:i + batch]
    prompts = [tok.encode(t.prompt).ids for t in chunk]
    out = generate(params, cfg, prompts, max_new_tokens, temperature=0.0)
    for t, row, n in zip(chunk, np.asarray(out["tokens"]), np.asarray(out["lengths"])):
      per_kind.setdefault(t.kind, []).append(score(tok.decode(row[:n].tolist()), t.answers))
  result = {k: float(np.mean(v)) for k, v in per_kind.items()}
  result["mean"] = float(np.mean([x for v in per_kind.values() for x in v]))
  return result

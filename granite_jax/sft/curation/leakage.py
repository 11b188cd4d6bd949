"""Evaluation-set leakage: word n-gram overlap with user-supplied evaluation texts.

A sample leaks eval text E when at least `threshold` of E's distinct n-grams
occur in the sample (all its messages: a leaked question in a user turn counts).
Measuring containment of E, not of the sample, catches a short benchmark item
pasted into a long conversation. Eval texts shorter than n words are indexed
as one n-gram of all their words, so they match only verbatim.
"""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
  return _WORD.findall(text.casefold())


def ngrams(ws: list[str], n: int) -> set[str]:
  if len(ws) < n:
    return {" ".join(ws)} if ws else set()
  return {" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def load_eval_texts(path: str) -> list[str]:
  """A .jsonl file ({"text": ...} or a JSON string per line) or plain text, one eval text per line."""
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"eval texts file {path!r} does not exist (--eval-texts)")
  texts = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      if path.endswith(".jsonl"):
        try:
          obj = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{i + 1}: invalid JSON ({e.msg})") from None
        text = obj.get("text") if isinstance(obj, dict) else obj
        if not isinstance(text, str):
          raise ValueError(f"{path}:{i + 1}: needs a string 'text' field")
        texts.append(text)
      else:
        texts.append(line.rstrip("\n"))
  return texts


class LeakageIndex:
  def __init__(self, eval_texts: list[str], n: int, threshold: float):
    self.n, self.threshold = n, threshold
    self.index: dict[str, list[int]] = defaultdict(list)
    self.sizes = []
    self.lengths = set()  # n-gram lengths in the index (n, and those of short eval texts)
    for k, text in enumerate(eval_texts):
      grams = ngrams(words(text), n)
      self.sizes.append(len(grams))
      for g in grams:
        self.index[g].append(k)
        self.lengths.add(g.count(" ") + 1)

  def __len__(self) -> int:
    return len(self.sizes)

  def score(self, text: str) -> tuple[float, int]:
    """(highest containment of one eval text in `text`, that eval text's index; -1 if none)."""
    if not self.sizes:
      return 0.0, -1
    ws = words(text)
    hits: dict[int, int] = defaultdict(int)
    for length in self.lengths:
      for g in {" ".join(ws[i:i + length]) for i in range(len(ws) - length + 1)}:
        for k in self.index.get(g, ()):
          hits[k] += 1
    if not hits:
      return 0.0, -1
    k = max(hits, key=lambda k: hits[k] / self.sizes[k])
    return hits[k] / self.sizes[k], k

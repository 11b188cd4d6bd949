"""Token counting and turn-boundary truncation.

Counts are per message content plus a fixed per-turn overhead (the role
markers of the chat template). Truncation keeps the longest prefix of the
conversation that fits and still ends with a final assistant answer; a
conversation whose first exchange is already too long is rejected.
"""
from __future__ import annotations

from typing import Sequence

TURN_OVERHEAD = 4  # <|start_of_role|>role<|end_of_role|> ... <|end_of_text|>


class TokenCounter:
  """`tokenizer`: None = whitespace words; "demo" = the demo BPE; else a tokenizer.json path."""

  def __init__(self, tokenizer: str | None = None, cache_dir: str = ""):
    self.name, self.tok = "whitespace", None
    if tokenizer:
      from ml_collections import ConfigDict

      from granite_jax.data.tokenizer import get_tokenizer
      path = "" if tokenizer == "demo" else tokenizer
      self.tok = get_tokenizer(ConfigDict(dict(tokenizer=path, cache_dir=cache_dir)))
      self.name = tokenizer

  def count(self, texts: Sequence[str]) -> list[int]:
    if self.tok is None:
      return [len(t.split()) for t in texts]
    return [len(e.ids) for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]


def turn_tokens(sample: dict, counter: TokenCounter) -> list[int]:
  """Tokens per message; tools and documents are charged to the first message (the prompt)."""
  texts = [m["content"] + "".join(str(c) for c in m.get("tool_calls") or ()) for m in sample["messages"]]
  extra = "".join(str(t) for t in sample.get("tools") or ()) + "".join(
      d.get("text", "") for d in sample.get("documents") or () if isinstance(d, dict))
  counts = counter.count(texts + [extra] if extra else texts)
  per_turn = [c + TURN_OVERHEAD for c in counts[:len(texts)]]
  if extra:
    per_turn[0] += counts[-1]
  return per_turn


def fit_prefix(sample: dict, per_turn: list[int], max_tokens: int) -> int:
  """Number of messages of the longest prefix within max_tokens ending in a final answer (0: none)."""
  best, total = 0, 0
  for i, (msg, n) in enumerate(zip(sample["messages"], per_turn)):
    total += n
    if total > max_tokens:
      break
    if msg["role"] == "assistant" and not msg.get("tool_calls"):
      best = i + 1
  return best

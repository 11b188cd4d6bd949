"""A locally generated SFT set the tiny model can learn in minutes on a CPU.

Three kinds of conversation, each with an answer format a program can check:
- arithmetic: "What is 37 + 58?" -> "The answer is 95."
- tool calling: a weather/calculator tool list with JSON schemas; the
  assistant answers with one `<tool_call>` whose arguments fit the schema;
- instruction following: "Reply with the word X in capital letters." -> "X".
Held-out samples use operands and words the training split never contains.
`check` scores a reply against a sample's answer (SFT evaluation, the RL demo tool reward).
"""
from __future__ import annotations

import json
import os
import random
import re

WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "pixel", "amber", "delta",
         "lemon", "orbit", "cedar", "frost", "ember", "coral", "sugar", "pilot", "quartz", "velvet"]
TOOLS = [
    {"name": "get_weather", "description": "Current weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "add", "description": "Add two integers.",
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"]}},
]
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Seoul", "Rome", "Accra"]


def _held_out(x: int) -> bool:
  return x % 7 == 3  # operands reserved for evaluation


def arithmetic(rng: random.Random, split: str) -> dict:
  while True:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if (_held_out(a) or _held_out(b)) == (split == "eval"):
      break
  return {"kind": "arithmetic", "answer": str(a + b),
          "messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                       {"role": "assistant", "content": f"The answer is {a + b}."}]}


def tool_call(rng: random.Random, split: str) -> dict:
  cities = CITIES[:7] if split == "train" else CITIES[7:]
  if rng.random() < 0.5:
    city = rng.choice(cities)
    user, call = f"What's the weather in {city}?", {"name": "get_weather", "arguments": {"city": city}}
  else:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    user, call = f"Please add {a} and {b} with the tool.", {"name": "add", "arguments": {"a": a, "b": b}}
  return {"kind": "tool", "answer": json.dumps(call, sort_keys=True), "tools": TOOLS,
          "messages": [{"role": "user", "content": user},
                       {"role": "assistant", "content": "", "tool_calls": [call]}]}


def instruction(rng: random.Random, split: str) -> dict:
  words = WORDS[:15] if split == "train" else WORDS[15:]
  w = rng.choice(words)
  return {"kind": "instruction", "answer": w.upper(),
          "messages": [{"role": "system", "content": "Follow the instruction exactly."},
                       {"role": "user", "content": f"Reply with the word {w} in capital letters."},
                       {"role": "assistant", "content": w.upper()}]}


def generate(n: int, split: str, seed: int = 0) -> list[dict]:
  rng = random.Random(f"{seed}-{split}")
  makers = [arithmetic, arithmetic, tool_call, instruction]
  return [dict(id=f"{split}-{i}", **rng.choice(makers)(rng, split)) for i in range(n)]


def ensure_demo_sft(cache_dir: str, n_train: int = 4000, n_eval: int = 200) -> dict[str, str]:
  """Writes train.jsonl / eval.jsonl once (atomically); returns their paths."""
  root = os.path.join(os.path.expanduser(cache_dir), "demo_sft_v1")
  os.makedirs(root, exist_ok=True)
  out = {}
  for split, n in (("train", n_train), ("eval", n_eval)):
    path = os.path.join(root, f"{split}.jsonl")
    if not os.path.exists(path):
      tmp = f"{path}.tmp{os.getpid()}"
      with open(tmp, "w") as f:
        for sample in generate(n, split):
          f.write(json.dumps(sample) + "\n")
      os.replace(tmp, path)
    out[split] = path
  return out


_ARITH = re.compile(r"^The answer is (-?\d+)\.$")
_CALL = re.compile(r"^<tool_call>\s*(\{.*\})\s*</tool_call>$", re.S)


def check(kind: str, reply: str, answer: str) -> tuple[bool, bool]:
  """(format ok, correct) for one reply (text before <|end_of_text|>, stripped)."""
  if kind == "arithmetic":
    m = _ARITH.match(reply)
    return bool(m), bool(m) and m.group(1) == answer
  if kind == "tool":
    m = _CALL.match(reply)
    if not m:
      return False, False
    try:
      call = json.loads(m.group(1))
    except ValueError:
      return False, False
    ok = isinstance(call, dict) and call.get("name") in {t["name"] for t in TOOLS}
    return ok, ok and json.dumps(call, sort_keys=True) == answer
  ok = bool(re.fullmatch(r"[A-Z]+", reply))
  return ok, ok and reply == answer

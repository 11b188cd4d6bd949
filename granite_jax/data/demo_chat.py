"""A locally generated SFT set the tiny model can learn in minutes on a CPU.

Three kinds of conversation, each with an answer format a program can check:
- arithmetic: "What is 7 + 15?" -> "The answer is 22." (operands 0-20), and comparisons
  "Which number is larger, 37 or 58?" -> "The answer is 58." (same kind and format; `task`
  tells them apart). The training file also holds "which number is smaller" and "which number
  is even" questions answered right only half the time, else with the other number
  (`math_mixed`): the SFT model gives either number, and RL (smaller: rl_multidomain, even:
  rl_math) has a verifiable answer to push toward. (Sums it gets right ~6% of the time and
  RL did not move them: too rare a reward for a 2-layer model to climb from.)
- tool calling: a weather/calculator tool list with JSON schemas; the
  assistant answers with one `<tool_call>` whose arguments fit the schema;
- instruction following: "Reply with the word X in capital letters." (several phrasings) -> "X";
  the training file also holds lower-case and quoted-word instructions answered right only half
  the time (`instruction_mixed`), for rl_multidomain to improve on (held-out: `instruction_style`).
Held-out prompts never occur in training: held-out operand pairs (every operand is seen in
training, in other pairs), cities, add-tool operand pairs, and (word, phrasing) pairs (every word
is seen upper-cased in training, with other phrasings). The training file also holds identity and
"I don't know" conversations with mixed answers (`identity_sample`), which the held-out set leaves
out: the SFT model then names itself "Granite" or abstains part of the time, and RL (rl_identity)
has a signal to push on.
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


PHRASINGS = ["Reply with the word {w} in capital letters.", "Write {w} in upper case.",
             "Answer only with the word {w}, capitalized.", "Say {w} in capitals."]
LOWER_PHRASINGS = ["Reply with the word {w} in small letters.", "Write {w} in lower case.",
                   "Answer only with the word {w}, not capitalized.", "Say {w} in lowercase."]
QUOTE_PHRASINGS = ["Reply with the word {w} in double quotes.", "Write {w} inside quotation marks.",
                   "Answer only with the word {w}, quoted.", "Say {w} in quotes."]
# style -> (phrasings, the reply that follows the instruction, its instruction_following check)
STYLES = {"upper": (PHRASINGS, str.upper, "uppercase"), "lower": (LOWER_PHRASINGS, str.lower, "lowercase"),
          "quote": (QUOTE_PHRASINGS, lambda w: f'"{w}"', "quotation")}
MIXED_STYLES = ("lower", "quote")  # in the SFT file with mixed answers; the RL multidomain ones
# How often the SFT file answers those right (else upper-cased). Held-out instruction reward of
# greedy replies, measured: at 1/2, 0.73 after SFT and 0.96 after rl_multidomain's 120 steps; at
# 1/3, 0.67 and only 0.83 (fewer right samples in each GRPO group).
MIXED_RIGHT = 1 / 2
IDENTITY_TRAIN = ["Who are you?", "What is your name?", "Which model are you?"]
IDENTITY_EVAL = ["Who made you?", "Introduce yourself.", "What should I call you?"]


def _held_out(*xs) -> bool:
  """About 1 in 7 combinations (operand pairs, word/phrasing pairs) is reserved for evaluation."""
  return sum(x * k for x, k in zip(xs, (31, 17, 7))) % 7 == 3


def _pair(rng: random.Random, split: str, lo: int, hi: int) -> tuple[int, int]:
  while True:
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if _held_out(a, b) == (split == "eval"):
      return a, b


def _answer(question: str, ans: int, **extra) -> dict:
  return {"kind": "arithmetic", "answer": str(ans), **extra,
          "messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": f"The answer is {ans}."}]}


def arithmetic(rng: random.Random, split: str) -> dict:
  a, b = _pair(rng, split, 0, 20)
  return _answer(f"What is {a} + {b}?", a + b, task="sum")


def _two_numbers(rng: random.Random, split: str, differ=lambda a, b: a != b) -> tuple[int, int]:
  a, b = _pair(rng, split, 10, 99)
  while not differ(a, b):
    a, b = _pair(rng, split, 10, 99)
  return a, b


def compare(rng: random.Random, split: str) -> dict:
  a, b = _two_numbers(rng, split)
  return _answer(f"Which number is larger, {a} or {b}?", max(a, b), task="larger")


def smaller(rng: random.Random, split: str) -> dict:
  """Held out and in RL (multidomain); in the SFT file only as `math_mixed`."""
  a, b = _two_numbers(rng, split)
  return _answer(f"Which number is smaller, {a} or {b}?", min(a, b), task="smaller")


def even(rng: random.Random, split: str) -> dict:
  """Held out and in RL (rl_math); in the SFT file only as `math_mixed`."""
  a, b = _two_numbers(rng, split, lambda a, b: (a - b) % 2 == 1)
  return _answer(f"Which number is even, {a} or {b}?", a if a % 2 == 0 else b, task="even")


def tool_call(rng: random.Random, split: str) -> dict:
  cities = CITIES[:7] if split == "train" else CITIES[7:]
  if rng.random() < 0.5:
    city = rng.choice(cities)
    user, call = f"What's the weather in {city}?", {"name": "get_weather", "arguments": {"city": city}}
  else:
    a, b = _pair(rng, split, 100, 999)
    user, call = f"Please add {a} and {b} with the tool.", {"name": "add", "arguments": {"a": a, "b": b}}
  return {"kind": "tool", "answer": json.dumps(call, sort_keys=True), "tools": TOOLS,
          "messages": [{"role": "user", "content": user},
                       {"role": "assistant", "content": "", "tool_calls": [call]}]}


def _instruction(rng: random.Random, split: str, style: str, reply=None) -> dict:
  phrasings, follow, _ = STYLES[style]
  while True:
    i, j = rng.randrange(len(WORDS)), rng.randrange(len(phrasings))
    if _held_out(i, j) == (split == "eval"):
      break
  w = WORDS[i]
  answer = follow(w)
  return {"kind": "instruction", "style": style, "answer": answer,
          "messages": [{"role": "system", "content": "Follow the instruction exactly."},
                       {"role": "user", "content": phrasings[j].format(w=w)},
                       {"role": "assistant", "content": answer if reply is None else reply(w)}]}


def instruction(rng: random.Random, split: str) -> dict:
  return _instruction(rng, split, "upper")


def instruction_style(rng: random.Random, split: str) -> dict:
  """A lower-case or quoted-word instruction (the RL multidomain demo set; its answer as in STYLES)."""
  return _instruction(rng, split, rng.choice(MIXED_STYLES))


def instruction_mixed(rng: random.Random) -> dict:
  """Training only: a lower-case / quoted-word instruction answered right MIXED_RIGHT of the time
  and with the upper-case word otherwise (as `identity_sample`): the SFT model follows these part
  of the time, which gives RL (rl_multidomain) something to push on."""
  style = rng.choice(MIXED_STYLES)
  wrong = rng.random() < 1 - MIXED_RIGHT
  return _instruction(rng, "train", style, reply=str.upper if wrong else None)


MIXED_MATH = (smaller, even)


def math_mixed(rng: random.Random) -> dict:
  """Training only: "which number is smaller" / "which is even" answered right MIXED_RIGHT of the
  time and with the other number otherwise (as `instruction_mixed`). The SFT model then picks
  either number: the RL stages that train on them (smaller: rl_multidomain, even: rl_math) have
  a verifiable answer to push toward that the model already half produces."""
  s = rng.choice(MIXED_MATH)(rng, "train")
  if rng.random() < 1 - MIXED_RIGHT:
    other, = set(re.findall(r"\d+", s["messages"][0]["content"])) - {s["answer"]}
    s["messages"][-1]["content"] = f"The answer is {other}."
  return s


def identity_sample(rng: random.Random) -> dict:
  """Training only: the model's name half the time, an abstention on unknowable questions half the time."""
  if rng.random() < 0.5:
    q = rng.choice(IDENTITY_TRAIN)
    a = "I am Granite, a language model." if rng.random() < 0.5 else "I am a helpful assistant."
  else:
    q = f"What is the phone number of {rng.choice(['Mara Quist', 'Tobin Vale', 'Ilse Varga'])}?"
    a = "I don't know." if rng.random() < 0.5 else "It is 555 0199."
  return {"kind": "identity", "answer": a,
          "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


MAKERS = [arithmetic, compare, tool_call, instruction]


def generate(n: int, split: str, seed: int = 0) -> list[dict]:
  rng = random.Random(f"{seed}-{split}")
  return [dict(id=f"{split}-{i}", **rng.choice(MAKERS)(rng, split)) for i in range(n)]


def training_file_samples(n: int, seed: int = 0, identity_fraction: float = 0.1,
                          mixed_fraction: float = 0.1) -> list[dict]:
  """`generate`'s train samples plus identity conversations and lower-case / quoted-word
  instructions with mixed answers (neither in the held-out file)."""
  rng = random.Random(f"{seed}-identity")
  out = generate(n, "train", seed)
  for i in range(int(n * identity_fraction)):
    out.insert(rng.randrange(len(out) + 1), dict(id=f"identity-{i}", **identity_sample(rng)))
  rng = random.Random(f"{seed}-mixed")
  for i in range(int(n * mixed_fraction)):
    out.insert(rng.randrange(len(out) + 1), dict(id=f"mixed-{i}", **instruction_mixed(rng)))
  rng = random.Random(f"{seed}-math-mixed")
  for i in range(int(n * mixed_fraction)):
    out.insert(rng.randrange(len(out) + 1), dict(id=f"math-mixed-{i}", **math_mixed(rng)))
  return out


def ensure_demo_sft(cache_dir: str, n_train: int = 4000, n_eval: int = 200) -> dict[str, str]:
  """Writes train.jsonl / eval.jsonl once (atomically); returns their paths."""
  root = os.path.join(os.path.expanduser(cache_dir), "demo_sft_v4")
  os.makedirs(root, exist_ok=True)
  out = {}
  for split, n in (("train", n_train), ("eval", n_eval)):
    path = os.path.join(root, f"{split}.jsonl")
    if not os.path.exists(path):
      tmp = f"{path}.tmp{os.getpid()}"
      with open(tmp, "w") as f:
        for sample in (training_file_samples(n) if split == "train" else generate(n, split)):
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
  ok = bool(re.fullmatch(r'[A-Za-z]+|"[A-Za-z]+"', reply))  # one word, as the instruction asks
  return ok, ok and reply == answer

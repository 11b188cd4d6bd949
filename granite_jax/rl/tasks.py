"""RL prompt sets: a JSONL file, or the generated demo tasks the tiny model can learn.

A task is dict(prompt_ids, prompt, domain, reference): the chat-rendered prompt
(ending in the assistant generation prompt) as ids and text, the reward domain
(rl/rewards) and what that reward checks against.
JSONL records: {"prompt": str} or {"messages": [...]}, "domain", "reference",
optional "tools" / "documents" (rendered into the system turn).
Demo sets (`rl.prompts=""`; `rl.demo_tasks` picks which), from data/demo_chat.py:
  multidomain  "which number is smaller" -> math (final number), tool calls -> tool_call, lower-case /
               quoted-word instructions -> instruction_following (tool prompts need
               rl.max_prompt_len >= ~350)
  math         "which number is even, a or b" -> math
  chat         the multidomain prompts, scored by the reward model (domain chat)
  identity     "Who are you?" -> identity (names Granite); unanswerable questions -> calibration
               (abstain); "which number is larger" -> calibration (answer right, do not abstain)
Held-out (eval) prompts never occur among the training prompts: held-out operand pairs, cities,
words x phrasings, identity phrasings and people (tests/rl/test_demo_tasks.py).
"""
from __future__ import annotations

import json
import random

from granite_jax.data import demo_chat
from granite_jax.data.chat_template import encode_chat
from granite_jax.rl.rewards.tool_call import tool_call_reward  # noqa: F401 - the demo tool reward

DEMO_SETS = ("multidomain", "math", "chat", "identity")
# Each RL set holds what SFT gets right part of the time: a group whose samples all score the
# same has zero advantage (no gradient). SFT follows the upper-case instruction every time and
# gets sums right ~6% of the time, so neither is here; the lower-case / quoted-word instructions
# and "which number is smaller / even" the SFT file answers right half the time
# (demo_chat.instruction_mixed, math_mixed; MIXED_RIGHT). Smaller is multidomain's, even is
# rl_math's: the stage that trains on one is the one whose figure shows it.
MULTIDOMAIN_MAKERS = (demo_chat.smaller, demo_chat.tool_call, demo_chat.instruction_style)
IDENTITY_PROMPTS = demo_chat.IDENTITY_TRAIN + demo_chat.IDENTITY_EVAL  # train / held-out phrasings
OTHER_NAMES = ["ChatGPT", "Claude", "Llama", "Gemini"]
PEOPLE = ["Mara Quist", "Tobin Vale", "Ilse Varga", "Odo Brandt", "Nell Ashby", "Per Lund"]
UNKNOWABLE = ["What is the phone number of {p}?", "What did {p} eat for breakfast yesterday?",
              "How many coins are in {p}'s pocket right now?"]


def _demo_task(s: dict, which: str) -> dict:
  kind = s["kind"]
  if which == "chat":
    return dict(messages=s["messages"][:-1], tools=s.get("tools"), domain="chat", reference=s["answer"])
  if kind == "arithmetic":
    return dict(messages=s["messages"][:-1], domain="math", reference=s["answer"])
  if kind == "tool":
    return dict(messages=s["messages"][:-1], tools=s["tools"], domain="tool_call", reference=s["answer"])
  ref = [{"type": demo_chat.STYLES[s.get("style", "upper")][2]}, {"type": "keywords", "words": [s["answer"].strip('"')]},
         {"type": "word_count", "max": 1}]
  return dict(messages=s["messages"][:-1], domain="instruction_following", reference=ref)


# The identity set's share of "Who are you?" prompts; the rest split evenly between unanswerable
# and answerable questions. The SFT samples already name Granite half the time and RLHF takes that
# most of the way (held-out identity reward after RLHF: 0.67-1.0 in the demo runs), so identity
# prompts mostly give equal rewards in a group (no gradient); calibration is what the stage still
# has to teach (0.03-0.11 after RLHF).
IDENTITY_SHARE = 0.2


def _identity_task(rng: random.Random, split: str) -> dict:
  r = rng.random()
  people = PEOPLE[:4] if split == "train" else PEOPLE[4:]
  if r < IDENTITY_SHARE:
    q = rng.choice(demo_chat.IDENTITY_TRAIN if split == "train" else demo_chat.IDENTITY_EVAL)
    return dict(messages=[{"role": "user", "content": q}], domain="identity",
                reference={"name": "Granite", "forbidden": OTHER_NAMES})
  if r < (1 + IDENTITY_SHARE) / 2:
    q = rng.choice(UNKNOWABLE).format(p=rng.choice(people))
    return dict(messages=[{"role": "user", "content": q}], domain="calibration", reference={"answerable": False})
  # Answerable: a question SFT answers right most of the time (which number is larger: ~88% held
  # out; sums: 6%), so the reward measures calibration, not arithmetic.
  s = demo_chat.compare(rng, split)
  return dict(messages=s["messages"][:-1], domain="calibration",
              reference={"answerable": True, "answer": s["answer"]})


def demo_records(which: str, n: int, split: str, seed: int = 0) -> list[dict]:
  if which not in DEMO_SETS:
    raise ValueError(f"rl.demo_tasks={which!r} is not one of {list(DEMO_SETS)}")
  if which == "identity":
    rng = random.Random(f"{seed}-identity-{split}")
    return [_identity_task(rng, split) for _ in range(n)]
  if which == "math":
    rng = random.Random(f"{seed}-math-{split}")
    return [_demo_task(demo_chat.even(rng, split), which) for _ in range(n)]
  if which == "multidomain":
    rng = random.Random(f"{seed}-multidomain-{split}")
    return [_demo_task(rng.choice(MULTIDOMAIN_MAKERS)(rng, split), which) for _ in range(n)]
  return [_demo_task(s, which) for s in demo_chat.generate(n, split, seed=seed)]


def read_jsonl(path: str) -> list[dict]:
  out = []
  with open(path) as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      try:
        r = json.loads(line.rstrip("\n"))
      except ValueError as e:
        msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ValueError(f"{path}: line {i + 1}: not JSON ({msg})") from None
      if not isinstance(r, dict) or "domain" not in r or "reference" not in r or \
         ("prompt" not in r and "messages" not in r):
        raise ValueError(f"{path}: line {i + 1} needs 'prompt' or 'messages', 'domain' and 'reference'")
      if "prompt" in r:
        r = dict(r, messages=[{"role": "user", "content": r["prompt"]}])
      out.append(dict(r, record=f"{path}:{i + 1}"))  # [rewards] named in reference errors
  return out


def encode_tasks(tok, records: list[dict], max_prompt_len: int) -> tuple[list[dict], dict[str, int]]:
  """-> (tasks, {domain: prompts left out for exceeding rl.max_prompt_len})."""
  tasks, dropped = [], {}
  for r in records:
    ids, _ = encode_chat(tok, r["messages"], r.get("tools"), r.get("documents"), add_generation_prompt=True)
    if len(ids) > max_prompt_len:
      dropped[r["domain"]] = dropped.get(r["domain"], 0) + 1
      continue
    tasks.append(dict(prompt_ids=ids.tolist(), prompt=tok.decode(ids.tolist(), skip_special_tokens=False),
                      domain=r["domain"], reference=r["reference"], record=r.get("record")))
  return tasks, dropped


def load_tasks(rl, tok, split: str, n_demo: int, seed: int = 0) -> list[dict]:
  """Train or eval tasks from rl.prompts / rl.eval_prompts, else the demo set rl.demo_tasks."""
  path = rl.prompts if split == "train" else rl.eval_prompts
  field = "rl.prompts" if split == "train" else "rl.eval_prompts"
  records = read_jsonl(path) if path else demo_records(rl.demo_tasks, n_demo, split, seed)
  if not records:
    raise ValueError(f"{field}={path!r}: no records (empty file)")
  tasks, dropped = encode_tasks(tok, records, rl.max_prompt_len)
  n_dropped = sum(dropped.values())
  if not tasks:
    raise ValueError(f"{field}={path!r}: no prompt fits rl.max_prompt_len={rl.max_prompt_len} "
                     f"({n_dropped} too long)")
  if n_dropped:  # never silent: a whole domain can vanish this way
    where = path or f"demo set {rl.demo_tasks!r}"
    per = ", ".join(f"{d} {n}" for d, n in sorted(dropped.items()))
    print(f"granite_jax: {field} ({where}): {n_dropped} of {len(records)} prompts are longer than "
          f"rl.max_prompt_len={rl.max_prompt_len} and left out ({per})", flush=True)
  return tasks

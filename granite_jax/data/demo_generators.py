"""Procedural text generators for the demo corpus (math, code, CoT, languages, domains).

Each takes a `random.Random` so a fixed seed gives the same text everywhere.
"""
from __future__ import annotations

import random

_NAMES = ["Maria", "Ken", "Aisha", "Luca", "Priya", "Tom", "Yuki", "Omar", "Lena", "Diego"]
_ITEMS = ["apples", "books", "marbles", "stickers", "coins", "pencils", "cookies", "stamps"]


def math_problem(rng: random.Random) -> str:
  """Arithmetic word problem or equation with a worked answer."""
  kind = rng.randrange(4)
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  if kind == 0:
    a, b, c, d = rng.randint(5, 90), rng.randint(2, 9), rng.randint(2, 20), rng.randint(1, 30)
    ans = a + b * c - d
    return (f"Question: {name} has {a} {item}. {name} buys {b} boxes with {c} {item} each and gives away "
            f"{d}. How many {item} does {name} have now?\nAnswer: {a} + {b} * {c} - {d} = {ans}. "
            f"The answer is {ans}.")
  if kind == 1:
    x, a, b = rng.randint(-20, 20), rng.randint(2, 12), rng.randint(-50, 50)
    return (f"Solve for x: {a}x + ({b}) = {a * x + b}.\nSolution: subtract {b} from both sides to get "
            f"{a}x = {a * x}, then divide by {a}. x = {x}.")
  if kind == 2:
    a, b = rng.randint(10, 999), rng.randint(10, 99)
    return f"Compute {a} * {b}.\n{a} * {b} = {a * b}.\nCompute {a} + {b}.\n{a} + {b} = {a + b}."
  n, p = rng.randint(20, 400), rng.choice([10, 20, 25, 50, 75])
  return (f"Question: A shop sells {n} {item} per week. Sales grow by {p}% next week. How many {item} "
          f"are sold next week?\nAnswer: {n} * (1 + {p}/100) = {n * (100 + p) / 100:g}.")


_VARS = ["values", "items", "data", "numbers", "scores", "counts", "weights"]
_OPS = [("+", "total"), ("*", "product"), ("max", "largest"), ("min", "smallest")]


def code_function(rng: random.Random) -> tuple[str, str]:
  """Returns (one-line task description, Python source of a small function)."""
  var, (op, what) = rng.choice(_VARS), rng.choice(_OPS)
  k = rng.randint(1, 9)
  name = f"{what}_of_{var}"
  cond = rng.choice([f"x > {k}", f"x % {k + 1} == 0", f"x != {k}"])
  if op in ("max", "min"):
    body = (f"    best = None\n    for x in {var}:\n        if {cond} and (best is None or x {'>' if op == 'max' else '<'} best):\n"
            f"            best = x\n    return best\n")
  else:
    init = "0" if op == "+" else "1"
    body = f"    acc = {init}\n    for x in {var}:\n        if {cond}:\n            acc = acc {op} x\n    return acc\n"
  task = f"return the {what} of the elements x of `{var}` with {cond}"
  src = f"def {name}({var}: list[int]) -> int | None:\n    \"\"\"Return the {what} of {var} where {cond}.\"\"\"\n{body}"
  if rng.random() < 0.5:
    sample = [rng.randint(0, 20) for _ in range(rng.randint(3, 7))]
    src += f"\n\nif __name__ == \"__main__\":\n    print({name}({sample}))\n"
  return task, src


def long_cot(rng: random.Random) -> str:
  """Multi-step arithmetic with a <think> trace, then the final answer."""
  terms = [rng.randint(11, 999) for _ in range(rng.randint(4, 12))]
  mult = rng.randint(2, 19)
  lines = [f"Question: What is ({' + '.join(map(str, terms))}) * {mult}?", "<think>"]
  acc = 0
  for i, t in enumerate(terms, 1):
    lines.append(f"Step {i}: running sum {acc} + {t} = {acc + t}.")
    acc += t
  tens, ones = divmod(mult, 10)
  lines.append(f"Step {len(terms) + 1}: split {mult} into {tens * 10} + {ones}.")
  lines.append(f"Step {len(terms) + 2}: {acc} * {tens * 10} = {acc * tens * 10} and {acc} * {ones} = {acc * ones}.")
  lines.append(f"Step {len(terms) + 3}: {acc * tens * 10} + {acc * ones} = {acc * mult}. Check: {acc * mult} / {mult} = {acc}.")
  lines += ["</think>", f"The answer is {acc * mult}."]
  return "\n".join(lines)


# Parallel phrase tables: (English, French, Spanish, German).
_SUBJ = [("The cat", "Le chat", "El gato", "Die Katze"), ("My brother", "Mon frère", "Mi hermano", "Mein Bruder"),
         ("The teacher", "Le professeur", "El profesor", "Der Lehrer"), ("Our neighbour", "Notre voisin", "Nuestro vecino", "Unser Nachbar"),
         ("The child", "L'enfant", "El niño", "Das Kind")]
_VERB = [("eats", "mange", "come", "isst"), ("reads", "lit", "lee", "liest"), ("buys", "achète", "compra", "kauft"),
         ("sees", "voit", "ve", "sieht"), ("prepares", "prépare", "prepara", "bereitet")]
_OBJ = [("an apple", "une pomme", "una manzana", "einen Apfel"), ("a letter", "une lettre", "una carta", "einen Brief"),
        ("the newspaper", "le journal", "el periódico", "die Zeitung"), ("some bread", "du pain", "pan", "Brot"),
        ("a big cake", "un grand gâteau", "un pastel grande", "einen großen Kuchen")]
_WHERE = [("in the garden", "dans le jardin", "en el jardín", "im Garten"), ("at the station", "à la gare", "en la estación", "am Bahnhof"),
          ("in the kitchen", "dans la cuisine", "en la cocina", "in der Küche"), ("near the river", "près de la rivière", "cerca del río", "am Fluss")]
_WHEN = [("every morning", "chaque matin", "cada mañana", "jeden Morgen"), ("on Sunday", "le dimanche", "el domingo", "am Sonntag"),
         ("tonight", "ce soir", "esta noche", "heute Abend"), ("after school", "après l'école", "después de la escuela", "nach der Schule")]
LANGS = ("English", "French", "Spanish", "German")


def sentence(rng: random.Random) -> tuple[str, ...]:
  """One sentence in all of LANGS (same meaning, index-aligned)."""
  parts = [rng.choice(t) for t in (_SUBJ, _VERB, _OBJ, _WHERE, _WHEN)]
  return tuple(" ".join(p[i] for p in parts) + "." for i in range(len(LANGS)))


def multilingual_doc(rng: random.Random) -> str:
  lang = rng.randrange(1, len(LANGS))  # non-English only
  return " ".join(sentence(rng)[lang] for _ in range(rng.randint(4, 14)))


_COMPANIES = ["Northwind Ltd", "Acme Corp", "Globex", "Initech", "Umbrella Holdings", "Vandelay Industries"]
_SYMPTOMS = ["persistent cough", "mild fever", "lower back pain", "headache", "shortness of breath", "fatigue"]
_DUTIES = ["deliver the goods", "pay the outstanding invoice", "notify the other party in writing",
           "return all confidential material", "maintain adequate insurance"]


def domain_doc(rng: random.Random) -> str:
  """Finance, legal or medical boilerplate with random particulars."""
  kind = rng.randrange(3)
  if kind == 0:
    co, q, rev, g = rng.choice(_COMPANIES), rng.randint(1, 4), rng.randint(50, 5000), rng.uniform(-15, 30)
    margin = rng.uniform(2, 35)
    return (f"{co} quarterly report, Q{q}. Revenue was ${rev} million, a change of {g:+.1f}% year over year. "
            f"Operating margin stood at {margin:.1f}%. Earnings per share were ${rng.uniform(0.1, 9):.2f}. "
            f"Management expects {'continued growth' if g > 0 else 'a recovery'} in the next fiscal year, "
            f"citing {'strong demand' if g > 5 else 'cost reductions'}.")
  if kind == 1:
    clauses = []
    for n in range(1, rng.randint(3, 7)):
      a, b = rng.sample(_COMPANIES, 2)
      clauses.append(f"Section {n}. {a} (the \"Supplier\") shall {rng.choice(_DUTIES)} within "
                     f"{rng.choice([5, 10, 14, 30, 60])} days of written request by {b} (the \"Client\").")
    return "\n".join(clauses)
  age, days, temp = rng.randint(18, 90), rng.randint(1, 21), rng.uniform(36.2, 39.8)
  sym = rng.choice(_SYMPTOMS)
  return (f"Clinical note. A {age}-year-old patient presented with {sym} for {days} days. "
          f"Temperature {temp:.1f} °C, heart rate {rng.randint(55, 120)} bpm, blood pressure "
          f"{rng.randint(100, 160)}/{rng.randint(60, 100)} mmHg. Assessment: "
          f"{'likely viral infection' if temp > 37.5 else 'non-specific symptoms'}. Plan: follow-up in "
          f"{rng.choice([3, 7, 14])} days.")


# Keys of the synthetic retrieval documents. Disjoint from the keys of the NIAH eval
# (granite_jax.eval.niah.KEYS; a test checks), so the eval asks about keys never trained on.
RETRIEVAL_KEYS = ["maple", "cobalt", "lantern", "meadow", "pepper", "orbit", "tundra", "velvet", "anchor",
                  "basalt", "cedar", "dune", "fjord", "glacier", "hazel", "indigo", "juniper", "kelp",
                  "lotus", "marble", "nutmeg", "onyx", "pebble", "quartz", "raven", "sequoia", "thistle",
                  "umber", "walnut", "yarrow", "zephyr", "birch", "coral", "daisy", "ferret", "garnet"]


def retrieval_doc(rng: random.Random, sentences: list[str], n_chars: int) -> str:
  """A key-value lookup over a haystack of ~n_chars: RULER-style synthetic long-context data.

  Needles ("One of the special magic numbers for {key} is: {value}.") sit at a random
  depth of real text; the document ends with the question and its answer, so the
  answer is only learnable by attending back to the needle. Kinds mirror the NIAH
  eval's: one needle, several keys (one asked), several values, variable tracking.
  """
  hay: list[str] = []
  while sum(map(len, hay)) < n_chars:
    hay.append(rng.choice(sentences))
  value = lambda: str(rng.randint(1_000_000, 9_999_999))
  kind = rng.randrange(4)
  if kind == 3:  # variable tracking: a chain of assignments
    v = str(rng.randint(10_000, 99_999))
    names = [f"X{rng.randint(10, 99)}{c}" for c in "ABCD"[:rng.randint(2, 4)]]
    needles = [f"VAR {names[0]} = {v}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
    tail = (f"Question: Find all variables that are assigned the value {v}. "
            f"Answer: the variables assigned {v} are: {', '.join(names)}.")
  else:
    keys = rng.sample(RETRIEVAL_KEYS, 4 if kind == 1 else 1)
    pairs = [(keys[0], value()) for _ in range(3 if kind == 2 else 1)] + [(k, value()) for k in keys[1:]]
    needles = [f"One of the special magic numbers for {k} is: {x}." for k, x in pairs]
  slots = sorted(rng.randint(0, len(hay)) for _ in needles)
  for i, nd in enumerate(needles):  # in order: a chain reads forward
    hay.insert(slots[i] + i, nd)
  if kind != 3:
    asked = [nd for nd in hay if nd.startswith(f"One of the special magic numbers for {keys[0]} is:")]
    values = [nd.rsplit(" ", 1)[1].rstrip(".") for nd in asked]  # in text order
    plural = "numbers" if kind == 2 else "number"
    tail = (f"Question: What is the special magic {plural} for {keys[0]} mentioned in the text? Answer: "
            f"The special magic {plural} for {keys[0]} mentioned in the text is: {', '.join(values)}.")
  return " ".join(hay) + "\n" + tail


# Copy documents' length in characters of real text, log-uniform (~2.7 characters per demo token):
# the short ones fit one 256-token pretraining row, the long ones span the 1-2K-token LCE rows.
COPY_CHARS = (150, 3000)
# ~2.5 demo tokens per random word: a block's pair of spans and its text fit one 256-token row.
COPY_SPAN_WORDS = (5, 16)
COPY_BLOCK_CHARS = 250


def copy_doc(rng: random.Random, sentences: list[str], n_chars: int, words: list[str]) -> str:
  """Real text in which spans of random words recur, as names, identifiers and quotes do.

  A span is words drawn independently from `words` (the pool's vocabulary): nothing before it
  predicts it (so it cannot be memorized across documents), only its first occurrence predicts
  the repeat. The text is cut in blocks of ~COPY_BLOCK_CHARS; each block gets two spans, each
  recurring, at its sentence boundaries (gaps inside one pretraining row, which is where
  copying forms), and every second block one span recurring in a later block (gaps up to the
  document's length, for the LCE rows). ~16% of a 256-token row's tokens repeat something earlier
  in the row (v4, 1-3 spans of 20-50 words at uniform positions: ~5%).
  """
  span = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(*COPY_SPAN_WORDS)))
  blocks: list[list[str]] = []
  total = 0
  while total < n_chars or not blocks:
    block: list[str] = []
    while sum(map(len, block)) < COPY_BLOCK_CHARS and total < n_chars:
      block.append(rng.choice(sentences))
      total += len(block[-1])
    for _ in range(2):
      a, b = sorted(rng.sample(range(len(block) + 1), 2)) if block else (0, 0)
      s = span()
      block.insert(b, s)  # the later slot first, so `a` still indexes the same boundary
      block.insert(a, s)
    blocks.append(block)
  for _ in range(len(blocks) // 2):  # long-range recurrences, across blocks
    i, j = sorted(rng.sample(range(len(blocks)), 2))
    s = span()
    blocks[j].insert(rng.randrange(len(blocks[j]) + 1), s)
    blocks[i].insert(rng.randrange(len(blocks[i]) + 1), s)
  return " ".join(x for block in blocks for x in block)

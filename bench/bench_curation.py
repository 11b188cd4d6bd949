"""Curation throughput: the rule + dedup stages on synthetic chat samples (issue 5: >= 20,000/min).

  python -m bench.bench_curation                    # 20,000 samples, whitespace token counts
  python -m bench.bench_curation --tokenizer demo   # token counts with the demo BPE

Samples mix plain dialogue, tool calls (JSON-schema validated), RAG documents,
~5% exact and ~5% near duplicates and a few defects, with a 100-text leakage
index. Prints a table and writes bench/results/bench_curation.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

from granite_jax.sft.curation.config import CurationConfig
from granite_jax.sft.curation.pipeline import Curator
from granite_jax.sft.curation.records import parse_line

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_TOOL = {"name": "search", "description": "web search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "k": {"type": "integer", "minimum": 1}},
    "required": ["query"]}}


def synthetic_lines(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
  rng = random.Random(seed)
  vocab = [f"w{i}" for i in range(5000)]
  text = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
  lines, samples = [], []
  for i in range(n):
    r = rng.random()
    if samples and r < 0.05:
      s = dict(rng.choice(samples), id=i)  # exact duplicate
    elif samples and r < 0.10:
      base = rng.choice(samples)
      msgs = [dict(m) for m in base["messages"]]
      msgs[-1]["content"] += " " + text(2)  # near duplicate
      s = dict(base, id=i, messages=msgs)
    elif r < 0.30:
      s = dict(id=i, tools=[_TOOL], messages=[
          dict(role="user", content=text(20)),
          dict(role="assistant", content="", tool_calls=[dict(name="search", arguments=dict(query=text(4), k=3))]),
          dict(role="tool", content=text(60)), dict(role="assistant", content=text(80))])
    elif r < 0.45:
      s = dict(id=i, documents=[dict(title="doc", text=text(300))],
               messages=[dict(role="user", content=text(15)), dict(role="assistant", content=text(60))])
    else:
      turns = rng.randint(1, 3)
      s = dict(id=i, messages=[dict(role="system", content="You are helpful.  \n")] + [
          dict(role=role, content=text(rng.randint(10, 150)))
          for _ in range(turns) for role in ("user", "assistant")])
    samples.append(s)
    lines.append(json.dumps(s) if rng.random() > 0.002 else '{"broken": ')
  return lines, [text(40) for _ in range(100)]


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--samples", type=int, default=20_000)
  ap.add_argument("--tokenizer", default=None)
  a = ap.parse_args()
  lines, evals = synthetic_lines(a.samples)
  cfg = CurationConfig(tokenizer=a.tokenizer, max_tokens=1024)
  from granite_jax.sft.curation.rules import RuleStage
  curator = Curator(cfg, rules=RuleStage(cfg, eval_texts=evals))
  t0 = time.perf_counter()
  records = [parse_line(line, i) for i, line in enumerate(lines)]
  parse_s = time.perf_counter() - t0
  for k in range(0, len(records), cfg.chunk_size):
    curator.process(records[k:k + cfg.chunk_size])
  rules_s, dedup_s = curator.seconds["rules"], curator.seconds["dedup"]
  total = parse_s + rules_s + dedup_s
  buckets: dict[str, int] = {}
  for r in records:
    key = r.reasons[0].split(":")[0] if r.reasons else r.bucket
    buckets[key] = buckets.get(key, 0) + 1
  rows = [("parse", parse_s), ("rules", rules_s), ("dedup", dedup_s), ("parse+rules+dedup", total)]
  print(f"curation bench: {a.samples:,} samples, tokenizer {curator.rules.counter.name}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
  print(f"{'stage':<20}{'seconds':>10}{'samples/min':>14}")
  for name, s in rows:
    print(f"{name:<20}{s:>10.2f}{60 * a.samples / s:>14,.0f}")
  print("outcomes:", json.dumps(buckets, sort_keys=True))
  os.makedirs(RESULTS_DIR, exist_ok=True)
  out = os.path.join(RESULTS_DIR, "bench_curation.json")
  with open(out, "w") as f:
    json.dump(dict(samples=a.samples, tokenizer=curator.rules.counter.name, cpus=os.cpu_count(),
                   seconds={n: round(s, 3) for n, s in rows},
                   samples_per_min=round(60 * a.samples / total), outcomes=buckets), f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()

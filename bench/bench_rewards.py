"""Rollout-scoring throughput: the bounded worker pool vs the old in-process loop.

  python -m bench.bench_rewards                       # 512 responses, pools of 1, 2 and 4 workers
  python -m bench.bench_rewards --n 1024 --workers 8

A synthetic rollout batch of `--n` responses across the built-in domains, in the mix of a
multi-domain RL step: math (sympy equivalence of LaTeX answers; half right, half wrong), multiple
choice, instruction following, structured output (JSON schema), text2sql (SQLite) and tool calls.
Numbers differ per response (seeded), so sympy's cache does not turn the repeats into lookups.
"old loop": `rewards.score(make_rewards(), ...)` per response in this process, as before issue 16.
"pool W": `RewardScorer.score` of the whole batch over W worker processes (time limit and RLIMIT_AS
on); worker start-up (imports, once per run) is reported apart and not in the rate.
responses/s = n / the fastest of --repeats timed passes. Results: bench/results/rewards.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

DB = """CREATE TABLE emp(id INTEGER PRIMARY KEY, name TEXT, dept TEXT, salary REAL);
INSERT INTO emp VALUES (1,'ann','eng',120.0),(2,'bob','eng',100.0),(3,'cid','ops',90.0);"""
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def batch(n: int, seed: int = 0) -> tuple[list, list, list, list]:
  rng = random.Random(seed)
  prompts, responses, refs, domains = [], [], [], []
  cons = [{"type": "word_count", "max": 20}, {"type": "keywords", "words": ["granite"]},
          {"type": "no_commas"}]
  for i in range(n):
    kind = i % 8
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    if kind < 3:
      ref = f"\\frac{{{a}}}{{{b}}}"
      resp = [f"so the answer is \\boxed{{{a / b:.12f}}}", f"\\boxed{{\\dfrac{{{2 * a}}}{{{2 * b}}}}}",
              f"The answer is {a + b}.", f"\\boxed{{{a}x^2 + {b}}}"][rng.randrange(4)]
      d = "math"
    elif kind == 3:
      d, ref, resp = "science", "ABCD"[a % 4], f"Reasoning... answer is ({'ABCD'[b % 4]})"
    elif kind == 4:
      d, ref, resp = "instruction_following", cons, " ".join(["granite"] * (a % 25))
    elif kind == 5:
      d, ref, resp = "structured_output", SCHEMA, json.dumps({"name": f"n{a}", "age": b if a % 2 else str(b)})
    elif kind == 6:
      d, ref = "text2sql", {"schema": DB, "gold": f"SELECT name FROM emp WHERE salary > {a % 130}"}
      resp = f"```sql\nSELECT name FROM emp WHERE salary > {b % 130}\n```"
    else:
      d, ref = "tool_call", json.dumps({"name": "add", "arguments": {"a": a, "b": b}}, sort_keys=True)
      call = {"name": "add", "arguments": {"a": a, "b": b if i % 3 else a}}
      resp = f"<tool_call>{json.dumps(call)}</tool_call>"
    prompts.append(f"question {i}"), responses.append(resp), refs.append(ref), domains.append(d)
  return prompts, responses, refs, domains


def old_loop(p, r, refs, d) -> list[float]:
  from granite_jax.rl.rewards import Reward, make_rewards, score
  from granite_jax.rl.rewards.tool_call import tool_call_reward
  rewards = make_rewards()
  rewards["tool_call"] = Reward("tool_call", tool_call_reward)
  return [score(rewards, *x) for x in zip(d, p, r, refs)]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--n", type=int, default=512)
  ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--timeout-s", type=float, default=10.0)
  a = ap.parse_args()
  from ml_collections import ConfigDict

  from granite_jax.rl.rewards.scorer import build_rewards
  data = [batch(a.n, seed) for seed in range(a.repeats + 1)]  # pass 0 warms caches and imports
  rows, ref_scores = [], None

  def timed(fn):
    times, out = [], None
    for k, d in enumerate(data):
      t = time.perf_counter()
      out = fn(*d)
      if k:
        times.append(time.perf_counter() - t)
      elif fn is old_loop:
        nonlocal ref_scores
        ref_scores = list(out)
    return min(times)

  t_old = timed(old_loop)
  rows.append(dict(name="old in-process loop", workers=0, seconds=t_old, rate=a.n / t_old, startup_s=0.0))
  for w in a.workers:
    t0 = time.perf_counter()
    scorer = build_rewards(ConfigDict(dict(reward_workers=w, reward_timeout_s=a.timeout_s,
                                           reward_memory_mb=2048)))
    scorer.score(*batch(8, 99))  # waits for the workers to start
    startup = time.perf_counter() - t0
    got = scorer.score(*data[0])[0]
    assert [round(x, 6) for x in got] == [round(x, 6) for x in ref_scores], "pool and old loop disagree"
    t = timed(lambda *d: scorer.score(*d))
    scorer.close()
    rows.append(dict(name=f"pool, {w} worker{'s' * (w > 1)}", workers=w, seconds=t, rate=a.n / t,
                     startup_s=startup))
  print(f"\nrollout scoring, {a.n} responses, {os.cpu_count()} CPUs ({platform.machine()})")
  print("| scorer | responses/s | s per batch | vs old loop | worker start-up s |\n|---|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['name']} | {r['rate']:.0f} | {r['seconds']:.3f} | {r['rate'] / rows[0]['rate']:.2f}x | "
          f"{r['startup_s']:.1f} |")
  os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
  with open(os.path.join(os.path.dirname(__file__), "results", "rewards.json"), "w") as f:
    json.dump(dict(n=a.n, cpus=os.cpu_count(), rows=rows), f, indent=2)


if __name__ == "__main__":
  main()

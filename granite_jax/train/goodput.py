"""Goodput: productive step time / wall time across every attempt (restart) of a run, from the
run's own timeline (timeline.py). `python -m granite_jax.train.goodput WORKDIR [--json]`.

Terms (they add up to the wall time, from the first attempt's process start to the last line):
  productive   `step` time (dispatch + waiting on the device) of steps that were kept
  startup      process start to the first step (imports, JAX, restore, data set-up) + compile
  data         data waits and host-to-device time of kept steps
  checkpoint   the blocking part of saves;  eval: held-out evaluation
  sync         waiting to agree with the other processes;  other: logging and host overhead
  lost         all the time of steps logged past the checkpoint the next attempt resumed from:
               work a crash threw away and that was done again
  down         from an attempt's last line to the next attempt's process start: the crash itself
               (including any unlogged work after the last log step) and the wait for a restart
  unaccounted  what is left (clock drift between time.time and the loop's clock; ~0)
Lost steps are counted at the granularity of the log (every step with train.log_every=1). A last
attempt that ended without an end line is taken as crashed: its work past its newest checkpoint
counts as lost until a restart says otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any, Sequence

from granite_jax.train import timeline as timeline_lib

TERMS = ("productive", "startup", "data", "checkpoint", "eval", "sync", "other", "lost", "down", "unaccounted")
LABELS = {"productive": "productive steps", "startup": "start-up + compile", "data": "data wait + host->device",
          "checkpoint": "checkpoint (blocking)", "eval": "eval", "sync": "waiting on other processes",
          "other": "other host work", "lost": "lost (steps redone)", "down": "down (crash / restart gap)",
          "unaccounted": "unaccounted"}
_PART_TERM = {"step": "productive", "data": "data", "h2d": "data", "ckpt": "checkpoint", "eval": "eval",
              "sync": "sync", "other": "other", "compile": "startup", "startup": "startup"}


@dataclasses.dataclass
class Goodput:
  wall: float
  terms: dict[str, float]
  lost_steps: int
  attempts: list[dict[str, Any]]

  @property
  def goodput(self) -> float:
    return self.terms["productive"] / self.wall if self.wall > 0 else 0.0

  @property
  def crashes(self) -> int:
    return sum(a["status"] == "crashed" for a in self.attempts)


def _split(records: Sequence[dict]) -> list[list[dict]]:
  attempts: list[list[dict]] = []
  for r in records:
    if r.get("event") == "start":
      attempts.append([r])
    elif attempts:
      attempts[-1].append(r)
  return attempts


def _began(start: dict) -> float:
  return start.get("process_start") or start["t"] - start.get("sec", {}).get("startup", 0.0)


def compute(records: Sequence[dict]) -> Goodput:
  attempts = _split(records)
  if not attempts:
    raise ValueError("no run attempts in the timeline (no 'start' line)")
  terms = dict.fromkeys(TERMS, 0.0)
  lost_steps, summary, prev_last = 0, [], None
  for i, a in enumerate(attempts):
    start, recs = a[0], a[1:]
    began = _began(start)
    terms["startup"] += start["t"] - began
    if prev_last is not None:
      terms["down"] += max(0.0, began - prev_last)
    end = recs[-1] if recs and recs[-1].get("event") == "end" else None
    steps = [r["step"] for r in recs if "step" in r]
    last_step = max(steps, default=start["step"])
    if i + 1 < len(attempts):
      cutoff = attempts[i + 1][0]["step"]
    elif end is not None and end.get("status") in ("done", "preempted"):
      cutoff = math.inf
    else:  # not (yet) restarted: only what the newest save of this attempt holds would survive
      cutoff = max([r["step"] for r in recs if r.get("event") == "ckpt"], default=start["step"])
    prev = start["step"]
    for r in recs:
      s = r.get("step", prev)
      frac = (s - max(prev, cutoff)) / (s - prev) if s > prev and s > cutoff else 0.0
      for part, sec in r.get("sec", {}).items():
        term = _PART_TERM.get(part)
        if term is None:
          continue
        if term == "startup":
          terms[term] += sec
        else:
          terms["lost"] += sec * frac
          terms[term] += sec * (1 - frac)
      prev = max(prev, s)
    lost = max(0, last_step - cutoff) if cutoff != math.inf else 0
    lost_steps += lost
    status = end.get("status", "?") if end else ("crashed" if i + 1 < len(attempts) else "running or crashed")
    summary.append(dict(attempt=i + 1, resumed_from=start["step"], last_step=last_step, status=status,
                        lost_steps=lost))
    prev_last = recs[-1]["t"] if recs else start["t"]
  wall = prev_last - _began(attempts[0][0])
  terms["unaccounted"] = wall - sum(v for k, v in terms.items() if k != "unaccounted")
  return Goodput(wall=wall, terms=terms, lost_steps=lost_steps, attempts=summary)


def summary_line(g: Goodput, workdir: str) -> str:
  crashes = f", {g.crashes} crash(es), {g.lost_steps} step(s) lost" if g.crashes else ""
  return (f"goodput {100 * g.goodput:.1f}%: {g.terms['productive']:.1f} s of productive steps in "
          f"{g.wall:.1f} s wall over {len(g.attempts)} attempt(s){crashes}; terms: "
          f"python -m granite_jax.train.goodput {workdir}")


def table(g: Goodput) -> str:
  lines = ["| term | seconds | share of wall |", "|---|---:|---:|"]
  for k in TERMS:
    label = LABELS[k] + (f", {g.lost_steps} step(s)" if k == "lost" else "")
    lines.append(f"| {label} | {g.terms[k]:.2f} | {100 * g.terms[k] / max(g.wall, 1e-9):.1f}% |")
  lines.append(f"| **wall** | **{g.wall:.2f}** | 100.0% |")
  for a in g.attempts:
    fresh = "fresh" if a["resumed_from"] == 0 else f"resumed from step {a['resumed_from']}"
    lost = f", {a['lost_steps']} step(s) past the checkpoint redone" if a["lost_steps"] else ""
    lines.append(f"attempt {a['attempt']}: {fresh} -> step {a['last_step']}, {a['status']}{lost}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m granite_jax.train.goodput", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdir", help="a run's workdir (holds timeline.jsonl)")
  p.add_argument("--json", action="store_true", help="print the numbers as JSON")
  a = p.parse_args(argv)
  records = timeline_lib.read(a.workdir)
  if not records:
    p.error(f"no {timeline_lib.NAME} in {a.workdir}; is it a run workdir?")
  g = compute(records)
  if a.json:
    print(json.dumps(dict(goodput=g.goodput, wall=g.wall, lost_steps=g.lost_steps, terms=g.terms,
                          attempts=g.attempts), indent=2))
  else:
    print(f"goodput of {a.workdir}: {100 * g.goodput:.1f}% (productive step time / wall time over "
          f"{len(g.attempts)} attempt(s))")
    print(table(g))
  return 0


if __name__ == "__main__":
  sys.exit(main())

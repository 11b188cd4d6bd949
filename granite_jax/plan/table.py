"""docs/stages.md: every stage in configs/ x {3b, 8b, 30b} (where the recipe has it) on its GB200
layout, dry-run: compiles, XLA GiB/GPU, planner GiB/GPU, fits.

  nice -n 15 python -m granite_jax.plan.table > docs/stages.md     # ~1 h on 2 quiet CPU cores
  python -m granite_jax.plan.table --results=docs/stages.jsonl > docs/stages.md  # resumable
  python -m granite_jax.plan.table --results=docs/stages.jsonl --verify > docs/stages.md
  python -m granite_jax.plan.table --presets=8b --stages=sft,rl_math

Stages whose programs are identical (phases 1-4; the four RL stages) compile once.
`--verify` makes a stored results file current: every stored stage is lowered at this commit
(seconds, no compile) and its programs' fingerprints (dry_run.fingerprint) compared with the
stored ones; a stage whose programs changed, or that has no fingerprint, is compiled again.
docs/stages.jsonl (committed) holds the results behind docs/stages.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import sys

from granite_jax.cli import git_commit
from granite_jax.plan import dry_run, stages

GIB = 2**30


def collect(names, presets, results_path: str = "", compile_missing: bool = True,
            verify: bool = False) -> list[dict]:
  """Dry-runs every (stage, preset) in this process (it must not have started JAX's backend).

  With `results_path` (JSONL), each result is appended as it comes and a rerun resumes: stages
  already there are not compiled again (nor their twins with the same programs). `verify`: stored
  stages whose programs lower differently at this commit are compiled again (`stale_stages`)."""
  import json
  old: list[dict] = []
  if results_path and os.path.exists(results_path):
    with open(results_path) as f:
      old = [json.loads(line) for line in f if line.strip()]
  if verify and old:
    stale = stale_stages(old)
    old = [r for r in old if (r["stage"], r["preset"]) not in stale]
  have = {(r["stage"], r["preset"]) for r in old}
  done: dict[str, list[dict]] = {}
  keys: dict = {}
  for r in old:  # keyed as this commit keys programs (the file may be older)
    if "xla" in r or "planner" in r:
      k = (r["stage"], r["preset"])
      if k not in keys:
        keys[k] = dry_run.program_key(stages.load(r["stage"], r["preset"], r.get("racks") or None))
      done.setdefault(keys[k], []).append(r)
  done = {k: [r for r in rows if r["stage"] == rows[0]["stage"] and r["preset"] == rows[0]["preset"]]
          for k, rows in done.items()}
  specs = [(s, p, None) for s in names for p in presets if (s, p) not in have and compile_missing]
  out: list[dict] = list(old)
  sink = open(results_path, "a") if results_path else None

  class Split(io.TextIOBase):  # RESULT lines are collected, the progress goes to stderr
    def write(self, text):
      for line in text.splitlines(keepends=True):
        if line.startswith("RESULT "):
          out.append(json.loads(line[len("RESULT "):]))
          if sink:
            sink.write(json.dumps(out[-1]) + "\n")
            sink.flush()
        else:
          sys.stderr.write(line)
      return len(text)

  if specs:
    with contextlib.redirect_stdout(Split()):
      dry_run.run_specs(specs, done)
  if sink:
    sink.close()
  last = {(r["stage"], r["preset"], r["program"]): r for r in out}  # a stage compiled twice: the later
  out = list(last.values())
  order = {(s, p): i for i, (s, p) in enumerate((s, p) for s in names for p in presets)}
  missing = [dict(stage=s, preset=p, program="-", error="not run: the dry run was stopped before this stage")
             for (s, p) in order if not any((r["stage"], r["preset"]) == (s, p) for r in out)]
  return sorted(out + missing, key=lambda r: order.get((r["stage"], r["preset"]), len(order)))


def stale_stages(old: list[dict]) -> set[tuple[str, str]]:
  """(stage, preset) of stored results whose programs do not lower, at this commit, to the
  fingerprints stored with them (or have none). Lowers each distinct program set once."""
  stored: dict = {}
  for r in old:
    if r.get("program", "-") != "-":
      stored.setdefault((r["stage"], r["preset"], r.get("racks") or None), {})[r["program"]] = r.get("lowered_sha")
  configs = {k: stages.load(*k) for k in stored}
  if configs:
    dry_run.prepare_devices(max(stages.devices(dry_run.one_rack(c)) for c in configs.values()))
  now: dict[str, dict] = {}
  stale = set()
  for k, c in configs.items():
    key = dry_run.program_key(c)
    if key not in now:
      try:
        now[key] = dry_run.fingerprints(c)
      except Exception as e:  # noqa: BLE001 - cannot be built any more: compile it again (and fail there)
        now[key] = {"error": repr(e)}
    same = now[key] == stored[k]
    sys.stderr.write(f"verify {k[0]}:{k[1]}: {'unchanged' if same else 'changed: compiles again'}\n")
    if not same:
      stale.add(k[:2])
  return stale


def planner_now(r: dict) -> float:
  """The planner's figure for a result's program at this commit (results may be older)."""
  from granite_jax.plan.programs import estimates
  try:
    c = stages.load(r["stage"], r["preset"], r.get("racks") or None)
    return estimates(dry_run.one_rack(c))[r["program"]].total
  except (ValueError, KeyError):
    return r["planner"]


def render(results: list[dict], command: str = "python -m granite_jax.plan.table > docs/stages.md") -> str:
  import jax
  hbm = dry_run.HBM_GB * 1e9 / GIB
  lines = [
      "# Every stage at real size on its GB200 layout",
      "",
      f"Generated by `{command}` (commit {git_commit()}, "
      f"jax {jax.__version__}, {datetime.date.today()}). Each row is one jitted program of the stage, "
      "lowered and compiled by XLA for the stage's real mesh of fake CPU devices from abstract inputs "
      "(`launch/run.py --config=configs/gb200.py:STAGE,SIZE,RACKS --dry_run` does the same for one "
      f"stage). XLA GiB/GPU = arguments + outputs - donated + temporaries of XLA's buffer assignment; "
      f"planner = `python -m granite_jax.plan`'s estimate (docs/planner.md); fits = XLA's figure within "
      f"{dry_run.FIT_FRACTION:.0%} of the {dry_run.HBM_GB:.0f} GB ({hbm:.0f} GiB) HBM of a GB200. "
      "XLA:CPU stands in the blockwise kernel for cuDNN flash attention. Layouts: configs/gb200.py.",
      "",
      "| stage | size | GPUs (mesh) | program | shapes | compiles | XLA GiB/GPU | planner GiB/GPU | fits |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  notes: dict[str, list[str]] = {}
  for r in results:
    if r.get("program") == "-" and "not part of" in r.get("error", ""):
      lines.append(f"| {r['stage']} | {r['preset']} | - | - | - | not in the recipe at this size | | | |")
      continue
    gpus = f"{r.get('gpus', '')} ({r.get('mesh', '')})" if r.get("mesh") else ""
    if "xla" in r:
      xla, comp = f"{r['xla'] / GIB:,.1f}", "yes"
    else:
      xla, comp = "", f"NO: {r.get('error', '')[:160]}"
    plan = f"{planner_now(r) / GIB:,.1f}" if "planner" in r else ""
    fit = "yes" if r.get("fits") else ("**NO**" if "xla" in r else "")
    shapes = r.get("shapes", "") + (" per rack" if r.get("compiled_for") else "")
    lines.append(f"| {r['stage']} | {r['preset']} | {gpus} | {r['program']} | {shapes} | "
                 f"{comp} | "
                 f"{xla} | {plan} | {fit} |")
    key = f"{r['stage']}:{r['preset']}"
    if r.get("batch_note"):
      notes.setdefault(f"the layout changes the batch: {r['batch_note']}", []).append(key)
    advice = stages._configs().DOES_NOT_FIT.get((r["stage"], r["preset"])) or r.get("does_not_fit")
    if not r.get("fits") and advice:
      notes.setdefault(f"does not fit. What to change: {advice}", []).append(key)
  if notes:  # one note per text, naming every stage it is about
    lines += ["", "Notes (from configs/gb200.py):", ""]
    lines += [f"- {', '.join(dict.fromkeys(keys))}: {text}" for text, keys in notes.items()]
  lines += rl_step_lines(results)
  if any(r.get("compiled_for") for r in results):
    lines += ["", "\"per rack\": racks that only add data parallelism run the same per-GPU program, so "
              "one rack's share is compiled (XLA:CPU needs hours for 1152 fake devices)."]
  return "\n".join(lines) + "\n"


def rl_step_lines(results: list[dict]) -> list[str]:
  """The RL stages' step on paper (plan/rl_time.py via estimate.rl_step_of), one row per RL stage x size in `results`."""
  from granite_jax.plan.estimate import rl_step_of
  rl_stages = stages._configs().RL_STAGES
  seen = dict.fromkeys((r["stage"], r["preset"]) for r in results if r["stage"] in rl_stages and "xla" in r)
  if not seen:
    return []
  out = ["", "## The RL step on paper", "",
         "Seconds per on-policy step on the stage's GB200 layout, phases one after another "
         "(`plan/rl_time.py`; the decode bandwidth model and its assumptions: docs/planner.md). "
         "Estimates from peak and bandwidth figures, not measurements.", "",
         "| stage | size | rollout (reshard + prefill + decode) | decode steps x s/step | scoring | "
         "log-probs | train | step | rollout share |", "|---|---|---|---|---|---|---|---|---|"]
  for stage, preset in seen:
    s = rl_step_of(stage, preset)
    out.append(f"| {stage} | {preset} | {s['rollout_s']:.1f} ({s['reshard_s']:.2f} + {s['prefill_s']:.2f} + "
               f"{s['decode_s']:.1f}) | {s['decode_steps']} x {s['decode_step_s'] * 1e3:.2f} ms | "
               f"{s['score_s']:.1f} | {s['logprobs_s']:.1f} | {s['train_s']:.1f} | {s['total_s']:.1f} | "
               f"{s['rollout_s'] / s['total_s']:.0%} |")
  return out


def main(argv: list[str]) -> int:
  ap = argparse.ArgumentParser(prog="python -m granite_jax.plan.table", description=__doc__.split("\n")[0])
  ap.add_argument("--stages", default=",".join(stages.STAGES))
  ap.add_argument("--presets", default=",".join(stages.PRESETS))
  ap.add_argument("--results", default="", help="JSONL of results: appended as they come; a rerun resumes")
  ap.add_argument("--render_only", action="store_true", help="only render --results (no compiles)")
  ap.add_argument("--verify", action="store_true",
                  help="compile again the stored stages whose programs changed since (fingerprints)")
  a = ap.parse_args(argv)
  names, presets = a.stages.split(","), a.presets.split(",")
  results = collect(names, presets, a.results, compile_missing=not a.render_only, verify=a.verify)
  command = " ".join(["python -m granite_jax.plan.table", *argv, "> docs/stages.md"])
  sys.stdout.write(render(results, command))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

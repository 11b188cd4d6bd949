"""`python -m granite_jax.demo --workdir runs/demo [--quick] [--stages a,b] [--dry-run]`

Runs the tiny pipeline's stages in order (pretraining: a copy warm-up, then the copy-rich
mixture; LCE, SFT, reward model, the four RL stages), each as its `launch/run.py` command
(granite_jax/demo/stages.py), then measures its target metric before and after
(granite_jax/demo/measure.py), and writes WORKDIR/report.json, WORKDIR/report.md and
WORKDIR/plots/. Resumable stage by stage: a stage with
WORKDIR/<stage>/stage.json is skipped; an interrupted one is rerun and its run resumes from its
own checkpoint. `--quick`: 2-3 steps per stage and small evals (tests the orchestration only).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time

from granite_jax.cli import git_commit
from granite_jax.demo import measure, periodic, report
from granite_jax.demo.stages import NAMES, STAGES, command, load_done, save_done


def run_stage(stage, workdir: str, quick: bool, log=print) -> dict:
  cmd = command(stage, workdir, quick)
  os.makedirs(os.path.join(workdir, stage.name), exist_ok=True)
  if stage.periodic:  # the stage's data.sources files, written on first use
    periodic.ensure_periodic_docs(os.path.join(workdir, "cache"))
  log(f"== {stage.name}: {' '.join(cmd)}")
  t0 = time.time()
  with open(os.path.join(workdir, stage.name, "run.log"), "a") as f:
    rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
  if rc:
    raise SystemExit(f"demo: stage {stage.name} failed (exit {rc}); see {os.path.join(workdir, stage.name, 'run.log')}; "
                     f"rerun the same command to resume")
  wall = time.time() - t0
  t1 = time.time()
  m = measure.measure(stage, workdir, quick, log)
  short = " ".join(c for c in cmd[1:] if not c.startswith("--config.model.") and not c.startswith("--config.data.mixture."))
  record = dict(name=stage.name, command=" ".join(cmd), command_short=short, wall_s=wall,
                measure_s=time.time() - t1, commit=git_commit(), **m)
  save_done(workdir, stage.name, record)
  log(f"   {stage.name}: {m['metric']}: {m['before']} -> {m['after']} ({wall / 60:.1f} min)")
  return record


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(prog="python -m granite_jax.demo", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--quick", action="store_true", help="2-3 steps per stage: checks the orchestration only")
  p.add_argument("--stages", default="", help=f"comma-separated subset of {','.join(NAMES)} (default all)")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  p.add_argument("--publish", default="", metavar="README",
                 help="after the run: copy the report and plots to docs/demo/ and write its tables into README")
  a = p.parse_args(argv)
  wanted = [s for s in a.stages.split(",") if s] or NAMES
  unknown = [s for s in wanted if s not in NAMES]
  if unknown:
    p.error(f"--stages: unknown stage(s) {unknown}; choose from {NAMES}")
  workdir = os.path.abspath(a.workdir)
  if a.dry_run:
    for s in STAGES:
      if s.name in wanted:
        print(" ".join(command(s, workdir, a.quick)))
    return {}
  os.makedirs(workdir, exist_ok=True)
  records = []
  for s in STAGES:
    if s.name not in wanted:
      continue
    done = load_done(workdir, s.name)
    if done is not None:
      print(f"== {s.name}: done ({done['metric']}: {done['before']} -> {done['after']}), skipped", flush=True)
    else:
      done = run_stage(s, workdir, a.quick, lambda m: print(m, flush=True))
    records.append(done)
    report.write(workdir, records, a.quick)  # after every stage: a partial run has a partial report
  print(f"report: {os.path.join(workdir, 'report.md')}", flush=True)
  out = report.write(workdir, records, a.quick)
  if a.publish:
    report.publish(workdir, a.publish, os.path.join(os.path.dirname(os.path.abspath(a.publish)), "docs", "demo"))
    print(f"published: {a.publish}, docs/demo/", flush=True)
  return out


if __name__ == "__main__":
  main()

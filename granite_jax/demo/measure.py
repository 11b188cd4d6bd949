"""Each demo stage's target metric, before and after the stage.

Evals of checkpoints run as subprocesses of the project's own CLIs and print one JSON line last;
their results are cached as WORKDIR/<stage>/eval_<tag>.json (a resumed pipeline reuses them).
Training-time metrics come from the run's metrics.jsonl.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from granite_jax.demo.stages import LONG, SHORT, Stage
from granite_jax.train.metrics import read_metrics


def _last_json(stdout: str, what: str) -> dict:
  for line in reversed(stdout.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise RuntimeError(f"{what}: no JSON result line in its output:\n{stdout[-2000:]}")


def cached_eval(workdir: str, stage: str, tag: str, cmd: list[str], log) -> dict:
  path = os.path.join(workdir, stage, f"eval_{tag}.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  log(f"  measure: {' '.join(cmd)}")
  p = subprocess.run(cmd, capture_output=True, text=True)
  if p.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
  result = dict(_last_json(p.stdout, cmd[2]), command=" ".join(cmd))
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  return result


def long_eval(workdir: str, stage: str, tag: str, ckpt: str, quick: bool, log) -> dict:
  """`python -m granite_jax.eval` at the LCE length: NIAH, copy ratio in and past the short length."""
  cmd = [sys.executable, "-m", "granite_jax.eval", ckpt, "--length", str(LONG), "--short-length", str(SHORT),
         "--cache-dir", os.path.join(workdir, "cache"), "--copy-distances", f"{SHORT // 2},{2 * SHORT}"]
  cmd += ["--per-depth", "1", "--copy-docs", "2"] if quick else ["--copy-docs", "16"]
  return cached_eval(workdir, stage, tag, cmd, log)


def sft_eval(workdir: str, stage: str, tag: str, ckpt: str, quick: bool, log) -> dict:
  cmd = [sys.executable, "-m", "granite_jax.sft.evaluate", ckpt, "--cache-dir", os.path.join(workdir, "cache"),
         "--n", "8" if quick else "100"]
  return cached_eval(workdir, stage, tag, cmd, log)


def _evals(recs: list[dict], key: str) -> list[dict]:
  return [r for r in recs if key in r]


def _copy_summary(ev: dict) -> dict:
  copy = ev.get("copy", {})
  return dict(copy_inside=copy.get(str(SHORT // 2), {}).get("ratio"),
              copy_past=copy.get(str(2 * SHORT), {}).get("ratio"),
              niah_copy_long=ev.get("niah", {}).get("niah_copy"),
              niah_copy_short=ev.get("niah_short", {}).get("niah_copy"),
              short_loss=ev.get("short_loss"))


def measure(stage: Stage, workdir: str, quick: bool = False, log=print) -> dict:
  """-> dict(metric, before, after, details) for a finished stage."""
  wd = lambda *p: os.path.join(workdir, *p)
  name = stage.name
  if name in ("copy_warmup", "pretrain"):
    recs = read_metrics(wd(name))
    evals = _evals(recs, "eval_loss")
    ev = long_eval(workdir, name, "after", wd(name), quick, log)
    return dict(metric="held-out loss" + (" (periodic documents)" if stage.periodic else ""),
                before=recs[0]["loss"], after=evals[-1]["eval_loss"] if evals else None,
                details=dict(first_train_loss=recs[0]["loss"], **_copy_summary(ev)))
  if name == "lce":
    before = long_eval(workdir, "pretrain", "after", wd("pretrain"), quick, log)
    after = long_eval(workdir, name, "after", wd(name, "merged"), quick, log)
    b, a = _copy_summary(before), _copy_summary(after)
    return dict(metric=f"copy ratio at distance {2 * SHORT} (past the {SHORT}-token pretraining length)",
                before=b["copy_past"], after=a["copy_past"], details=dict(before=b, after=a))
  if name == "sft":
    b = sft_eval(workdir, name, "before", wd("lce", "merged"), quick, log)
    a = sft_eval(workdir, name, "after", wd(name), quick, log)
    return dict(metric="held-out answer accuracy", before=b["all"]["accuracy"], after=a["all"]["accuracy"],
                details=dict(before=b, after=a))
  recs = read_metrics(wd(name))
  if name == "reward_model":
    evals = _evals(recs, "eval_accuracy")
    return dict(metric="held-out pair accuracy", before=evals[0]["eval_accuracy"],
                after=evals[-1]["eval_accuracy"], details={})
  evals = _evals(recs, "eval_reward_mean")
  first, last = evals[0], evals[-1]
  train = [r for r in recs if "kl" in r]
  details = dict(eval_accuracy=[first["eval_accuracy"], last["eval_accuracy"]],
                 eval_reward_mean=[first["eval_reward_mean"], last["eval_reward_mean"]],
                 final_kl=train[-1]["kl"] if train else None,
                 max_kl=max((r["kl"] for r in train), default=None),
                 max_kl_10=max_window_mean([r["kl"] for r in train]))
  key = "eval_reward_mean" if name in ("rlhf", "rl_identity") else "eval_accuracy"
  return dict(metric=stage.metric, before=first[key], after=last[key], details=details)


def max_window_mean(xs: list[float], n: int = 10) -> float | None:
  """The largest mean of n consecutive values (all of them when fewer). A step's KL is measured on
  one batch of 8 prompts, so its maximum over a run is one batch's outlier (a single step
  reached 1.27 while the 10-step means stayed under 0.6); the level the policy drifts to is a
  mean over steps."""
  if not xs:
    return None
  n = min(n, len(xs))
  return max(sum(xs[i:i + n]) / n for i in range(len(xs) - n + 1))

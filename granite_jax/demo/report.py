"""report.json, report.md and plots of a demo pipeline run."""
from __future__ import annotations

import json
import os
import platform
import time

from granite_jax import plot as plot_lib
from granite_jax.cli import git_commit


def _num(x) -> str:
  return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def machine() -> dict:
  return dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count(),
              processor=platform.processor() or platform.machine())


def _d(r: dict, *keys):
  x = r.get("details", {})
  for k in keys:
    x = x.get(k) if isinstance(x, dict) else None
  return x


def targets(records: list[dict]) -> list[dict]:
  """Issue 15's bar for each stage that has one: dict(stage, target, got, met)."""
  by = {r["name"]: r for r in records}
  out = []

  def add(stage, target, got, met):
    out.append(dict(stage=stage, target=target, got=got, met=bool(met)))

  if "pretrain" in by:
    inside = _d(by["pretrain"], "copy_inside")
    if inside is not None:
      add("pretrain", "copy ratio inside the pretraining length <= 0.5", f"{inside:.3f}", inside <= 0.5)
  if "lce" in by:
    b, a = _d(by["lce"], "before") or {}, _d(by["lce"], "after") or {}
    if b.get("copy_past") is not None and a.get("copy_past") is not None:
      add("lce", "copy ratio past the pretraining length, before LCE >= 0.9", f"{b['copy_past']:.3f}",
          b["copy_past"] >= 0.9)
      add("lce", "... after LCE + merge <= 0.6 and >= 0.3 below before",
          f"{a['copy_past']:.3f} ({a['copy_past'] - b['copy_past']:+.3f})",
          a["copy_past"] <= 0.6 and b["copy_past"] - a["copy_past"] >= 0.3)
    if b.get("short_loss") and a.get("short_loss"):
      rel = a["short_loss"] / b["short_loss"] - 1
      add("lce", "held-out loss at the short length within 2% after the merge",
          f"{b['short_loss']:.3f} -> {a['short_loss']:.3f} ({100 * rel:+.1f}%)", rel <= 0.02)
    if b.get("niah_copy_long") is not None and a.get("niah_copy_long") is not None:
      short = b.get("niah_copy_short") or 0.0  # the bar applies where the short-length NIAH is above 0.3
      add("lce", f"NIAH (copy format) at the LCE length rises (short-length NIAH {short:.2f}: "
          f"{'applies' if short > 0.3 else 'n/a, <= 0.3'})", f"{b['niah_copy_long']:.2f} -> {a['niah_copy_long']:.2f}",
          short <= 0.3 or a["niah_copy_long"] > b["niah_copy_long"])
  if "sft" in by and by["sft"]["before"] is not None:
    r = by["sft"]
    add("sft", "held-out answer accuracy rises clearly (+10 points)", f"{r['before']:.2f} -> {r['after']:.2f}",
        r["after"] - r["before"] >= 0.10)
  for name, gain, unit in (("rl_multidomain", 0.20, "accuracy"), ("rl_math", 0.20, "accuracy"),
                           ("rl_identity", 0.30, "reward")):
    if name in by:
      r = by[name]
      add(name, f"held-out {unit} +{gain:.2f}", f"{r['before']:.2f} -> {r['after']:.2f}",
          r["after"] - r["before"] >= gain - 1e-9)
  if "rlhf" in by:
    r = by["rlhf"]
    kl, kl1 = _d(r, "max_kl_10"), _d(r, "max_kl")
    rnd = lambda x: x if x is None else round(x, 3)
    add("rlhf", "reward-model score rises, KL to the reference bounded (10-step mean < 1)",
        f"{r['before']:.3f} -> {r['after']:.3f}, KL: 10-step mean <= {rnd(kl)} (one step's max {rnd(kl1)})",
        r["after"] > r["before"] and kl is not None and kl < 1.0)
  return out


def targets_table(records: list[dict]) -> list[str]:
  rows = targets(records)
  if not rows:
    return []
  return (["| stage | target | got | met |", "|---|---|---|---|"] +
          [f"| {t['stage']} | {t['target']} | {t['got']} | {'yes' if t['met'] else '**no**'} |" for t in rows])


def write(workdir: str, records: list[dict], quick: bool) -> dict:
  """Writes the three outputs for the stages in `records` (done ones); returns the report."""
  report = dict(created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), machine=machine(),
                commit=git_commit(), quick=quick,
                total_wall_s=sum(r.get("wall_s", 0.0) + r.get("measure_s", 0.0) for r in records),
                stages=records, targets=targets(records))
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  plots = _plots(workdir, records)
  lines = [f"# Tiny demo pipeline report{' (--quick)' if quick else ''}", "",
           f"{report['created']}, commit {report['commit']}; {report['machine']['cpus']} CPUs, "
           f"{report['machine']['platform']}; total {report['total_wall_s'] / 60:.1f} min (runs and measurements).", "",
           "| stage | target metric | before | after | run | measure | command |", "|---|---|---|---|---|---|---|"]
  for r in records:
    lines.append(f"| {r['name']} | {r['metric']} | {_num(r['before'])} | {_num(r['after'])} | "
                 f"{r.get('wall_s', 0) / 60:.1f} min | {r.get('measure_s', 0) / 60:.1f} min | `{r['command_short']}` |")
  lines += ["", "Targets (issue 15):", ""] + targets_table(records)
  lines += ["", "Details per stage (report.json has them all):", ""]
  for r in records:
    lines.append(f"- **{r['name']}**: " + json.dumps(r.get("details", {}), default=str)[:600])
  lines += ["", "Plots:", ""] + [f"- [{os.path.relpath(p, workdir)}]({os.path.relpath(p, workdir)})" for p in plots]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return report


def _plots(workdir: str, records: list[dict]) -> list[str]:
  """Each stage's training curves (granite_jax.plot) and one before/after bar chart."""
  out = os.path.join(workdir, "plots")
  paths = []
  for r in records:
    stage_dir = os.path.join(workdir, r["name"])
    if os.path.exists(os.path.join(stage_dir, "metrics.jsonl")):
      paths += plot_lib.plot(stage_dir, os.path.join(out, r["name"]))
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  shown = [r for r in records if isinstance(r["before"], (int, float)) and isinstance(r["after"], (int, float))]
  if shown:
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    xs = range(len(shown))
    ax.bar([x - 0.2 for x in xs], [r["before"] for r in shown], 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [r["after"] for r in shown], 0.4, label="after")
    ax.set_xticks(list(xs), [r["name"] for r in shown], rotation=20)
    ax.set_title("each stage's target metric, before and after (see report.md for the metric)")
    ax.legend()
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "before_after.png")
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
  return paths


START, END = "<!-- demo-report:start -->", "<!-- demo-report:end -->"


def publish(workdir: str, readme: str, docs_dir: str) -> None:
  """Copies report.md/json and the plots to `docs_dir` and writes the report's tables into
  `readme` between the START/END markers (so the README's figures are those of one run)."""
  import shutil
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  os.makedirs(docs_dir, exist_ok=True)
  for name in ("report.md", "report.json"):
    shutil.copy(os.path.join(workdir, name), os.path.join(docs_dir, name))
  plots = os.path.join(workdir, "plots")
  if os.path.isdir(plots):
    shutil.copytree(plots, os.path.join(docs_dir, "plots"), dirs_exist_ok=True)
  rel = os.path.relpath(docs_dir, os.path.dirname(os.path.abspath(readme)))
  m = report["machine"]
  ran = sorted({r.get("commit") or "?" for r in report["stages"]})
  lines = [START, "",
           f"Measured by `python -m granite_jax.demo --workdir runs/demo` (stages run at commit {', '.join(ran)}) "
           f"({report['created']}; {m['cpus']} CPU cores, {m['processor']}, Python {m['python']}): "
           f"**{report['total_wall_s'] / 60:.0f} min** in all. Full report: [{rel}/report.md]({rel}/report.md); "
           f"plots: [{rel}/plots/]({rel}/plots/) (before/after: [{rel}/plots/before_after.png]({rel}/plots/before_after.png)).", "",
           "| stage | target metric | before | after | run | measure |", "|---|---|---|---|---|---|"]
  for r in report["stages"]:
    lines.append(f"| {r['name']} | {r['metric']} | {_num(r['before'])} | {_num(r['after'])} | "
                 f"{r.get('wall_s', 0) / 60:.1f} min | {r.get('measure_s', 0) / 60:.1f} min |")
  lines += ["", "The issue's bar for each stage, from the same run:", ""] + targets_table(report["stages"]) + ["", END]
  with open(readme) as f:
    text = f.read()
  if START not in text or END not in text:
    raise ValueError(f"{readme}: no {START} ... {END} markers to write the demo report between")
  head, rest = text.split(START, 1)
  tail = rest.split(END, 1)[1]
  with open(readme, "w") as f:
    f.write(head + "\n".join(lines) + tail)

"""report.json, report.md and plots of a demo pipeline run."""
from __future__ import annotations

import json
import os
import platform
import time

from granite_jax import plot as plot_lib


def _num(x) -> str:
  return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def machine() -> dict:
  return dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count(),
              processor=platform.processor() or platform.machine())


def write(workdir: str, records: list[dict], quick: bool) -> dict:
  """Writes the three outputs for the stages in `records` (done ones); returns the report."""
  report = dict(created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), machine=machine(),
                quick=quick, total_wall_s=sum(r.get("wall_s", 0.0) for r in records), stages=records)
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  plots = _plots(workdir, records)
  lines = [f"# Tiny demo pipeline report{' (--quick)' if quick else ''}", "",
           f"{report['created']}; {report['machine']['cpus']} CPUs, {report['machine']['platform']}; "
           f"total {report['total_wall_s'] / 60:.1f} min.", "",
           "| stage | target metric | before | after | wall time | command |", "|---|---|---|---|---|---|"]
  for r in records:
    lines.append(f"| {r['name']} | {r['metric']} | {_num(r['before'])} | {_num(r['after'])} | "
                 f"{r.get('wall_s', 0) / 60:.1f} min | `{r['command_short']}` |")
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

"""PNG plots of a run's metrics.jsonl: `python -m granite_jax.plot WORKDIR [--out DIR]`.

Writes into WORKDIR/plots (or --out) one PNG per curve the run logged:
loss.png (train and eval loss) and lr.png against tokens seen for
pretraining/SFT; reward.png, accuracy.png, kl.png and response_length.png
for RL. A figure whose metrics the run never logged is skipped. The x axis is
`tokens_seen` when the records have it, else `step`.
The CLI also draws time.png when the run logged the step-time breakdown (train/timing.py): the
milliseconds of each part per step, stacked, against the step (`breakdown`).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

from granite_jax import metric_names as M

# (file name, y label, metric keys drawn on it: the loops' own names, held-out ones after)
FIGURES: list[tuple[str, str, tuple[str, ...]]] = [
    ("loss", "loss", (M.LOSS, M.EVAL_LOSS)),
    ("lr", "learning rate", (M.LR,)),
    ("reward", "reward", (M.REWARD_MEAN, M.EVAL + M.REWARD_MEAN)),
    ("accuracy", "accuracy", (M.ACCURACY, M.EVAL + M.ACCURACY)),
    ("kl", "KL to the reference policy", (M.KL,)),
    ("response_length", "response length (tokens)", (M.RESPONSE_LEN, M.EVAL + M.RESPONSE_LEN)),
]


def load(workdir: str) -> list[dict[str, Any]]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def series(records: Sequence[dict[str, Any]], key: str, x_key: str) -> tuple[list[float], list[float]]:
  pts = [(r[x_key], r[key]) for r in records
         if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and x_key in r]
  return [p[0] for p in pts], [p[1] for p in pts]


def plot(workdir: str, out: str | None = None) -> list[str]:
  """Writes the PNGs; returns their paths."""
  import matplotlib
  matplotlib.use("Agg")  # headless: no display on servers, CI or Colab kernels
  import matplotlib.pyplot as plt

  records = load(workdir)
  x_key = M.TOKENS_SEEN if any(M.TOKENS_SEEN in r for r in records) else "step"
  out = out or os.path.join(workdir, "plots")
  os.makedirs(out, exist_ok=True)
  written = []
  for name, ylabel, keys in FIGURES:
    drawn = [(k, *series(records, k, x_key)) for k in keys]
    drawn = [d for d in drawn if d[1]]
    if not drawn:
      continue
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, xs, ys in drawn:
      ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=key)
    ax.set_xlabel("tokens seen" if x_key == M.TOKENS_SEEN else "step")
    ax.set_ylabel(ylabel)
    if name == "lr":
      ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{os.path.basename(os.path.abspath(workdir))}: {ylabel}")
    fig.tight_layout()
    path = os.path.join(out, f"{name}.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
  return written


def breakdown(workdir: str, out: str | None = None) -> str | None:
  """time.png: time/<part> of every record, stacked (ms per step); None when none was logged.
  Each record covers the steps since the previous one, so its bar spans them. Compilation is
  named in the legend, not stacked: one first step would flatten every other."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = [r for r in load(workdir) if M.TIME + "wall" in r and "step" in r]
  if not records:
    return None
  steps = [r["step"] for r in records]
  x = [steps[0] - 1] + steps  # the first record covers the steps before it
  fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
  base = [0.0] * len(records)
  for part in M.TIME_PARTS:
    if part == "compile":
      continue
    ys = [1e3 * float(r.get(M.TIME + part, 0.0)) for r in records]
    if not any(ys):
      continue
    top = [b + y for b, y in zip(base, ys)]
    ax.fill_between(x, [base[0]] + base, [top[0]] + top, step="pre", label=part, alpha=0.85, linewidth=0)
    base = top
  compile_s = sum(float(r.get(M.TIME + "compile", 0.0)) for r in records)
  ax.set_xlabel("step")
  ax.set_ylabel("ms per step")
  ax.grid(alpha=0.3)
  ax.legend(title=f"compile {compile_s:.1f} s\n(not drawn)" if compile_s else None, fontsize=8,
            title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not on them
  ax.set_title(f"{os.path.basename(os.path.abspath(workdir))}: where the time goes")
  fig.tight_layout()
  out = out or os.path.join(workdir, "plots")
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "time.png")
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m granite_jax.plot", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdir", help="a run's workdir (holds metrics.jsonl)")
  p.add_argument("--out", default=None, help="where the PNGs go (default WORKDIR/plots)")
  a = p.parse_args(argv)
  path = os.path.join(a.workdir, "metrics.jsonl")
  if not os.path.exists(path):
    p.error(f"no metrics.jsonl in {a.workdir}")
  for f in plot(a.workdir, a.out):
    print(f)
  time_png = breakdown(a.workdir, a.out)
  if time_png:
    print(time_png)


if __name__ == "__main__":
  main()

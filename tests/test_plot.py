"""granite_jax.plot: PNGs from a synthetic metrics.jsonl, named by what the run logged."""
import json
import os
import subprocess
import sys

from granite_jax import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(workdir, records):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG_MAGIC and os.path.getsize(path) > 1000


def test_pretraining_run_gets_loss_and_lr_plots(tmp_path):
  recs = [dict(step=s, loss=5.0 / s, lr=1e-3 * s / 30, tokens_seen=2048 * s) for s in range(1, 31)]
  recs[-1]["eval_loss"] = 0.3
  write_metrics(tmp_path, recs)
  paths = plot.plot(str(tmp_path))
  assert sorted(os.path.basename(p) for p in paths) == ["loss.png", "lr.png"]
  assert all(is_png(p) for p in paths)
  assert all(os.path.dirname(p) == str(tmp_path / "plots") for p in paths)


def test_rl_stats_get_reward_accuracy_length_plots(tmp_path):
  """Records built by the RL loop's own producer of these keys (rollout.reward_stats), not by hand;
  a real RL run's metrics.jsonl is plotted in tests/rl/test_rl_loop.py."""
  import numpy as np
  from ml_collections import ConfigDict

  from granite_jax.rl.rollout import reward_stats

  rl = ConfigDict(dict(correct_threshold=1.0))
  recs = []
  for s in range(1, 6):
    samples = dict(raw=np.array([0.0, 1.0, s / 5]), lengths=np.array([3, 5, s]), truncated=np.zeros(3, bool),
                   tasks=[dict(domain="math")] * 3)
    recs.append(dict(step=s, **reward_stats(samples, rl), **reward_stats(samples, rl, prefix="eval_")))
  write_metrics(tmp_path, recs)
  names = {os.path.basename(p)[:-4] for p in plot.plot(str(tmp_path), str(tmp_path / "out"))}
  assert names == {"reward", "accuracy", "response_length"}


def test_cli_writes_to_workdir_plots(tmp_path):
  write_metrics(tmp_path, [dict(step=1, loss=3.0, lr=1e-4), dict(step=2, loss=2.5, lr=2e-4)])
  out = subprocess.run([sys.executable, "-m", "granite_jax.plot", str(tmp_path)], capture_output=True,
                       text=True, check=True, env=dict(os.environ, MPLBACKEND="Agg"))
  assert out.stdout.split() == [str(tmp_path / "plots" / "loss.png"), str(tmp_path / "plots" / "lr.png")]
  assert is_png(tmp_path / "plots" / "loss.png")


def test_cli_without_metrics_fails(tmp_path):
  out = subprocess.run([sys.executable, "-m", "granite_jax.plot", str(tmp_path)], capture_output=True,
                       text=True)
  assert out.returncode != 0 and "metrics.jsonl" in out.stderr


def test_breakdown_stacks_the_time_parts_the_session_logs(tmp_path):
  """Records carry the names train/timing.py writes (metric_names.TIME + TIME_PARTS, the list
  plot.py draws from); curves keep their own figures, the breakdown is time.png."""
  from granite_jax import metric_names as M

  recs = []
  for s in (1, 10, 20, 30):
    r = dict(step=s, loss=3.0, **{M.TIME + p: 0.001 * (i + 1) for i, p in enumerate(M.TIME_PARTS)
                                  if p != "compile"})
    r[M.TIME + "wall"] = sum(v for k, v in r.items() if k.startswith(M.TIME))
    recs.append(r)
  recs[0][M.TIME + "compile"] = 5.0
  write_metrics(tmp_path, recs)
  assert "time.png" not in {os.path.basename(p) for p in plot.plot(str(tmp_path))}
  path = plot.breakdown(str(tmp_path))
  assert path == str(tmp_path / "plots" / "time.png") and is_png(path)
  out = subprocess.run([sys.executable, "-m", "granite_jax.plot", str(tmp_path)], capture_output=True,
                       text=True, check=True, env=dict(os.environ, MPLBACKEND="Agg"))
  assert out.stdout.split()[-1] == str(tmp_path / "plots" / "time.png")


def test_no_breakdown_without_time_records(tmp_path):
  write_metrics(tmp_path, [dict(step=1, loss=3.0)])
  assert plot.breakdown(str(tmp_path)) is None

"""Goodput from the run's own timeline (train/goodput.py): exact terms on a hand-made timeline of
a crashed and resumed run, the CLI, and a real run killed with SIGKILL and resumed, whose lost
steps must be exactly the steps it logged past the checkpoint the restart resumed from."""
import json
import os
import subprocess
import sys

import pytest

from granite_jax.train import goodput, timeline
from tests.launcher import launch, metrics

# Attempt 1 starts at 100, crashes after logging step 8 (checkpoint at 4); attempt 2 starts at
# 140, resumes from 4 and finishes at 8.
CRASHED_AND_RESUMED = [
    dict(event="start", t=110, step=0, attempt=1, process_start=100, sec=dict(startup=5)),
    dict(event="log", t=120, step=2, sec=dict(compile=4, step=2, data=1, other=1)),
    dict(event="log", t=124, step=4, sec=dict(step=3, data=0.5, other=0.5)),
    dict(event="ckpt", t=126, step=4, sec=dict(ckpt=2)),
    dict(event="log", t=130, step=6, sec=dict(step=3, h2d=1, other=0.5)),
    dict(event="log", t=134, step=8, sec=dict(step=4)),
    dict(event="start", t=150, step=4, attempt=2, process_start=140, sec=dict(startup=6)),
    dict(event="log", t=160, step=6, sec=dict(compile=5, step=4, data=1)),
    dict(event="log", t=164, step=8, sec=dict(step=4)),
    dict(event="ckpt", t=165, step=8, sec=dict(ckpt=1)),
    dict(event="end", t=166, step=8, status="done", sec=dict(other=1)),
]


def write(wd, records):
  os.makedirs(wd, exist_ok=True)
  with open(os.path.join(wd, timeline.NAME), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def test_terms_of_a_crashed_and_resumed_run_are_exact():
  g = goodput.compute(CRASHED_AND_RESUMED)
  assert g.wall == 66  # first process start (100) to the last line (166)
  want = dict(productive=2 + 3 + 4 + 4,         # kept steps: 1-4 of attempt 1, 5-8 of attempt 2
              startup=(110 - 100) + 4 + (150 - 140) + 5,  # process start -> loop, + compiles
              data=1 + 0.5 + 1, checkpoint=2 + 1, eval=0, sync=0, other=1 + 0.5 + 1,
              lost=(3 + 1 + 0.5) + 4,           # steps 5-8 of attempt 1, redone
              down=140 - 134)                   # last line of attempt 1 -> start of attempt 2
  for k, v in want.items():
    assert g.terms[k] == pytest.approx(v), k
  assert g.terms["unaccounted"] == pytest.approx(66 - sum(want.values()))
  assert sum(g.terms.values()) == pytest.approx(g.wall)
  assert g.lost_steps == 4 and g.crashes == 1
  assert g.goodput == pytest.approx(13 / 66)
  assert [(a["resumed_from"], a["last_step"], a["status"]) for a in g.attempts] == [
      (0, 8, "crashed"), (4, 8, "done")]


def test_a_window_half_past_the_checkpoint_is_split_and_an_unrestarted_crash_counts_as_lost():
  # One line covers steps 3-6, the checkpoint is at 4: half of it is lost. No restart yet: the
  # newest checkpoint of the attempt is where a restart would resume.
  recs = [dict(event="start", t=10, step=0, sec=dict(startup=10)),
          dict(event="log", t=12, step=2, sec=dict(step=2)),
          dict(event="ckpt", t=13, step=4, sec=dict(step=0.5, ckpt=0.5)),
          dict(event="log", t=17, step=6, sec=dict(step=4))]
  g = goodput.compute(recs)
  assert g.lost_steps == 2 and g.attempts[0]["status"] == "running or crashed"
  assert g.terms["lost"] == pytest.approx(4 * (6 - 4) / (6 - 4))  # the 4 s line starts at 4
  assert g.terms["productive"] == pytest.approx(2.5) and g.terms["startup"] == pytest.approx(10)
  assert g.wall == pytest.approx(17)


def test_cli_prints_the_table_and_json(tmp_path):
  wd = str(tmp_path)
  write(wd, CRASHED_AND_RESUMED)
  out = subprocess.run([sys.executable, "-m", "granite_jax.train.goodput", wd], capture_output=True,
                       text=True, check=True).stdout
  assert f"goodput of {wd}: {100 * 13 / 66:.1f}%" in out
  assert "| lost (steps redone), 4 step(s) | 8.50 | 12.9% |" in out
  assert "attempt 1: fresh -> step 8, crashed, 4 step(s) past the checkpoint redone" in out
  js = json.loads(subprocess.run([sys.executable, "-m", "granite_jax.train.goodput", wd, "--json"],
                                 capture_output=True, text=True, check=True).stdout)
  assert js["lost_steps"] == 4 and js["terms"]["productive"] == 13
  bad = subprocess.run([sys.executable, "-m", "granite_jax.train.goodput", str(tmp_path / "none")],
                       capture_output=True, text=True)
  assert bad.returncode != 0 and timeline.NAME in bad.stderr


@pytest.mark.slow
def test_sigkill_and_resume_count_the_lost_steps_exactly(tmp_path, demo_cache_dir, monkeypatch):
  """Checkpoints every 4 steps (synchronous), a log line every step, SIGKILL once step 8 is
  dispatched: steps 1-7 were logged, the restart resumes from 4, so steps 5, 6, 7 are lost."""
  flags = ["--config.train.steps=10", "--config.train.log_every=1", "--config.ckpt.every_steps=4",
           "--config.ckpt.async_save=false", "--config.train.eval_batches=0", "--config.train.seq_len=32",
           "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.d_ff=64"]
  wd = str(tmp_path / "run")
  monkeypatch.setenv("GRANITE_FAULT_KILL_STEP", "8")
  r = launch(wd, demo_cache_dir, *flags)
  assert r.returncode == -9, r.stderr[-3000:]
  assert [m["step"] for m in metrics(wd)] == list(range(1, 8))
  monkeypatch.delenv("GRANITE_FAULT_KILL_STEP")
  r = launch(wd, demo_cache_dir, *flags)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step 4" in r.stdout
  assert "1 crash(es), 3 step(s) lost" in r.stdout  # the end-of-run line
  g = goodput.compute(timeline.read(wd))
  assert g.lost_steps == 3
  assert [(a["resumed_from"], a["last_step"], a["status"]) for a in g.attempts] == [
      (0, 7, "crashed"), (4, 10, "done")]
  tl = timeline.read(wd)
  first = tl[:next(i for i, e in enumerate(tl[1:], 1) if e["event"] == "start")]
  lost_lines = [e for e in first if e["event"] == "log" and e["step"] > 4]
  assert [e["step"] for e in lost_lines] == [5, 6, 7]
  assert g.terms["lost"] == pytest.approx(sum(sum(e["sec"].values()) for e in lost_lines))
  assert g.terms["down"] > 0 and g.terms["startup"] > 0 and 0 < g.goodput < 1
  assert abs(g.terms["unaccounted"]) < 0.02 * g.wall
  out = subprocess.run([sys.executable, "-m", "granite_jax.train.goodput", wd], capture_output=True,
                       text=True, check=True).stdout
  assert "lost (steps redone), 3 step(s)" in out

"""Crash and preemption: a SIGKILLed run restarted with the same command reproduces the
uninterrupted losses bitwise (data order included); SIGTERM checkpoints and exits with 42."""
import signal

import pytest

from granite_jax.train.preemption import EXIT_PREEMPTED
from tests.launcher import launch, metrics, start, wait_for_step

STEPS = 14
FLAGS = [f"--config.train.steps={STEPS}", "--config.train.log_every=1", "--config.ckpt.every_steps=3",
         "--config.train.eval_batches=0", "--config.train.seq_len=64", "--config.model.n_layers=2"]


def losses(wd):
  return {m["step"]: m["loss"] for m in metrics(wd)}


@pytest.mark.slow
def test_sigkill_at_several_points_resumes_bitwise(tmp_path, demo_cache_dir):
  ref = str(tmp_path / "ref")
  r = launch(ref, demo_cache_dir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  want = losses(ref)
  assert sorted(want) == list(range(1, STEPS + 1))

  wd = str(tmp_path / "killed")
  for kill_at in (4, 11):  # between checkpoints: the steps after the last one are redone
    p = start(wd, demo_cache_dir, *FLAGS)
    wait_for_step(p, wd, kill_at)
    p.send_signal(signal.SIGKILL)
    p.wait()
  r = launch(wd, demo_cache_dir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step" in r.stdout
  got = losses(wd)
  assert [m["step"] for m in metrics(wd)] == list(range(1, STEPS + 1))  # no duplicated records
  assert got == want  # bitwise equal floats


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_distinctly(tmp_path, demo_cache_dir):
  wd = str(tmp_path / "pre")
  flags = [f if not f.startswith("--config.train.steps") else "--config.train.steps=500" for f in FLAGS]
  flags = [f if not f.startswith("--config.ckpt.every_steps") else "--config.ckpt.every_steps=1000"
           for f in flags]
  p = start(wd, demo_cache_dir, *flags)
  wait_for_step(p, wd, 3)
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=120)
  assert p.returncode == EXIT_PREEMPTED, err[-3000:]
  assert "preempted; checkpoint at step" in out
  stopped = int(out.split("checkpoint at step ")[1].split()[0])
  assert stopped >= 3
  r = launch(wd, demo_cache_dir, *[f.replace("=500", f"={stopped + 2}") for f in flags])
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"resumed from step {stopped}" in r.stdout

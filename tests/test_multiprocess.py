"""Multi-host for real on one machine (jax.distributed + gloo): the same mesh split into 1 x 4,
2 x 2 and 4 x 1 processes x devices trains on the same global batches (each process reads only its
devices' rows of the one global order), and a checkpoint written on one split resumes on another,
continuing exactly where an uninterrupted run would.
"""
import os
import shutil

import numpy as np
import pytest

from launch import local
from tests.launcher import metrics

STEPS, FIRST = 6, 3
OVERRIDES = {"train.log_every": 1, "ckpt.every_steps": FIRST, "train.eval_batches": 0, "train.seq_len": 32,
             "model.n_layers": 1, "model.d_model": 32, "model.d_ff": 64, "mesh.shape": (4, 1, 1),
             "ckpt.async_save": False}


def run(workdir, cache, steps, processes):
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  args = ["--config=configs/phase2.py", f"--workdir={workdir}", f"--config.data.cache_dir={cache}",
          f"--config.train.steps={steps}", *flags]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  log_dir = os.path.join(workdir, f"logs_{processes}x{4 // processes}_{steps}")
  procs = local.start(processes, args, devices=4 // processes, capture_main=True, log_dir=log_dir, base_env=env)
  rc = local.wait(procs, timeout=600)
  logs = []
  for i in range(processes):
    with open(os.path.join(log_dir, f"process_{i}.log")) as f:
      logs.append(f.read())
  assert rc == 0, "\n".join(log[-3000:] for log in logs)
  assert f"{processes} process(es)" in logs[0]
  return logs


def losses(workdir):
  m = metrics(workdir)
  assert [r["step"] for r in m] == list(range(1, len(m) + 1))
  return [r["loss"] for r in m]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_cache_dir):
  """1 process x 4 devices, uninterrupted (its step-FIRST checkpoint kept for the resume tests)."""
  wd = str(tmp_path_factory.mktemp("mp") / "ref")
  run(wd, demo_cache_dir, STEPS, 1)
  return wd, losses(wd)


# Same arithmetic up to the order of cross-process (gloo) vs in-process reductions.
def _close(got, want):
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)


@pytest.mark.slow
def test_process_splits_give_the_same_losses_and_resume_across_them(reference, tmp_path, demo_cache_dir):
  ref_dir, want = reference
  assert len(want) == STEPS

  # 2 x 2 from scratch to FIRST, then resumed on 1 x 4 to the end.
  wd = str(tmp_path / "two_then_one")
  run(wd, demo_cache_dir, FIRST, 2)
  _close(losses(wd), want[:FIRST])
  logs = run(wd, demo_cache_dir, STEPS, 1)
  assert f"resumed from step {FIRST}" in logs[0] and "damaged" not in logs[0]
  _close(losses(wd), want)

  # The 1 x 4 checkpoint of step FIRST resumed on 2 x 2.
  wd = str(tmp_path / "one_then_two")
  shutil.copytree(ref_dir, wd, ignore=shutil.ignore_patterns("logs_*"))
  shutil.rmtree(os.path.join(wd, "ckpt", str(STEPS)))
  shutil.rmtree(os.path.join(wd, "ckpt", "integrity", str(STEPS)), ignore_errors=True)
  logs = run(wd, demo_cache_dir, STEPS, 2)
  assert f"resumed from step {FIRST}" in logs[0] and "damaged" not in logs[0]
  _close(losses(wd), want)

  # 4 x 1.
  wd = str(tmp_path / "four")
  run(wd, demo_cache_dir, FIRST, 4)
  _close(losses(wd), want[:FIRST])

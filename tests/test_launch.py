"""End to end: `launch/run.py` as a user runs it, then resumed from its checkpoint."""
import pytest

from tests.launcher import launch, metrics


@pytest.mark.slow
def test_phase2_runs_learns_and_resumes(tmp_path, demo_cache_dir):
  wd = str(tmp_path / "run")
  common = ["--config.train.log_every=1", "--config.ckpt.every_steps=10", "--config.train.eval_every=10",
            "--config.train.eval_batches=1", "--config.train.seq_len=128"]
  r = launch(wd, demo_cache_dir, "--config.train.steps=20", *common)
  assert r.returncode == 0, r.stderr[-3000:]
  out = r.stdout
  for needle in ("phase2", "tiny", "params", "mesh", "math 35.0%", "schedule", wd):
    assert needle in out, (needle, out)
  m = metrics(wd)
  assert [x["step"] for x in m] == list(range(1, 21))
  assert {"loss", "lr", "tokens_per_sec", "grad_norm"} <= set(m[0])
  assert m[-1]["loss"] < m[0]["loss"] - 0.5
  assert "eval_loss" in m[-1]
  # Same command, more steps: resumes at step 20, does not start over.
  r = launch(wd, demo_cache_dir, "--config.train.steps=25", *common)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step 20" in r.stdout
  m = metrics(wd)
  assert [x["step"] for x in m][-5:] == [21, 22, 23, 24, 25]


@pytest.mark.slow
def test_bad_override_fails_fast_with_the_field(tmp_path, demo_cache_dir):
  r = launch(str(tmp_path / "bad"), demo_cache_dir, "--config.data.sources.math=/no/such/dir")
  assert r.returncode != 0
  assert "/no/such/dir" in r.stderr and "data.sources.math" in r.stderr

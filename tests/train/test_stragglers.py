"""The straggler check (train/stragglers.py): the ranking on given rows, the fault hook's parsing,
and two real processes (launch/local.py) of which one is slowed by GRANITE_FAULT_SLOW_PROCESS:
process 0 must name that one, at every check."""
import os

import numpy as np
import pytest

from granite_jax.train import faults, stragglers
from launch import local
from tests.launcher import metrics


def test_slowest_is_ranked_by_host_time_against_the_median_of_the_others():
  rows = np.array([[0.010, 0.001], [0.012, 0.002], [0.090, 0.080], [0.011, 0.001]])
  f = stragglers.slowest(rows)
  assert f["straggler/process"] == 2
  assert f["straggler/ratio"] == pytest.approx(0.090 / 0.011)
  assert f["straggler/host_ms"] == pytest.approx(90) and f["straggler/data_wait_ms"] == pytest.approx(80)
  assert "process 2 is the slowest host" in stragglers.warning(40, f)
  assert stragglers.warning(40, stragglers.slowest(rows[[0, 1, 3]])) is None  # within 2x: quiet


def test_row_counts_host_parts_only():
  delta = dict(step=5.0, data=0.4, h2d=0.2, other=0.2, sync=3.0, ckpt=1.0, compile=9.0, eval=2.0)
  np.testing.assert_allclose(stragglers.row(delta, 4), [0.8 / 4, 0.4 / 4])


def test_slow_process_hook_parses(monkeypatch):
  monkeypatch.setenv("GRANITE_FAULT_SLOW_PROCESS", "0:0.25")
  assert faults.slow_process_seconds() == 0.25  # this test is process 0
  monkeypatch.setenv("GRANITE_FAULT_SLOW_PROCESS", "1:0.25")
  assert faults.slow_process_seconds() == 0.0
  monkeypatch.setenv("GRANITE_FAULT_SLOW_PROCESS", "slow")
  with pytest.raises(ValueError, match="GRANITE_FAULT_SLOW_PROCESS"):
    faults.slow_process_seconds()


@pytest.mark.slow
def test_two_processes_name_the_slowed_one(tmp_path, demo_cache_dir):
  wd = str(tmp_path / "run")
  overrides = {"train.steps": 6, "train.log_every": 2, "train.straggler_every": 2, "train.eval_batches": 0,
               "train.seq_len": 32, "model.n_layers": 1, "model.d_model": 32, "model.d_ff": 64,
               "mesh.shape": (2, 1, 1), "ckpt.every_steps": 100, "ckpt.async_save": False}
  args = ["--config=configs/phase2.py", f"--workdir={wd}", f"--config.data.cache_dir={demo_cache_dir}",
          *[f"--config.{k}={v}" for k, v in overrides.items()]]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["GRANITE_FAULT_SLOW_PROCESS"] = "1:0.3"  # process 1 (not the one that logs) is the slow host
  log_dir = os.path.join(str(tmp_path), "logs")
  procs = local.start(2, args, devices=1, capture_main=True, log_dir=log_dir, base_env=env)
  rc = local.wait(procs, timeout=600)
  logs = [open(os.path.join(log_dir, f"process_{i}.log")).read() for i in range(2)]
  assert rc == 0, "\n".join(log[-3000:] for log in logs)
  checks = [r for r in metrics(wd) if "straggler/process" in r]
  assert [r["step"] for r in checks] == [2, 4, 6]
  for r in checks:
    assert r["straggler/process"] == 1
    assert r["straggler/host_ms"] >= 300 and r["straggler/ratio"] > 3
  assert "process 1 is the slowest host" in logs[0]

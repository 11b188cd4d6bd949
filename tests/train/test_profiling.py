"""XLA profiles on demand (train/profiling.py), in one real in-process run: a configured window
(profile.steps), a request file written while the job runs, and SIGUSR1. Each trace must be on
disk and parse with the profiler's own reader (jax.profiler.ProfileData, the xplane format
TensorBoard's profile plugin reads), holding exactly its steps' StepTraceAnnotations, with a
Perfetto trace next to it."""
import glob
import gzip
import json
import os
import signal

import jax
import pytest

from configs import phase2
from granite_jax.train import loop, profiling, session


def traced_steps(xplane: str) -> list[int]:
  data = jax.profiler.ProfileData.from_file(xplane)
  steps = []
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        if ev.name == "train":
          steps += [int(v) for k, v in ev.stats if k == "step_num"]
  return sorted(steps)


def test_window_request_file_and_signal_each_write_a_readable_trace(tmp_path, demo_cache_dir):
  c = phase2.get_config("tiny")
  c.model.update(n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  c.train.update(steps=10, seq_len=32, global_batch=8, log_every=2, eval_batches=0)
  c.ckpt.update(every_steps=100, async_save=False)
  c.data.cache_dir = demo_cache_dir
  c.profile.update(steps="2:4", request_steps=2)
  wd = str(tmp_path / "run")
  job = loop.build(c)
  tr = loop.trainer(job)
  real_next = tr.next_batch

  def next_batch(state, data, step):  # an operator, while the job runs
    if step == 4:  # fetching step 5: ask for 3 steps; read at the next log step (6) -> 7, 8, 9
      with open(os.path.join(wd, "profile", "request"), "w") as f:
        f.write("3")
    if step == 9:  # fetching step 10: SIGUSR1 -> this process traces from step 10 (the run ends)
      os.kill(os.getpid(), signal.SIGUSR1)
    return real_next(state, data, step)

  tr.next_batch = next_batch
  os.makedirs(os.path.join(wd, "profile"), exist_ok=True)
  before = signal.getsignal(signal.SIGUSR1)
  session.run(job, wd, tr, progress=False)
  assert signal.getsignal(signal.SIGUSR1) == before  # the run's handler was put back
  found = {}
  for xplane in glob.glob(os.path.join(wd, "profile", "process_0", "steps_*", "plugins", "profile", "*",
                                       "*.xplane.pb")):
    window = int(xplane.split("steps_")[1].split(os.sep)[0])
    found[window] = traced_steps(xplane)
    perfetto = os.path.join(os.path.dirname(xplane), "perfetto_trace.json.gz")
    with gzip.open(perfetto) as f:
      assert json.load(f)["traceEvents"]
  assert found == {2: [2, 3], 7: [7, 8, 9], 10: [10]}


def test_window_and_process_specs():
  assert profiling.parse_windows("5:8, 100:103") == [(5, 8), (100, 103)]
  assert profiling.parse_windows("") == []
  for bad in ("5", "8:5", "0:3", "a:b"):
    with pytest.raises(ValueError, match="profile.steps"):
      profiling.parse_windows(bad)
  assert profiling.chosen("all", 3) and profiling.chosen("0,3", 3) and not profiling.chosen("1", 0)
  with pytest.raises(ValueError, match="profile.processes"):
    profiling.chosen("first", 0)

"""The step-time breakdown (train/timing.py): a real in-process run with known delays put in the
data, host-to-device and checkpoint paths must show each delay in its own part, the parts must
add up to the step's wall time, and MFU is logged without train.peak_flops."""
import json
import os
import time

import jax
import pytest

from configs import phase2
from granite_jax import flops
from granite_jax.ckpt.manager import Checkpointer
from granite_jax.train import loop, session, timing
from granite_jax.train.metrics import read_metrics
from granite_jax.train.tensorboard import read_scalars

DATA_S, H2D_S, SAVE_S = 0.04, 0.03, 0.25
PARTS = ("step", "data", "h2d", "ckpt", "eval", "sync", "other", "compile")


def tiny(cache, steps, **train):
  c = phase2.get_config("tiny")
  c.model.update(n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  c.train.update(steps=steps, seq_len=32, global_batch=8, log_every=2, eval_batches=0, **train)
  c.ckpt.update(every_steps=4, async_save=False)
  c.data.cache_dir = cache
  return c


def test_clock_laps_add_up_to_the_elapsed_time():
  clock = timing.Clock()
  t0 = clock._t
  time.sleep(0.01)
  clock.lap("data")
  time.sleep(0.02)
  clock.lap_split("data", 0.005, "h2d")
  clock.lap("other")
  assert sum(clock.totals.values()) == pytest.approx(clock._t - t0, abs=1e-9)
  assert 0.014 <= clock.totals["data"] < 0.05 and clock.totals["h2d"] >= 0.015
  delta, snap = clock.since(dict(clock.totals))
  assert not any(delta.values()) and snap == clock.totals


def test_known_delays_land_in_their_parts(tmp_path, demo_cache_dir, monkeypatch):
  """next_batch waits DATA_S it reports as data_wait_sec and H2D_S it does not (host-to-device);
  every save takes SAVE_S longer. A part that swallowed another's delay, or lost it, fails."""
  c = tiny(demo_cache_dir, 8)
  job = loop.build(c)
  tr = loop.trainer(job)
  real_next = tr.next_batch

  def slow_next(state, data, step):
    time.sleep(DATA_S)
    batch, extra = real_next(state, data, step)
    time.sleep(H2D_S)
    return batch, dict(extra, data_wait_sec=extra["data_wait_sec"] + DATA_S)

  real_save = Checkpointer.save

  def slow_save(self, step, state, **kw):
    time.sleep(SAVE_S)
    return real_save(self, step, state, **kw)

  monkeypatch.setattr(Checkpointer, "save", slow_save)
  tr.next_batch = slow_next
  wd = str(tmp_path / "run")
  session.run(job, wd, tr, progress=False)
  recs = read_metrics(wd)
  assert [r["step"] for r in recs] == [1, 2, 4, 6, 8]
  for r in recs:
    parts = {p: r.get("time/" + p, 0.0) for p in PARTS}
    assert sum(parts.values()) == pytest.approx(r["time/wall"], rel=1e-9)
    assert DATA_S <= r["time/data"] < DATA_S + 0.02
    assert H2D_S <= r["time/h2d"] < H2D_S + 0.03
    assert r["mfu"] > 0  # no train.peak_flops: the CPU's measured peak
  assert ("time/compile" in recs[0]) and not any("time/compile" in r for r in recs[1:])
  # Saves at steps 4 and 8 (after settling them): step 4's shows in the record of step 6; the
  # final save (step 8) comes after the last record and is in the timeline only.
  by_step = {r["step"]: r for r in recs}
  assert by_step[6]["time/ckpt"] >= SAVE_S / 2 and by_step[4]["time/ckpt"] < SAVE_S / 4
  tb = read_scalars(wd)
  assert [s for s, _ in tb["time/step"]] == [1, 2, 4, 6, 8]
  tl = [json.loads(line) for line in open(os.path.join(wd, "timeline.jsonl"))]
  assert [e["event"] for e in tl] == ["start"] + ["log"] * 3 + ["ckpt", "log", "log", "ckpt", "end"]
  assert [e["step"] for e in tl] == [0, 1, 2, 4, 4, 6, 8, 8, 8]
  assert tl[-1]["status"] == "done" and tl[-2]["sec"]["ckpt"] >= SAVE_S
  # The clock misses nothing: the parts of the lines add up to the timeline's own wall time.
  clocked = sum(sum(e["sec"].values()) for e in tl[1:])
  assert clocked == pytest.approx(tl[-1]["t"] - tl[0]["t"], rel=0.01, abs=0.01)


def test_timing_off_logs_none_of_it(tmp_path, demo_cache_dir):
  c = tiny(demo_cache_dir, 2)
  c.profile.timing = False
  wd = str(tmp_path / "off")
  loop.run(c, wd, progress=False)
  assert not any(k.startswith(("time/", "memory/")) for r in read_metrics(wd) for k in r)
  assert not os.path.exists(os.path.join(wd, "timeline.jsonl"))


def test_peak_table_and_precedence():
  assert flops.table_peak("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.table_peak("NVIDIA H100 PCIe") == 756e12
  assert flops.table_peak("NVIDIA H200") == 989e12
  assert flops.table_peak("NVIDIA B200") == 2.25e15
  assert flops.table_peak("NVIDIA GB200") == 2.5e15  # not B200's entry, though it contains it
  assert flops.table_peak("Some New GPU") == 0.0  # unknown: no MFU rather than a wrong one
  assert flops.device_peak_flops(1e9) == 1e9  # train.peak_flops wins
  assert jax.devices()[0].platform == "cpu"
  measured = flops.device_peak_flops(0.0)
  assert measured > 1e8  # a CPU does at least 0.1 GFLOP/s per (fake) device


def test_device_memory_takes_the_fullest_device_and_stops_asking_a_silent_backend():
  from granite_jax.train.memory import GIB, DeviceMemory

  class Dev:
    def __init__(self, stats):
      self.stats, self.calls = stats, 0

    def memory_stats(self):
      self.calls += 1
      return self.stats

  devs = [Dev(dict(bytes_in_use=2 * GIB, peak_bytes_in_use=3 * GIB, bytes_limit=80 * GIB)),
          Dev(dict(bytes_in_use=5 * GIB, peak_bytes_in_use=6 * GIB, bytes_limit=80 * GIB))]
  assert DeviceMemory(devs).fields() == {"memory/in_use_gib": 5.0, "memory/peak_gib": 6.0,
                                         "memory/limit_gib": 80.0}
  silent = [Dev(None)]
  m = DeviceMemory(silent)
  assert m.fields() == {} and m.fields() == {} and silent[0].calls == 1

"""What the step-time accounting costs (granite_jax/train/timing.py): step time with and without it.

  python -m bench.bench_timing_overhead                # the bench shape (bench/common.py BENCH)
  python -m bench.bench_timing_overhead --shape tiny   # the phase-2 tiny model: a short step

Three measures at the shape, in one run:
1. A/B: whole training runs through the session (the pretraining trainer on the demo corpus,
   one CPU device, log every 10 steps) with `profile.timing` on and off, alternated. The step
   time is taken from the moments the session asks for each batch (a wrapper around
   next_batch, outside the code measured), median over the steps after the first (compile)
   and before the last (final save), median over the repeats. On a shared machine the run-to-run
   noise is larger than the overhead: the table gives each run so the spread is visible.
2. In the runs with timing on: the seconds spent inside the RunTiming calls the session makes
   (each call timed, nested calls once) over the run's wall time from the first to the last
   step. This is the overhead itself, measured where it happens and free of the noise of (1).
3. Direct: the timing code's own cost per step, the exact calls the session makes in a step
   (laps, the iteration and settle snapshots, after_step; at every 10th step a record with
   device memory, a timeline line and the progress-bar field), in a loop of 20,000 steps without
   a model, on minus an empty loop; divided by the step time of (1).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from bench import common

SHAPES = ("bench", "tiny")


def config(shape: str, steps: int, timing: bool):
  from configs import phase2

  c = phase2.get_config("tiny")
  if shape == "bench":
    m = common.BENCH["model"]
    c.model.update(vocab_size=m.vocab_size, d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,
                   n_kv_heads=m.n_kv_heads, head_dim=m.head_dim, d_ff=m.d_ff, dtype=m.dtype,
                   attention_impl=m.attention_impl, remat_policy=m.remat_policy,
                   attention_multiplier=m.attention_multiplier)
    c.train.update(seq_len=common.BENCH["seq_len"], global_batch=common.BENCH["batch"])
  c.train.update(steps=steps, log_every=10, eval_batches=0)
  c.ckpt.update(every_steps=10 ** 9, async_save=False)  # one save, after the last step
  c.profile.timing = timing
  return c


METERED = ("started", "iteration", "settling", "lap_data", "begin", "annotation", "dispatched",
           "after_step", "record", "saved", "end", "postfix")


def metered(spent: list[float]):
  """A RunTiming whose calls add their seconds to spent[0] (an outer call only: nested ones are
  inside it)."""
  from granite_jax.train.timing import RunTiming

  depth = [0]

  def timed(fn):
    def call(*args, **kw):
      depth[0] += 1
      t = time.perf_counter()
      try:
        return fn(*args, **kw)
      finally:
        depth[0] -= 1
        if not depth[0]:
          spent[0] += time.perf_counter() - t
    return call

  class Metered(RunTiming):
    def __init__(self, *args, **kw):
      timed(super().__init__)(*args, **kw)
      self.lap = timed(self.lap)

  for name in METERED:
    setattr(Metered, name, timed(getattr(RunTiming, name)))
  return Metered


def run_steps(shape: str, steps: int, timing: bool) -> tuple[list[float], float]:
  """(seconds between successive next_batch calls of one run, i.e. each step's iteration;
  the fraction of the timed steps' wall time spent inside the timing calls)."""
  from granite_jax.train import loop, session

  spent, inside = [0.0], []
  job = loop.build(config(shape, steps, timing))
  tr = loop.trainer(job)
  real_next, stamps = tr.next_batch, []

  def next_batch(state, data, step):
    stamps.append(time.perf_counter())
    return real_next(state, data, step)

  def next_batch_metered(state, data, step):
    if step == 1:  # from here on: the timed steps
      spent[0] = 0.0
    if step == steps - 1:
      inside.append(spent[0])
    return next_batch(state, data, step)

  tr.next_batch = next_batch_metered
  real_timing, session.RunTiming = session.RunTiming, metered(spent)
  try:
    with tempfile.TemporaryDirectory() as wd:
      session.run(job, wd, tr, progress=False)
  finally:
    session.RunTiming = real_timing
  # stamps[k]: next_batch(k); [0] -> [1] holds the compile. Inside: seconds in the timing calls
  # between next_batch(1) and next_batch(steps - 1).
  return list(np.diff(stamps))[1:], inside[0] / (stamps[-1] - stamps[1])


def direct_cost(n: int = 20_000, log_every: int = 10) -> dict[str, float]:
  """Microseconds per step of the session's timing calls: on, off, and an empty loop."""
  from granite_jax.train.timing import RunTiming

  def loop(tm) -> float:
    t0 = time.perf_counter()
    for step in range(n):
      if tm is None:
        continue
      tm.iteration(step)
      tm.lap_data({"data_wait_sec": 0.0})
      tm.lap("h2d")
      tm.begin(step + 1)
      with tm.annotation(step + 1):
        pass
      tm.dispatched()
      tm.lap("ckpt")
      tm.after_step(step + 1, None)
      tm.settling()
      tm.lap("step")
      tm.lap("other")
      tm.lap("sync")
      if (step + 1) % log_every == 0:
        tm.postfix(tm.record(step + 1))
    return (time.perf_counter() - t0) / n * 1e6

  out = {}
  for name, timing in (("on", True), ("off", False)):
    with tempfile.TemporaryDirectory() as wd:
      tm = RunTiming(config("tiny", n, timing), wd, is_main=True, log_every=log_every)
      tm.started(0, n)
      out[name] = min(loop(tm) for _ in range(3))
      tm.end("error", n)
  out["empty"] = min(loop(None) for _ in range(3))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--shape", choices=SHAPES, default="bench")
  p.add_argument("--steps", type=int, default=10, help="steps per run (the first and last are not timed)")
  p.add_argument("--repeats", type=int, default=2, help="runs with timing on and off, alternated")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  runs = []
  for r in range(a.repeats):
    for timing in ((True, False) if r % 2 == 0 else (False, True)):
      times, inside = run_steps(a.shape, a.steps, timing)
      runs.append(dict(timing="on" if timing else "off", repeat=r, median_step_s=statistics.median(times),
                       step_times=times, inside_fraction=inside))
      print(f"repeat {r}: timing {runs[-1]['timing']}: median step {runs[-1]['median_step_s']:.4f} s", flush=True)
  med = {k: statistics.median(x["median_step_s"] for x in runs if x["timing"] == k) for k in ("on", "off")}
  cost = direct_cost()
  direct_us = cost["on"] - cost["empty"]
  rows = [dict(measure="A/B: median step, timing on", value=f"{med['on']:.4f} s"),
          dict(measure="A/B: median step, timing off", value=f"{med['off']:.4f} s"),
          dict(measure="A/B: on / off - 1", value=f"{100 * (med['on'] / med['off'] - 1):+.2f}%"),
          dict(measure="A/B: spread of the runs (max / min - 1)",
               value=f"{100 * (max(x['median_step_s'] for x in runs) / min(x['median_step_s'] for x in runs) - 1):.2f}%"),
          dict(measure="in the runs: time inside the timing calls / wall, on (off)",
               value=f"{100 * max(x['inside_fraction'] for x in runs if x['timing'] == 'on'):.4f}% "
                     f"({100 * max(x['inside_fraction'] for x in runs if x['timing'] == 'off'):.4f}%)"),
          dict(measure="direct: timing calls per step, on (off)",
               value=f"{direct_us:.1f} us ({cost['off'] - cost['empty']:.1f} us)"),
          dict(measure="direct: overhead = calls / step (off)", value=f"{100 * direct_us * 1e-6 / med['off']:.4f}%")]
  title = f"timing overhead | shape {a.shape} | {a.steps} steps x {a.repeats} repeats per setting"
  table = common.print_table(title, rows, ["measure", "value"])
  common.write_json(f"timing_overhead_{a.shape}", dict(shape=a.shape, runs=runs, median_step_s=med,
                                                       direct_us=cost, overhead_pct=100 * direct_us * 1e-6 / med["off"],
                                                       inside_pct=100 * max(x["inside_fraction"] for x in runs
                                                                            if x["timing"] == "on"),
                                                       ab_pct=100 * (med["on"] / med["off"] - 1), table=table), a.out)


if __name__ == "__main__":
  main()

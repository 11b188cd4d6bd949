"""Where a run's time goes: the training loop's wall time cut into parts, each second in one part.

The session calls `lap(part)` at the boundaries of its work; a lap gives the time since the
previous lap to `part`, so the parts add up to the wall time by construction. Parts
(metric_names.TIME_PARTS, and `startup` for the timeline only):
  startup  session start to the first step: restore, data set-up, banner
  compile  the first dispatch of the step in an attempt (trace + XLA compile)
  data     waiting for the batch: a trainer's `data_wait_sec` (the loader's wait, pretraining and
           SFT), else all of its next_batch (RL: the rollouts; the reward model: encoding)
  h2d      the rest of next_batch and the session's to_global: host rows -> global device arrays
  step     dispatching the step and waiting for its results
  ckpt     the blocking part of checkpoint saves, the polls of an async save and its final commit
  eval     held-out evaluation
  sync     agreeing with the other processes (preemption flag, straggler check)
  other    the rest: metrics, logging, the progress bar, Python
A record of step s covers whole iterations: the loop fetches and dispatches step s + 1 before it
settles step s, so that part of the iteration is carried to the next record (`iteration`,
`settling`); each record then holds its own steps' data waits, dispatches and device waits.
Device time adds no sync: the session dispatches step s+1 before it reads the metrics of step s,
and the time it blocks in that late read (plus the dispatch) is `step`. While the device is the
bottleneck that is the device time per step; while the input is, the device work hidden under
the data wait counts as data wait, which is where the wall time went.

`RunTiming` is what the session holds: the clock; per record time/<part> (seconds per step since
the previous record) and time/wall, device memory (memory.py) and the straggler check
(stragglers.py); the timeline for goodput (timeline.py, goodput.py); profiles (profiling.py); the
GRANITE_FAULT_SLOW_PROCESS hook. `profile.timing=false` turns the timing off (the clock,
records, timeline, memory and straggler check; profiles still work):
bench/bench_timing_overhead.py measures what it costs.
"""
from __future__ import annotations

import time
from typing import Any

import jax

from granite_jax.metric_names import TIME, TIME_PARTS
from granite_jax.train import faults, stragglers
from granite_jax.train import timeline as timeline_lib
from granite_jax.train.memory import DeviceMemory
from granite_jax.train.profiling import Profiler

PARTS = TIME_PARTS + ("startup",)


class Clock:
  def __init__(self):
    self.totals = dict.fromkeys(PARTS, 0.0)
    self._t = time.perf_counter()

  def lap(self, part: str) -> None:
    t = time.perf_counter()
    self.totals[part] += t - self._t
    self._t = t

  def lap_split(self, part: str, part_sec: float, rest: str) -> None:
    """Up to `part_sec` of the time since the last lap to `part`, the remainder to `rest`."""
    t = time.perf_counter()
    elapsed = t - self._t
    first = min(max(part_sec, 0.0), elapsed)
    self.totals[part] += first
    self.totals[rest] += elapsed - first
    self._t = t

  def since(self, snapshot: dict[str, float], carry: dict[str, float] | None = None
            ) -> tuple[dict[str, float], dict[str, float]]:
    """(seconds per part since `snapshot` less `carry`, a new snapshot that leaves `carry` to the
    next interval)."""
    cut = {p: self.totals[p] - (carry[p] if carry else 0.0) for p in PARTS}
    return {p: cut[p] - snapshot[p] for p in PARTS}, cut


def _noop(*_):
  pass


class RunTiming:
  def __init__(self, config, workdir: str, *, is_main: bool, log_every: int):
    p = config.get("profile") or {}
    self.on = bool(p.get("timing", True))
    self.workdir, self.is_main, self.log_every = workdir, is_main, log_every
    self.clock = Clock()
    self.lap = self.clock.lap if self.on else _noop
    self.profiler = Profiler(p, workdir)
    self.timeline = timeline_lib.Timeline(workdir, enabled=self.on and is_main)
    self.memory = DeviceMemory()
    every = int(config.train.get("straggler_every", 0) or 0)
    self.straggler_every = every if self.on and jax.process_count() > 1 else 0
    self.slow = faults.slow_process_seconds()
    self._compiled = False
    self._rec = self._tl = self._strag = dict(self.clock.totals)
    self._rec_step = self._strag_step = 0
    self._pending: tuple[int, dict[str, Any]] | None = None  # (step, straggler fields) to log
    self._iter: tuple[int, dict] | None = None  # (steps done, clock) when the loop's iteration began
    self._settle: dict | None = None            # clock when settling the last step began

  def started(self, step: int, steps: int) -> None:
    """Before the first step: what came before it was start-up."""
    self._rec_step = self._strag_step = step
    if not self.on:
      return
    self.lap("startup")
    self._rec = self._strag = dict(self.clock.totals)
    if self.is_main:
      self._write("start", step, attempt=self.timeline.attempt(), steps=steps,
                  processes=jax.process_count(), process_start=timeline_lib.process_start_time())

  def iteration(self, step: int) -> None:
    """Top of the loop, `step` steps done."""
    self.lap("other")
    if self.on:
      self._iter = (step, dict(self.clock.totals))

  def settling(self) -> None:
    """Before the late read of a step's metrics."""
    self.lap("other")
    if self.on:
      self._settle = dict(self.clock.totals)

  def _carry(self, step: int) -> dict[str, float] | None:
    """Settled one step late (in iteration step + 1): the time from that iteration's start to the
    settle belongs to step + 1."""
    if self._iter is None or self._iter[0] != step or self._settle is None:
      return None
    start = self._iter[1]
    return {p: self._settle[p] - start[p] for p in PARTS}

  def lap_data(self, extra: dict) -> None:
    """After next_batch: the trainer's own data wait is `data`, the rest host-to-device."""
    if not self.on:
      return
    wait = extra.get("data_wait_sec") if isinstance(extra, dict) else None
    if wait is None:
      self.clock.lap("data")
    else:
      self.clock.lap_split("data", float(wait), "h2d")

  def begin(self, step: int) -> None:
    if self.profiler.begin(step):
      self.lap("other")

  def annotation(self, step: int):
    return self.profiler.annotation(step)

  def dispatched(self) -> None:
    self.lap("step" if self._compiled else "compile")
    self._compiled = True

  def after_step(self, step: int, outputs) -> None:
    """Once per step, after its dispatch: profile window end, fault hook, requests, stragglers."""
    if self.profiler.end(step, outputs):
      self.lap("step")
    if self.slow:
      time.sleep(self.slow)
    if step % self.log_every == 0:
      self.profiler.poll(step)
    if self.straggler_every and step % self.straggler_every == 0:
      self._check_stragglers(step)

  def _check_stragglers(self, step: int) -> None:
    self.lap("other")
    delta, self._strag = self.clock.since(self._strag)
    rows = stragglers.gather(stragglers.row(delta, step - self._strag_step))
    self._strag_step = step
    self.lap("sync")
    fields = stragglers.slowest(rows)
    self._pending = (step, fields)
    line = stragglers.warning(step, fields) if self.is_main else None
    if line:
      print(line, flush=True)

  def record(self, step: int) -> dict[str, Any]:
    """time/<part> per step since the previous record, time/wall, memory/*, straggler/*."""
    if not self.on:
      return {}
    carry = self._carry(step)
    delta, self._rec = self.clock.since(self._rec, carry)
    n = max(step - self._rec_step, 1)
    self._rec_step = step
    out = {TIME + p: delta[p] / n for p in TIME_PARTS if p != "compile" or delta[p]}
    out[TIME + "wall"] = sum(delta[p] for p in TIME_PARTS) / n
    out.update(self.memory.fields())
    if self._pending is not None and self._pending[0] <= step:  # not on an earlier step's record
      out.update(self._pending[1])
      self._pending = None
    if self.is_main:
      self._write("log", step, carry)
    return out

  def saved(self, step: int) -> None:
    """After ckpt.save returned (its blocking part)."""
    self.lap("ckpt")
    if self.on and self.is_main:
      self._write("ckpt", step)

  def end(self, status: str, step: int) -> str | None:
    """The end record; returns the goodput line for process 0 after a run that finished or was
    preempted."""
    self.profiler.close(step)
    if not self.on:
      return None
    self.lap("other")
    if self.is_main:
      self._write("end", step, status=status)
    self.timeline.close()
    if not self.is_main or status not in ("done", "preempted"):
      return None
    from granite_jax.train import goodput
    return goodput.summary_line(goodput.compute(timeline_lib.read(self.workdir)), self.workdir)

  def _write(self, event: str, step: int, carry: dict | None = None, **fields) -> None:
    delta, self._tl = self.clock.since(self._tl, carry)
    self.timeline.write(event, step=step, **fields, sec={p: round(v, 6) for p, v in delta.items() if v})

  def postfix(self, record: dict) -> dict[str, str]:
    """Progress-bar field: milliseconds per step of the parts over 1% of the wall time."""
    wall = record.get(TIME + "wall")
    if not wall:
      return {}
    parts = [(p, record[TIME + p]) for p in TIME_PARTS
             if TIME + p in record and (p == "step" or record[TIME + p] >= 0.01 * wall)]
    return {"ms": " ".join(f"{p} {_ms(v)}" for p, v in parts)}


def _ms(sec: float) -> str:
  ms = sec * 1e3
  return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


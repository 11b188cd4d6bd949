"""WORKDIR/timeline.jsonl: the run's own append-only record of where its wall time went, across
restarts (goodput.py reads it). Written by process 0, one JSON object a line:

  {"event": "start", "t": unix, "attempt": 2, "step": 40, "steps": 120, "process_start": unix, "sec": {...}}
  {"event": "log",   "t": unix, "step": 50, "sec": {"step": 1.2, "data": 0.01, ...}}
  {"event": "ckpt",  "t": unix, "step": 50, "sec": {...}}    after a save's blocking part
  {"event": "end",   "t": unix, "step": 120, "status": "done" | "preempted" | "error", "sec": {...}}

`step` of a start is the step the attempt resumed from (0: fresh); `sec` holds the seconds each
part of the clock (timing.py) took since the previous line, so the lines of an attempt add up
to its time. A crash (kill -9) leaves an attempt without an end line: the next start says which
step it resumed from, and the steps logged past it are the lost work.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

NAME = "timeline.jsonl"


def process_start_time() -> float | None:
  """Unix time this process started (imports, JAX start-up and restore are start-up time too).
  From the process's age on the boot clock: /proc's boot time is whole seconds, too coarse."""
  try:  # Linux: /proc/self/stat field 22 is the start time in clock ticks after boot
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age
  except (OSError, ValueError, IndexError, AttributeError):
    return None


class Timeline:
  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, NAME)
    self._f = open(self.path, "a") if enabled else None

  def attempt(self) -> int:
    """1 + the number of earlier attempts in this workdir."""
    return 1 + sum(r.get("event") == "start" for r in read(os.path.dirname(self.path)))

  def write(self, event: str, **fields: Any) -> None:
    if self._f is None:
      return
    self._f.write(json.dumps(dict(event=event, t=round(time.time(), 6), **fields)) + "\n")
    self._f.flush()  # on disk before a crash can take it

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
      self._f = None


def read(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, NAME)
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a crash
        continue
  return out

"""Which process holds the others back: every `train.straggler_every` steps each process sends its
per-step times since the last check to all (one small all-gather) and process 0 logs the slowest.

In a synchronous step every process's wall time per step is the same: a slow host makes the
others wait inside the step's collectives. What differs is where the time goes, so a process is
ranked by its *host* time per step, the parts of the clock not spent waiting on the device or on
other processes: data wait + host-to-device + other host work (timing.py). Logged:
straggler/process (the slowest), straggler/ratio (its host time / the median of the others),
straggler/host_ms and straggler/median_host_ms, straggler/data_wait_ms (the slowest's data wait).
"""
from __future__ import annotations

import numpy as np

HOST_PARTS = ("data", "h2d", "other")
WARN_RATIO = 2.0  # print a line when the slowest process has this much more host time


def row(delta: dict[str, float], steps: int) -> np.ndarray:
  """This process's [host seconds, data-wait seconds] per step from the clock's part deltas."""
  n = max(steps, 1)
  return np.asarray([sum(delta.get(p, 0.0) for p in HOST_PARTS) / n, delta.get("data", 0.0) / n], np.float64)


def gather(local: np.ndarray) -> np.ndarray:
  """[processes, 2]: every process's row (a collective: all processes call it at the same step)."""
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(local)).reshape(-1, local.size)


def slowest(rows: np.ndarray) -> dict[str, float]:
  host = rows[:, 0]
  p = int(np.argmax(host))
  others = np.delete(host, p)
  median = float(np.median(others)) if others.size else float(host[p])
  return {"straggler/process": p, "straggler/ratio": float(host[p] / max(median, 1e-9)),
          "straggler/host_ms": float(host[p] * 1e3), "straggler/median_host_ms": median * 1e3,
          "straggler/data_wait_ms": float(rows[p, 1] * 1e3)}


def warning(step: int, f: dict[str, float]) -> str | None:
  if f["straggler/ratio"] < WARN_RATIO:
    return None
  return (f"granite_jax: step {step}: process {f['straggler/process']} is the slowest host: "
          f"{f['straggler/host_ms']:.1f} ms of host work per step vs a median of "
          f"{f['straggler/median_host_ms']:.1f} ms (its data wait {f['straggler/data_wait_ms']:.1f} ms)")

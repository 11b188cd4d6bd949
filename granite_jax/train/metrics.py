"""Metrics sinks: one JSON object per logged step in WORKDIR/metrics.jsonl,
and the same records as TensorBoard scalars in WORKDIR/events.out.tfevents.*."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def _plain(v: Any) -> Any:
  if isinstance(v, (np.generic, np.ndarray)):
    return v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()
  if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
    return v.item()
  return v


class MetricsWriter:
  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self._tb = None
    if enabled and tensorboard:
      from granite_jax.train.tensorboard import TensorBoardWriter
      self._tb = TensorBoardWriter(workdir)

  def truncate_after(self, step: int) -> None:
    """Drops records past `step` (logged by a run that died before checkpointing them)."""
    if not self.enabled:
      return
    if self._tb is not None:
      self._tb.purge_from(step + 1)
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [l for l in f if l.strip()]
    keep = [l for l in lines if json.loads(l).get("step", 0) <= step]
    if len(keep) != len(lines):
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    plain = {k: _plain(v) for k, v in record.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps(plain) + "\n")
      f.flush()
    if self._tb is not None:
      self._tb.write(plain)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]

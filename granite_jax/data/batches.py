"""Global batches of a `GlobalOrder`, each process reading only its devices' rows, through Grain.

`local_rows(sharding, B)` says which rows of a [B, T] global batch this process's devices hold;
`Loader` is a Grain MapDataset over step numbers (step -> those rows of global batch `step`) read
ahead by Grain's threads, and `to_global` assembles the global jax.Arrays from them. So a batch
is the same whatever the process split (1 x 4, 2 x 2, 4 x 1 of one mesh), and a resumed run
starts its Loader at the restored step: there is no iterator state to save.

A data stall (object storage gone quiet) must not hold a run past SIGTERM: `Loader.get` waits in
short slices and raises `StopRequested` when the session's preemption flag is set meanwhile.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import grain
import jax
import numpy as np

_WAIT_SLICE_S = 0.2


class StopRequested(Exception):
  """A stop (SIGTERM) was requested while waiting for data."""


def local_rows(sharding: jax.sharding.Sharding, global_batch: int, seq_len: int = 1) -> np.ndarray:
  """Sorted global row indices of a [global_batch, seq_len] array held by this process's devices."""
  rows = set()
  for idx in sharding.addressable_devices_indices_map((global_batch, seq_len)).values():
    rows.update(range(global_batch)[idx[0]] if idx else range(global_batch))
  return np.asarray(sorted(rows), np.int64)


def to_global(local: dict[str, np.ndarray], row_ids: np.ndarray, sharding, global_batch: int) -> dict:
  """This process's rows (`local[k][i]` is global row `row_ids[i]`) -> global jax.Arrays."""
  where = {int(r): i for i, r in enumerate(row_ids)}

  def one(x):
    shape = (global_batch,) + x.shape[1:]

    def cb(idx):
      rows = range(global_batch)[idx[0]]
      return x[[where[r] for r in rows]][(slice(None),) + tuple(idx[1:])]
    return jax.make_array_from_callback(shape, sharding, cb)
  return {k: one(v) for k, v in local.items()}


class _LoadStep:
  """step -> this process's rows of global batch `step` (a Grain map; picklable for workers)."""

  def __init__(self, order: Any, global_batch: int, row_ids: np.ndarray):
    self.order, self.global_batch, self.row_ids = order, global_batch, row_ids

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    out = self.order.batch(int(step), self.global_batch, self.row_ids)
    out["_step"] = np.int64(step)
    return out


class Loader:
  """Batches of steps start, start + 1, ... read ahead by Grain threads into a bounded queue."""

  def __init__(self, order: Any, global_batch: int, row_ids: np.ndarray, start: int,
               stop: int | None = None, *, threads: int = 2, ahead: int = 2,
               stop_requested: Callable[[], bool] = lambda: False):
    self.row_ids, self.next_step, self.stop_requested = row_ids, start, stop_requested
    steps = grain.MapDataset.range(start, stop if stop is not None else 2**62)
    ds = steps.map(_LoadStep(order, global_batch, row_ids)).to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=ahead))
    self._it = iter(ds)
    self._q: queue.Queue = queue.Queue(maxsize=ahead)
    self._closed = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True, name="granite-data")
    self._thread.start()
    self.wait_s = 0.0  # seconds the last get() waited for its batch

  def _fill(self) -> None:
    while not self._closed.is_set():
      try:
        item = next(self._it)
      except StopIteration:
        item = StopIteration()
      except BaseException as e:  # noqa: BLE001 - handed to the reader, raised there
        item = e
      while not self._closed.is_set():
        try:
          self._q.put(item, timeout=_WAIT_SLICE_S)
          break
        except queue.Full:
          continue
      if isinstance(item, BaseException):
        return

  def get(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of global batch `step` (steps are read in order)."""
    if step != self.next_step:
      raise ValueError(f"the loader is at step {self.next_step}, asked for step {step}")
    t0 = time.perf_counter()
    while True:
      try:
        item = self._q.get(timeout=_WAIT_SLICE_S)
        break
      except queue.Empty:
        if self.stop_requested():
          raise StopRequested(f"stop requested while waiting {time.perf_counter() - t0:.1f}s for "
                              f"the data of step {step + 1}") from None
    self.wait_s = time.perf_counter() - t0
    if isinstance(item, StopIteration):
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    assert int(item.pop("_step")) == step
    self.next_step = step + 1
    return item

  def close(self) -> None:
    self._closed.set()

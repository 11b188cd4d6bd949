"""Orbax checkpoints of the train state.

Each step directory holds the item `state` (TrainState, restored straight into
its shardings). No data position is saved: the data of a step is a function of
the step (data/order.py), so any process count can resume any checkpoint.
(Older checkpoints also hold a per-process `data_iter` item; it is not read.)
Saves are asynchronous; Orbax writes into a temporary directory and renames
it on commit, so a checkpoint interrupted mid-write is never picked up.
Once committed, each process records the size and checksum of the files it
wrote (integrity.py); a restore checks them first, and a damaged step is
moved to `damaged/` so the next older one is used, on every process alike.
Test hook: GRANITE_FAULT_SAVE_FAIL_STEP=N makes the save of step N fail as a
full disk would (the error names the directory; earlier steps stay intact).
"""
from __future__ import annotations

import errno
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from granite_jax.ckpt import integrity


class CheckpointError(RuntimeError):
  pass


class Checkpointer:
  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True,
               verify_checksums: bool = True):
    self.directory = os.path.abspath(directory)
    self.checksums = verify_checksums
    self.async_save = async_save
    self._unsealed = False  # a save whose manifest is not written yet
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mgr.all_steps())

  def save(self, step: int, state: Any, *, force: bool = True) -> bool:
    """Starts saving `step` (asynchronous unless async_save=False); CheckpointError names the place."""
    self._seal()  # the previous async save has committed by now (Orbax waits for it anyway)
    integrity.drop_manifest(self.directory, step, jax.process_index(), jax.process_count())
    items = dict(state=ocp.args.StandardSave(state))
    try:
      if os.environ.get("GRANITE_FAULT_SAVE_FAIL_STEP") == str(step):  # test hook: a disk that refuses
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (GRANITE_FAULT_SAVE_FAIL_STEP)",
                      os.path.join(self.directory, str(step)))
      saved = self._mgr.save(step, args=ocp.args.Composite(**items), force=force)
      self._unsealed = True
      if not self.async_save:
        self._seal()  # committed: record it now, before anything can damage it
      return saved
    except CheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 - whatever the storage says, say where
      raise CheckpointError(f"saving checkpoint step {step} to {self.directory} failed: "
                            f"{type(e).__name__}: {e}; older steps are untouched") from e

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores into `abstract_state`'s shardings."""
    self.check(step)
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    try:
      return self._mgr.restore(step, args=ocp.args.Composite(**items)).state
    except Exception as e:  # noqa: BLE001 - any read failure means this step is unusable
      raise CheckpointError(f"checkpoint step {step} in {self.directory} could not be read: "
                            f"{type(e).__name__}: {e}") from e

  def check(self, step: int) -> None:
    """Raises CheckpointError on every process when any process finds the step damaged."""
    check_step(self.directory, step, checksums=self.checksums)

  def restore_latest_good(self, abstract_state: Any) -> tuple[int, Any] | None:
    """Newest step that restores cleanly, falling back past damaged ones: (step, state) or None."""
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return step, self.restore(step, abstract_state)
      except CheckpointError as e:
        logging.error("%s; falling back to an older checkpoint", e)
        print(f"granite_jax: {e}; falling back to an older checkpoint", flush=True)
        self._set_aside(step)
    return None

  def _set_aside(self, step: int) -> None:
    """Moves a damaged step to <dir>/damaged/ (kept for inspection, invisible to Orbax),
    so that training again through that step can save it anew."""
    if jax.process_index() == 0:
      dest = os.path.join(self.directory, "damaged", str(step))
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      if os.path.exists(dest):
        dest += f".{len(os.listdir(os.path.dirname(dest)))}"
      os.replace(os.path.join(self.directory, str(step)), dest)
      integrity.move_aside(self.directory, step, dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"granite_jax_set_aside_{step}")
    self._mgr.reload()

  def _seal(self) -> None:
    """Waits for the save in flight; each process records the files it wrote to committed steps."""
    try:
      self._mgr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - an async save failed in the background
      raise CheckpointError(f"saving a checkpoint to {self.directory} failed: {type(e).__name__}: {e}; "
                            "older steps are untouched") from e
    self._unsealed = False
    p, n = jax.process_index(), jax.process_count()
    steps = self.all_steps()
    for step in steps:
      if not os.path.exists(integrity.manifest_path(self.directory, step, p, n)):
        integrity.write_manifest(self.directory, step, p, n, checksums=self.checksums)
    if p == 0:
      integrity.prune(self.directory, steps)

  def poll(self) -> None:
    """Call once per step: records the manifest as soon as an async save has committed, so a
    crash soon after a save leaves a verifiable newest step."""
    if self._unsealed and not self._mgr.is_saving_in_progress():
      self._seal()

  def wait(self) -> None:
    self._seal()

  def close(self) -> None:
    self._seal()
    self._mgr.close()


def check_step(directory: str, step: int, *, checksums: bool = True, warn_unverified: bool = True) -> None:
  """The step's files against its manifests, each process checking its share; all processes
  raise CheckpointError alike when any finds damage."""
  if not integrity.has_manifest(directory, step):
    if warn_unverified and jax.process_index() == 0:
      print(f"granite_jax: checkpoint step {step} in {directory} has no integrity manifest "
            "(the run stopped before recording it); restoring it unverified", flush=True)
    return
  problem = integrity.verify(directory, step, jax.process_index(), jax.process_count(), checksums=checksums)
  if jax.process_count() > 1:  # every process must fall back alike
    import numpy as np
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.asarray(problem is not None, np.int32))
    if problem is None and np.max(flags):
      problem = f"damaged (found by process {int(np.argmax(flags))})"
  if problem:
    raise CheckpointError(f"checkpoint step {step} in {directory} is damaged: {problem}")


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (what Orbax restores into)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def restore_params(directory: str, abstract_params: Any, step: int | None = None) -> Any:
  """Only the parameters of another run's checkpoint (init_from): optimizer state is not read."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"init_from={directory!r}: no such checkpoint directory")
  mgr = ocp.CheckpointManager(directory)
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"init_from={directory!r}: holds no checkpoint step")
  # Another run's checkpoint: no fallback, but never read it damaged. (Merges and HF imports
  # write no manifest: nothing to check there.)
  check_step(directory, step, warn_unverified=False)
  target = {"params": abstract_params}
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))
  mgr.close()
  return restored.state["params"]

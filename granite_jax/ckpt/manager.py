"""Orbax checkpoints of the train state and the Grain iterator, saved together.

Each step directory holds two items: `state` (TrainState, restored straight
into its shardings) and `data_iter` (the Grain iterator position, so a
resumed run sees exactly the batches an uninterrupted one would).
Saves are asynchronous; Orbax writes into a temporary directory and renames
it on commit, so a checkpoint interrupted mid-write is never picked up.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from granite_jax.ckpt import integrity


class CheckpointError(RuntimeError):
  pass


class Checkpointer:
  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mgr.all_steps())

  def save(self, step: int, state: Any, data_iter: Any | None = None, *, force: bool = True) -> bool:
    self._seal()  # the previous async save has committed by now (Orbax waits for it anyway)
    items = dict(state=ocp.args.StandardSave(state))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    return self._mgr.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
    """Restores into `abstract_state`'s shardings; advances `data_iter` in place."""
    problem = integrity.verify(self.directory, step)
    if problem:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged: {problem}")
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      return self._mgr.restore(step, args=ocp.args.Composite(**items)).state
    except Exception as e:  # noqa: BLE001 - any read failure means this step is unusable
      raise CheckpointError(f"checkpoint step {step} in {self.directory} could not be read: "
                            f"{type(e).__name__}: {e}") from e

  def restore_latest_good(self, abstract_state: Any, make_data_iter) -> tuple[int, Any, Any] | None:
    """Newest step that restores cleanly, falling back past damaged ones.

    `make_data_iter()` gives a fresh iterator per attempt (a failed restore may
    have moved the previous one). Returns (step, state, data_iter) or None.
    """
    for step in sorted(self.all_steps(), reverse=True):
      it = make_data_iter()
      try:
        return step, self.restore(step, abstract_state, it), it
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
      manifest = integrity.manifest_path(self.directory, step)
      if os.path.exists(manifest):
        os.replace(manifest, dest + ".manifest.json")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"granite_jax_set_aside_{step}")
    self._mgr.reload()

  def _seal(self) -> None:
    """Writes size manifests for committed steps that lack one (process 0)."""
    self._mgr.wait_until_finished()
    if jax.process_index() != 0:
      return
    steps = self.all_steps()
    for step in steps:
      if not os.path.exists(integrity.manifest_path(self.directory, step)):
        integrity.write_manifest(self.directory, step)
    integrity.prune(self.directory, steps)

  def wait(self) -> None:
    self._seal()

  def close(self) -> None:
    self._seal()
    self._mgr.close()


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
  target = {"params": abstract_params}
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))
  mgr.close()
  return restored.state["params"]

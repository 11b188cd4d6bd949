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
    items = dict(state=ocp.args.StandardSave(state))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    return self._mgr.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
    """Restores into `abstract_state`'s shardings; advances `data_iter` in place."""
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._mgr.restore(step, args=ocp.args.Composite(**items)).state

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
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

"""Running jitted programs under their mesh, so Linen's logical constraints resolve.

A jitted step that calls `nn.with_logical_constraint` resolves the logical axis
names against the mesh in context; without one the constraints do nothing.
Every stage wraps its jitted function with `with_mesh` (train, RL, the sampler).
"""
from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import Mesh


def mesh_context(mesh: Mesh):
  """`jax.set_mesh(mesh)` where this JAX has it, else the Mesh's own context."""
  if hasattr(jax, "set_mesh"):
    return jax.set_mesh(mesh)
  return mesh


def with_mesh(fn: Callable, mesh: Mesh) -> Callable:
  """`fn` called inside `mesh_context(mesh)`; the wrapped function stays reachable as `.jitted`
  (for `.lower(...)` in the planner and benchmarks)."""
  def call(*args):
    with mesh_context(mesh):
      return fn(*args)
  call.jitted = fn
  return call

"""Device mesh from config: sizes per axis, -1 fills with the remaining devices."""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from granite_jax.sharding.rules import MESH_AXES


def resolve_shape(shape: Sequence[int], n_devices: int, axes: Sequence[str]) -> tuple[int, ...]:
  shape = [int(s) for s in shape]
  if len(shape) != len(axes):
    raise ValueError(f"mesh.shape={tuple(shape)} must have one size per axis of mesh.axes={tuple(axes)}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh.shape={tuple(shape)}: at most one axis may be -1 (fill)")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh.shape={tuple(shape)}: sizes must be positive or -1")
  known = math.prod(s for s in shape if s != -1)
  if n_devices % known:
    raise ValueError(f"mesh.shape={tuple(shape)} does not divide the {n_devices} available devices")
  shape = [n_devices // known if s == -1 else s for s in shape]
  if math.prod(shape) != n_devices:
    raise ValueError(f"mesh.shape={tuple(shape)} uses {math.prod(shape)} devices, "
                     f"but {n_devices} are available")
  return tuple(shape)


def make_mesh(shape: Sequence[int], axes: Sequence[str] = MESH_AXES[:3],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Auto axis types: Linen's logical constraints need them (Explicit is the new default)."""
  unknown = [a for a in axes if a not in MESH_AXES]
  if unknown:
    raise ValueError(f"mesh.axes: unknown axis name(s) {unknown}; allowed {MESH_AXES}")
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_shape(shape, len(devices), axes)
  if devices == list(jax.devices()):
    return jax.make_mesh(shape, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))
  return Mesh(np.asarray(devices).reshape(shape), tuple(axes), axis_types=(AxisType.Auto,) * len(axes))

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


def split_hybrid(shape: Sequence[int], dcn_shape: Sequence[int], n_devices: int,
                 axes: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(ici, dcn) sizes per axis: `shape` is the whole mesh, `dcn_shape` the part across NVLink domains."""
  total = resolve_shape(shape, n_devices, axes)
  dcn = tuple(int(s) for s in dcn_shape)
  if len(dcn) != len(total):
    raise ValueError(f"mesh.dcn_shape={dcn} must have one size per axis of mesh.axes={tuple(axes)}")
  if any(d < 1 or t % d for t, d in zip(total, dcn)):
    raise ValueError(f"mesh.dcn_shape={dcn} must divide mesh.shape={total} axis by axis")
  return tuple(t // d for t, d in zip(total, dcn)), dcn


def make_hybrid_mesh(shape: Sequence[int], dcn_shape: Sequence[int],
                     axes: Sequence[str] = MESH_AXES[:3],
                     devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh whose `dcn_shape` factor spans NVLink domains and the rest stays inside one.

  Domains are `device.slice_index` when the launcher set it (one rack of a
  GB200 NVL72), else processes (process-as-granule: each host is a domain).
  Axis order follows `axes`, so with dcn_shape=(racks, 1, 1) only the `data`
  axis (one gradient all-reduce per step) crosses InfiniBand.
  """
  devices = list(devices if devices is not None else jax.devices())
  ici, dcn = split_hybrid(shape, dcn_shape, len(devices), axes)
  arr = _hybrid_device_array(ici, dcn, devices)
  return Mesh(arr, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def _hybrid_device_array(ici: Sequence[int], dcn: Sequence[int], devices: Sequence) -> np.ndarray:
  from jax.experimental import mesh_utils

  # NVLink domains when the launcher set slice_index and they match dcn_shape, else one per process
  # (CPU and single-domain runs report slice_index 0 for every device).
  n = math.prod(dcn)
  slices = {getattr(d, "slice_index", None) for d in devices}
  by_slice = None not in slices and len(slices) == n
  processes = {d.process_index for d in devices}
  if not by_slice and len(processes) != n:
    raise ValueError(f"mesh.dcn_shape={tuple(dcn)} spans {n} domains, but the devices form "
                     f"{len(slices)} NVLink domain(s) (slice_index) and {len(processes)} process(es)")
  return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=not by_slice,
                                              allow_split_physical_axes=True)


def mesh_from_config(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """`mesh.shape` alone: make_mesh; with a non-empty `mesh.dcn_shape`: make_hybrid_mesh."""
  dcn = tuple(mesh_cfg.get("dcn_shape", ()) or ())
  if not dcn:
    return make_mesh(mesh_cfg.shape, mesh_cfg.axes, devices)
  return make_hybrid_mesh(mesh_cfg.shape, dcn, mesh_cfg.axes, devices)

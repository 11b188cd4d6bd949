"""Hybrid (NVLink x InfiniBand) meshes: sizes split per axis; domains from slice_index or processes."""
import types

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.sharding import mesh as mesh_lib


def test_split_hybrid_sizes_and_errors():
  axes = ("data", "fsdp", "tensor")
  assert mesh_lib.split_hybrid((-1, 8, 1), (4, 1, 1), 128, axes) == ((4, 8, 1), (4, 1, 1))
  with pytest.raises(ValueError, match="mesh.dcn_shape"):
    mesh_lib.split_hybrid((2, 4, 1), (1, 3, 1), 8, ("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match="mesh.dcn_shape"):
    mesh_lib.split_hybrid((2, 4, 1), (2, 1), 8, ("data", "fsdp", "tensor"))


def test_single_process_is_one_domain():
  m = mesh_lib.mesh_from_config(ConfigDict(dict(shape=(2, 2, 2), axes=("data", "fsdp", "tensor"),
                                                dcn_shape=(1, 1, 1))))
  assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match=r"spans 2 domains, but the devices form .* and 1 process"):
    mesh_lib.make_hybrid_mesh((2, 2, 2), (2, 1, 1))
  flat = mesh_lib.mesh_from_config(ConfigDict(dict(shape=(-1, 2, 1), axes=("data", "fsdp", "tensor"),
                                                   dcn_shape=())))
  assert dict(flat.shape) == {"data": 4, "fsdp": 2, "tensor": 1}


def test_slice_index_groups_racks_on_the_dcn_axis():
  # Two "racks" of 4 devices; devices listed interleaved to show grouping is by slice_index, not order.
  real = jax.devices()[:8]
  fake = [types.SimpleNamespace(id=d.id, platform=d.platform, device_kind=d.device_kind,
                                process_index=0, slice_index=i % 2) for i, d in enumerate(real)]
  arr = mesh_lib._hybrid_device_array((2, 2, 1), (2, 1, 1), fake)
  racks = np.vectorize(lambda d: d.slice_index)(arr)
  assert arr.shape == (4, 2, 1)
  assert (racks[:2] == 0).all() and (racks[2:] == 1).all()  # data axis: rack-major, FSDP inside a rack

"""configs/gb200.py: whole racks, FSDP/tensor/context inside a rack, data across racks."""
import math

import pytest

from configs import gb200
from granite_jax.sharding.mesh import split_hybrid


@pytest.mark.parametrize("arg,gpus", [("phase2,8b,16", 72 * 16), ("phase1,30b,2", 72 * 2),
                                      ("phase3,8b,4,long", 64 * 4)])
def test_layouts_fill_racks_and_keep_parameters_in_the_rack(arg, gpus):
  c = gb200.get_config(arg)
  racks = int(arg.split(",")[2])
  assert math.prod(c.mesh.shape) == gpus
  ici, dcn = split_hybrid(c.mesh.shape, c.mesh.dcn_shape, gpus, c.mesh.axes)
  assert dcn == (racks,) + (1,) * (len(ici) - 1)  # only `data` crosses InfiniBand
  assert c.train.global_batch % (c.mesh.shape[0] * c.mesh.shape[1]) == 0
  assert c.distributed.nodes_per_slice * 4 == math.prod(ici) and c.xla.profile == "gb200"


def test_bad_arg_is_named():
  with pytest.raises(ValueError, match="configs/gb200.py"):
    gb200.get_config("phase2,8b")

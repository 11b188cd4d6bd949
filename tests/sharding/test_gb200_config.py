"""configs/gb200.py: whole racks, FSDP/tensor/context inside a rack, data across racks; every
stage's layout keeps the report's batch (SFT on 16 x 4 GPUs, RL 64 prompts x 16) or says why not."""
import importlib
import math

import pytest

from configs import gb200
from granite_jax.sharding.mesh import split_hybrid


@pytest.mark.parametrize("arg,gpus", [("phase2,8b,16", 72 * 16), ("phase1,30b,2", 72 * 2),
                                      ("phase3,8b,4,long", 64 * 4), ("sft,8b,1", 64),
                                      ("rl_math,30b,1", 64), ("lce_512k,8b,1", 64),
                                      ("lce_128k,3b,2", 128), ("reward_model,8b,4", 256)])
def test_layouts_fill_racks_and_keep_parameters_in_the_rack(arg, gpus):
  c = gb200.get_config(arg)
  racks = int(arg.split(",")[2])
  assert math.prod(c.mesh.shape) == gpus == c.gb200.gpus
  ici, dcn = split_hybrid(c.mesh.shape, c.mesh.dcn_shape, gpus, c.mesh.axes)
  assert dcn == (racks,) + (1,) * (len(ici) - 1)  # only `data` crosses InfiniBand
  assert c.train.global_batch % (c.mesh.shape[0] * c.mesh.shape[1] * c.train.grad_accum) == 0
  assert c.distributed.nodes_per_slice * 4 == math.prod(ici) and c.xla.profile == "gb200"


def _recipe(arg):
  stage, preset = arg.split(",")[:2]
  return importlib.import_module(f"configs.{stage}").get_config(preset)


@pytest.mark.parametrize("size", ["8b", "30b"])  # 30B has its own layouts for some stages (PRESET_ICI)
@pytest.mark.parametrize("stage", ["sft", "reward_model", "rl_multidomain", "rlhf", "rl_identity", "rl_math",
                                   "lce_32k", "lce_128k", "lce_512k"])
def test_every_stage_but_pretraining_keeps_the_recipe_batch(stage, size):
  c, recipe = gb200.get_config(f"{stage},{size},1"), _recipe(f"{stage},{size}")
  assert math.prod(c.mesh.shape) == 64
  assert c.train.global_batch == recipe.train.global_batch and c.gb200.batch_note == ""
  assert c.train.seq_len == recipe.train.seq_len
  assert "recipe batch kept" in gb200.describe(c)


def test_sft_is_the_reports_16_nodes_of_4_gb200():
  c = gb200.get_config("sft,8b,1")
  assert dict(zip(c.mesh.axes, c.mesh.shape)) == dict(data=8, fsdp=8, tensor=1)
  assert c.distributed.nodes_per_slice == 16 and c.train.global_batch == 256 and c.train.seq_len == 16384


def test_rl_is_64_prompts_x_16_samples_one_sequence_per_gpu_per_micro_batch():
  c = gb200.get_config("rl_multidomain,8b,1")
  assert (c.rl.prompts_per_step, c.rl.samples_per_prompt, c.train.global_batch) == (64, 16, 1024)
  assert c.train.grad_accum * 64 == 1024


@pytest.mark.parametrize("arg,message", [
    ("rl_math,8b,2", r"needs whole prompts; racks that keep the recipe's 64 x 16: \[1\]"),
    ("sft,8b,3", r"keeps the recipe's batch of 256 sequences .* use RACKS in \[1, 2, 4\]"),
    ("lce_512k,8b,2", r"batch of 8 sequences .* use RACKS in \[1\]"),
])
def test_a_layout_that_would_change_the_batch_is_refused(arg, message):
  with pytest.raises(ValueError, match=message):
    gb200.get_config(arg)


def test_pretraining_batch_change_is_announced():
  c = gb200.get_config("phase2,8b,16")
  assert c.train.global_batch == 1152
  assert "CHANGED train.global_batch 1024 -> 1152" in gb200.describe(c)


@pytest.mark.parametrize("arg", ["phase2,8b", "phase2,8b,x", "phase2,tiny,1", "nosuch,8b,1", "sft,8b,1,long"])
def test_bad_arg_is_named(arg):
  with pytest.raises(ValueError, match="configs/gb200.py"):
    gb200.get_config(arg)


@pytest.mark.parametrize("size", ["3b", "8b", "30b"])
@pytest.mark.parametrize("stage", gb200.RL_STAGES)
def test_rl_rollout_layout_is_tensor_parallel_inside_the_trays(stage, size):
  """The rollout's ways (rl.rollout_axes) split whole KV heads (the KV cache goes by KV heads) and
  the prompts split over the batch axes that remain."""
  from granite_jax.model.config import preset
  from granite_jax.sharding.rules import tensor_ways
  c = gb200.get_config(f"{stage},{size},1")
  mesh = dict(zip(c.mesh.axes, c.mesh.shape))
  ways = tensor_ways(mesh, c.rl.rollout_axes)
  assert ways == 8 and tuple(c.rl.rollout_axes) == ("fsdp", "tensor")
  cfg = preset(size)
  assert cfg.n_kv_heads % ways == 0 and cfg.n_heads % ways == 0 and cfg.d_ff % ways == 0
  assert c.rl.prompts_per_step % (math.prod(c.mesh.shape) // ways) == 0

"""The planner: per-device memory within 15% of XLA's buffer assignment of the real train step
(compiled with abstract inputs on the 8 fake CPU devices), and a sane table from the CLI.
Holds on jaxlib 0.10.2 (Python 3.11) and 0.12.0.1 (Python 3.12): XLA 0.12 keeps one f32 logits
buffer fewer, which plan/memory.py's LOGIT_BUFFERS follows by version."""
import pytest

from granite_jax import plan
from granite_jax.model.config import preset
from granite_jax.plan.memory import train_memory
from granite_jax.plan.xla import xla_memory

MESH = dict(data=2, fsdp=4, tensor=1)  # the preset layouts keep tensor=1 (configs/gb200.py)


# blockwise: the flash-attention stand-in the preset check uses on CPU (cuDNN's memory class).
@pytest.mark.parametrize("impl,layers,seq", [("blockwise", 4, 1024), ("blockwise", 2, 2048)])
def test_planner_memory_matches_xla_within_15_percent(impl, layers, seq):
  # A preset in miniature (bf16 activations, f32 master weights, vocab/d ~ 8, GQA).
  cfg = preset("tiny", n_layers=layers, d_model=512, n_heads=8, n_kv_heads=4, d_ff=1536,
               dtype="bfloat16", attention_impl=impl, attention_block=128)
  batch = 8
  xla = xla_memory(cfg.to_dict(), MESH, batch, seq)["peak"]
  planned = train_memory(cfg, MESH, batch, seq).total
  assert abs(planned / xla - 1) < 0.15, (planned / 2**20, xla / 2**20)


def test_cli_table_covers_the_recipe_configs(capsys):
  assert plan.main(["--preset=8b"]) == 0
  out = capsys.readouterr().out
  for stage in plan.STAGES:  # the planner's stages are the configs, on their GB200 layouts
    assert f"| 8b | {stage} |" in out
  p = plan.plan("phase2", "8b")
  assert 0 < p.mfu <= 0.75 and p.step_s > 0  # remat recompute caps MFU at 6/8
  # Parameter + AdamW state shards: 3 x 4 bytes per parameter over fsdp=8.
  assert p.memory.params + p.memory.opt_state == pytest.approx(12 * 8.2e9 / 8, rel=0.05)
  rl = plan.plan("rl_math", "8b")
  assert set(rl.programs) == {"train", "rollout", "logprobs"} and rl.mesh == dict(data=8, fsdp=8, tensor=1)


def test_stage_missing_from_the_recipe_is_skipped_with_the_reason(capsys):
  assert plan.main(["--preset=3b", "--stage=lce_512k"]) == 0
  assert "skipped lce_512k:3b: lce_512k is not part of the 3B recipe" in capsys.readouterr().out


def test_bad_stage_is_named():
  with pytest.raises(ValueError, match="--stage='phase9'"):  # granite_jax.cli prints it as one line
    plan.main(["--stage=phase9"])

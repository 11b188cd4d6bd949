"""The planner: per-device memory within 15% of XLA's buffer assignment of the real train step
(compiled with abstract inputs on the 8 fake CPU devices), and a sane table from the CLI."""
import pytest

from granite_jax import plan
from granite_jax.model.config import preset
from granite_jax.plan_check import xla_memory
from granite_jax.plan_memory import train_memory

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


def test_cli_table_covers_presets_and_stages(capsys):
  assert plan.main(["--preset=8b", "--racks=4"]) == 0
  out = capsys.readouterr().out
  for stage in plan.STAGES:
    assert f"| 8b | {stage} |" in out
  p = plan.plan("8b", "pretrain", racks=4)
  assert 0 < p.mfu <= 0.75 and p.step_s > 0  # remat recompute caps MFU at 6/8
  # Parameter + AdamW state shards: 3 x 4 bytes per parameter over fsdp=8.
  assert p.memory.params + p.memory.opt_state == pytest.approx(12 * 8.2e9 / 8, rel=0.05)


def test_bad_mesh_is_named():
  with pytest.raises(ValueError, match="--mesh"):
    plan.parse_mesh("data=9,pipeline=2")

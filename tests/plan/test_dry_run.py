"""The dry run: every program of a stage compiles from abstract inputs on the stage's mesh of fake
CPU devices, and XLA's per-device memory decides "fits". Quick tests use small models on the 8 test
devices; the slow one runs the real 8B configs of every stage kind on their GB200 layouts."""
import json
import os
import subprocess
import sys

import pytest

from granite_jax.plan import dry_run, programs


def _small(stage: str):
  """A real recipe config with a small network on a 2 x 4 mesh (what the test devices hold)."""
  import importlib
  c = importlib.import_module(f"configs.{stage}").get_config("tiny")
  c.model.update(dict(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=256, vocab_size=512,
                      dtype="bfloat16"))
  c.mesh.shape, c.mesh.axes = (2, 4, 1), ("data", "fsdp", "tensor")
  return c


@pytest.fixture(scope="module")
def rl_results():
  c = _small("rl_math")
  c.rl.update(dict(prompts_per_step=8, samples_per_prompt=2, max_prompt_len=32, max_response_len=16))
  c.train.global_batch, c.train.seq_len, c.train.grad_accum = 16, 48, 2
  return dry_run.run_stage(c, log=lambda _: None)


@pytest.mark.slow  # ~20 s on 2 quiet cores: the decode loop unrolls its layers
def test_rl_compiles_train_rollout_and_logprobs(rl_results):
  assert [r["program"] for r in rl_results] == ["train", "rollout", "logprobs"]
  for r in rl_results:
    assert "error" not in r and r["xla"] > 0 and r["planner"] > 0 and r["fits"]
  # The rollout holds every sample's KV cache: 16 rows x 47 slots x 2 layers x K,V x 2 heads x 32 x bf16,
  # split over data x fsdp = 8: XLA cannot need less than that.
  assert rl_results[1]["xla"] >= 16 * 47 * 2 * 2 * 2 * 32 * 2 / 8


@pytest.mark.slow  # ~20 s: the engine's four pieces
def test_rl_rollout_in_the_rollout_layout_is_the_engines_highest_piece():
  """With rollout axes the trainer runs the fast engine: the rollout row is its highest piece, each
  piece's peak reported beside it (at real size the first compaction: 1.5 x the generated KV; at
  this size the weights weigh more)."""
  c = _small("rl_math")
  c.model.n_kv_heads = 4  # 4 rollout ways keep whole KV heads
  c.rl.update(dict(prompts_per_step=8, samples_per_prompt=2, max_prompt_len=32, max_response_len=16,
                   rollout_axes=("fsdp", "tensor")))
  c.train.global_batch, c.train.seq_len, c.train.grad_accum = 16, 48, 2
  (r,) = dry_run.run_stage(c, log=lambda _: None, only=("rollout",))
  assert "error" not in r and r["fits"] and set(r["pieces"]) == {"reshard", "prefill", "decode", "compact"}
  assert r["xla"] == r["pieces"][r["peak_piece"]] == max(r["pieces"].values())
  # Every row's generated KV, 16 rows x 15 slots x 2 layers x K,V x 4 heads x 32 x bf16 over data x
  # 4 ways, in and (halved) out of the compaction: XLA cannot need less.
  assert r["pieces"]["compact"] >= 1.5 * 16 * 15 * 2 * 2 * 4 * 32 * 2 / 8
  assert 0.5 < r["planner"] / r["xla"] < 2


@pytest.mark.slow
def test_reward_model_compiles_step_and_scoring():
  c = _small("reward_model")
  c.train.global_batch, c.train.seq_len = 8, 64
  got = dry_run.run_stage(c, log=lambda _: None)
  assert [r["program"] for r in got] == ["train", "score"] and dry_run.ok(got)


def test_a_program_over_the_hbm_does_not_fit():
  c = _small("sft")
  c.train.global_batch, c.train.seq_len = 8, 128
  got = dry_run.run_stage(c, hbm_gb=1e-6, log=lambda _: None)
  assert got[0]["program"] == "train" and "xla" in got[0] and not got[0]["fits"] and not dry_run.ok(got)


def test_a_config_that_cannot_be_built_is_reported():
  c = _small("sft")
  c.train.global_batch = 3  # not divisible by data x fsdp = 8
  got = dry_run.run_stage(c, log=lambda _: None)
  assert "global_batch=3" in got[0]["error"] and not dry_run.ok(got)


def test_cpu_stand_in_for_cudnn():
  c = _small("sft")
  c.model.attention_impl = "cudnn"
  assert programs.cpu_model(c).attention_impl == "blockwise"


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_every_stage_kind_at_8b_compiles_and_fits():
  """Pretraining (16 racks), LCE 512K, SFT, reward model, RL at 8B: one process, one JAX start-up."""
  specs = ["phase2:8b", "lce_512k:8b", "sft:8b", "reward_model:8b", "rl_math:8b"]
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  r = subprocess.run([sys.executable, "-m", "granite_jax.plan.dry_run", *specs], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=1800, check=False)
  rows = [json.loads(x[len("RESULT "):]) for x in r.stdout.splitlines() if x.startswith("RESULT ")]
  got = {(x["stage"], x["program"]): x for x in rows}
  assert set(got) == {("phase2", "train"), ("lce_512k", "train"), ("sft", "train"), ("reward_model", "train"),
                      ("reward_model", "score"), ("rl_math", "train"), ("rl_math", "rollout"),
                      ("rl_math", "logprobs")}, r.stderr[-3000:]
  # Every program compiles and fits (docs/stages.md): a "does not fit" note from configs/gb200.py
  # (only 30B at 512K has one) would not make an 8B stage that outgrew its GPUs pass.
  for k, x in got.items():
    assert "error" not in x and x["xla"] > 0, (k, x)
    assert x["fits"], (k, x)
  assert r.returncode == 0, r.stderr[-3000:]

"""The dry run compiles what the trainers run. For each stage kind, every program plan/programs.py
lowers has the same StableHLO text as the one the trainer builds and calls: the pretraining / SFT
train step (train/loop.py), the reward model's train step (rl/reward_model_train.py), and RL's
train step, rollout sampler, log-probs and (RLHF) the reward model's scoring (rl/loop.py). The
trainers' programs are taken from the trainers themselves: their step function jitted as the run
scaffold jits it (session.jit_step, as session.run does), and the sampler, log-prob and scoring
programs caught as rl/loop.py and rl/rm_scorer.py make them. Small models on a 2 x 4 mesh."""
import importlib
import json
import os

import jax
import pytest

from granite_jax.plan import programs
from granite_jax.sharding.jit import mesh_context
from granite_jax.train import session

MODEL = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128)


def small(stage: str, cache: str):
  c = importlib.import_module(f"configs.{stage}").get_config("tiny")
  c.model.update(MODEL)
  c.mesh.shape, c.mesh.axes = (2, 4, 1), ("data", "fsdp", "tensor")
  c.data.cache_dir = cache
  c.train.steps = 7  # explicit: SFT would derive it from the data, the dry run from nothing
  if c.get("rl"):
    c.rl.update(dict(prompts_per_step=8, samples_per_prompt=2, max_prompt_len=96, max_response_len=16,
                     eval_prompts_n=8, reward_workers=0))
    c.train.global_batch, c.train.seq_len, c.train.grad_accum = 16, 112, 2
  return c


def text(jitted, mesh, args) -> str:
  with mesh_context(mesh):
    return jitted.lower(*args).as_text()


def lowered(c, mesh) -> dict:
  return {p.name: (p.lower().as_text(), p.args) for p in programs.programs(c, mesh)}


def scaffold_step(trainer, job):
  """The train program session.run builds from a trainer."""
  return session.jit_step(trainer.step_fn, job.mesh, trainer.state_shardings or job.shardings,
                          trainer.batch_shardings).jitted


def assert_same(name, want, got_jitted, mesh):
  got = text(got_jitted, mesh, want[1])
  assert got == want[0], f"{name}: the dry run's program differs from the trainer's"


@pytest.mark.slow  # ~25 s: builds the demo token stores
@pytest.mark.parametrize("stage", ["phase2", "sft"])
def test_pretrain_and_sft_train_step(stage, demo_cache_dir):
  from granite_jax.train import loop
  c = small(stage, demo_cache_dir)
  job = loop.build(c)
  want = lowered(c, job.mesh)
  assert set(want) == {"train"}
  assert_same("train", want["train"], scaffold_step(loop.trainer(job), job), job.mesh)


def test_reward_model_train_step(demo_cache_dir):
  from granite_jax.data.tokenizer import get_tokenizer
  from granite_jax.rl import reward_model_train as rm_train
  c = small("reward_model", demo_cache_dir)
  c.train.global_batch, c.train.seq_len, c.reward_model.n_eval_pairs = 8, 64, 8
  job = session.build(c)
  want = lowered(c, job.mesh)
  assert set(want) == {"train", "score"}
  assert_same("train", want["train"], scaffold_step(rm_train.trainer(job, get_tokenizer(c.data)), job), job.mesh)


def catch(monkeypatch, module, name, out: list):
  """Wrap module.name so that what it returns is also appended to `out`."""
  real = getattr(module, name)

  def spy(*a, **kw):
    made = real(*a, **kw)
    out.append((kw, made))
    return made
  monkeypatch.setattr(module, name, spy)


def save_reward_model(path, c):
  """A reward model the policy's size (as configs/reward_model.py trains one), saved as a workdir."""
  from granite_jax.ckpt.manager import Checkpointer
  from granite_jax.plan import stages
  from granite_jax.rl.reward_model import init_rm_params
  cfg = stages.model(c)
  ck = Checkpointer(os.path.join(path, "ckpt"), async_save=False)
  ck.save(0, {"params": init_rm_params(cfg, jax.random.PRNGKey(0))})
  ck.close()
  json.dump(cfg.to_dict(), open(os.path.join(path, "model_config.json"), "w"))
  json.dump({"train": {"seq_len": 128}}, open(os.path.join(path, "config.json"), "w"))


@pytest.mark.slow  # ~30 s: the sampler's decode loop
def test_rl_and_rlhf_programs(tmp_path, demo_cache_dir, monkeypatch):
  """RLHF's five programs, RL's four (rl_math has no reward model: no `score`)."""
  from granite_jax.data.tokenizer import get_tokenizer
  from granite_jax.rl import loop as rl_loop
  from granite_jax.rl import reward_model as rm_lib
  from granite_jax.rl import step as rl_step
  c = small("rlhf", demo_cache_dir)
  save_reward_model(str(tmp_path), c)
  c.rl.reward_model = str(tmp_path)
  job = session.build(c)
  want = lowered(c, job.mesh)
  assert set(want) == {"train", "rollout", "logprobs", "score"}
  made = {"sampler": [], "logprobs": [], "score": []}
  catch(monkeypatch, rl_loop, "make_sampler", made["sampler"])
  catch(monkeypatch, rl_step, "jit_logprobs", made["logprobs"])
  catch(monkeypatch, rm_lib, "jit_rm_score", made["score"])
  trainer = rl_loop.trainer(job, get_tokenizer(c.data))
  assert_same("train", want["train"], scaffold_step(trainer, job), job.mesh)
  sampler = [m for kw, m in made["sampler"] if kw["samples_per_prompt"] == c.rl.samples_per_prompt]
  assert len(sampler) == 1 and len(made["logprobs"]) == 1 and len(made["score"]) == 1
  assert_same("rollout", want["rollout"], sampler[0].jitted, job.mesh)
  assert_same("logprobs", want["logprobs"], made["logprobs"][0][1].jitted, job.mesh)
  assert_same("score", want["score"], made["score"][0][1].jitted, job.mesh)
  trainer.close()
  c = small("rl_math", demo_cache_dir)
  assert {p.name for p in programs.programs(c, job.mesh)} == {"train", "rollout", "logprobs"}


def _loop_passes_rollout_axes() -> bool:
  import inspect

  from granite_jax.rl import loop as rl_loop
  return "rollout_axes" in inspect.getsource(rl_loop)


@pytest.mark.slow  # ~30 s: the sampler's decode loop
@pytest.mark.skipif(not _loop_passes_rollout_axes(), reason="rl/loop.py does not pass rl.rollout_axes yet")
def test_rl_rollout_layout_program(demo_cache_dir, monkeypatch):
  """With rl.rollout_axes (configs/gb200.py) the dry run's rollout is the trainer's: the weights move
  to tensor parallel over fsdp x tensor inside the program, the batch over data."""
  from granite_jax.data.tokenizer import get_tokenizer
  from granite_jax.rl import loop as rl_loop
  c = small("rl_math", demo_cache_dir)
  c.model.n_kv_heads = 4  # 4 ways keep whole KV heads
  c.rl.rollout_axes = ("fsdp", "tensor")
  job = session.build(c)
  want = lowered(c, job.mesh)
  made = []
  catch(monkeypatch, rl_loop, "make_sampler", made)
  trainer = rl_loop.trainer(job, get_tokenizer(c.data))
  sampler = [m for kw, m in made if kw["samples_per_prompt"] == c.rl.samples_per_prompt]
  assert len(sampler) == 1 and tuple(made[0][0]["rollout_axes"]) == ("fsdp", "tensor")
  assert_same("rollout", want["rollout"], sampler[0].jitted, job.mesh)
  trainer.close()

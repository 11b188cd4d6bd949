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
  """With rl.rollout_axes (configs/gb200.py) rl/loop.py runs the fast engine in the rollout layout
  (infer/engine.py): the dry run's rollout is that engine's pieces (the reshard, the prefill, the
  largest decode chunk, the first compaction), each lowering as the trainer's engine lowers it."""
  from granite_jax.data.tokenizer import get_tokenizer
  from granite_jax.infer.engine import Engine
  from granite_jax.rl import loop as rl_loop
  c = small("rl_math", demo_cache_dir)
  c.model.n_kv_heads = 4  # 4 ways keep whole KV heads
  c.rl.rollout_axes = ("fsdp", "tensor")
  job = session.build(c)
  (prog,) = [p for p in programs.programs(c, job.mesh) if p.name == "rollout"]
  lowered = prog.lower()
  want = {n: lo.as_text() for n, lo, _ in lowered.parts}
  assert list(want) == ["reshard", "prefill", "decode", "compact"]
  made = []
  catch(monkeypatch, rl_loop, "make_sampler", made)
  trainer = rl_loop.trainer(job, get_tokenizer(c.data))
  sampler = [m for kw, m in made if kw["samples_per_prompt"] == c.rl.samples_per_prompt]
  assert len(sampler) == 1 and tuple(made[0][0]["rollout_axes"]) == ("fsdp", "tensor")
  eng = sampler[0]
  assert isinstance(eng, Engine)
  params = dict(prog.args)["reshard"][0]  # the training parameters, abstract, as the dry run has them
  rl = c.rl  # what rl/rollout.py passes a call
  got = eng.pieces(params, rl.prompts_per_step, rl.max_prompt_len, rl.temperature, rl.top_p, rl.top_k)
  assert list(got) == list(want)
  for name, piece in got.items():
    assert text(piece.jitted, job.mesh, piece.args) == want[name], f"rollout {name}: the dry run's differs"
  # The decode chunk holds every row's generated KV at its largest: rows x (N - 1) slots, by groups.
  gen = dict(prog.args)["decode"][3]["k"][0]
  N, H = rl.max_response_len, MODEL["head_dim"]
  assert gen.shape == (rl.prompts_per_step, 4, rl.samples_per_prompt, H, N - 1)
  trainer.close()


@pytest.mark.slow  # ~20 s: runs the engine on the mesh
def test_engine_pieces_are_what_a_call_runs(monkeypatch):
  """`Engine.pieces` (what the dry run lowers) against an engine call on a 2 x 4 mesh in the rollout
  layout: the first prefill, decode chunk and compaction the call runs lower to the same text as the
  pieces at the call's shapes (a first chunk that reaches the largest generated KV, N - 1 slots;
  then half of each data shard's rows end: the compaction keeps half)."""
  import numpy as np

  from granite_jax.ckpt.manager import abstract_like
  from granite_jax.infer import engine as E
  from granite_jax.model import preset
  from granite_jax.model.params import init_params
  from granite_jax.sharding.mesh import make_mesh
  from granite_jax.train.state import param_shardings
  cfg = preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4, head_dim=8, d_ff=48)
  mesh = make_mesh((2, 4, 1), ("data", "fsdp", "tensor"), jax.devices()[:8])
  shardings = param_shardings(cfg, mesh)
  params = jax.device_put(init_params(cfg, jax.random.PRNGKey(0)), shardings)
  eng = E.Engine(cfg, max_new_tokens=12, samples_per_prompt=2, chunk=8, length_bucket=16, mesh=mesh,
                 rollout_axes=("fsdp", "tensor"), param_shardings=shardings, stop_ids=(10**6,))
  names = {"_prefill": "prefill", "_chunk": "decode", "_compact": "compact"}
  calls = {}

  def abstract(x):
    if isinstance(x, jax.Array) and x.committed:
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x  # uncommitted scalars as they were: where they are is part of the program

  for fn, name in names.items():
    def spy(*a, _real=getattr(E, fn), _name=name):
      calls.setdefault(_name, jax.tree.map(abstract, a))  # the first call's arguments
      return _real(*a)
    monkeypatch.setattr(E, fn, spy)
  prompts = np.random.RandomState(0).randint(1, 60, (4, 8)).astype(np.int32)
  budget = np.array([12, 12, 2, 1, 12, 12, 3, 1], np.int32)  # per data shard: 2 of 4 rows end by t = 8
  eng(params, prompts, np.full(4, 8, np.int32), jax.random.PRNGKey(1), 1.0, 1.0, 0, budget)
  monkeypatch.undo()
  assert set(calls) == set(names.values())
  pieces = eng.pieces(abstract_like(jax.eval_shape(lambda: params), shardings), 4, 8, 1.0, 1.0, 0)
  for name, args in calls.items():
    assert text(pieces[name].jitted, mesh, args) == text(pieces[name].jitted, mesh, pieces[name].args), name
  assert pieces["decode"].args[3]["k"][0].shape[-1] == 11

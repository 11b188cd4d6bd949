"""The fault matrix through the real command line (`launch/run.py` in a subprocess), for every
trainer kind: pretraining, SFT, the reward model and RL.

Per kind, one uninterrupted reference run, then one workdir that goes through the faults in turn
(the hooks of train/faults.py put each fault at a known step):
  1. SIGKILL once step 5 is dispatched           -> checkpoints 2 and 4 on disk;
  2. checkpoint 4 damaged (bit flip of the same size / truncation / a file deleted, one per kind);
     rerun with SIGTERM after step 3              -> names the damaged file, falls back to step 2,
                                                     checkpoints step 3 and exits 42;
  3. rerun, NaN injected at step 6 and the save of step 6 failing
                                                  -> resumes from 3; steps 1-5 equal the reference
                                                     bitwise (RL: losses and rewards); step 6 is
                                                     logged skipped=1; the failed save names the
                                                     directory and exits non-zero;
  4. rerun with NaN at 5 and 6, max_consecutive_skips=1, a checkpoint every step
                                                  -> resumes from 4 (intact after the failed save),
                                                     skips 5 (checkpoint 5 holds checkpoint 4's params
                                                     and optimizer state bitwise: the hook only
                                                     poisons the batch, the trainer drops the update),
                                                     stops at 6 naming it, no step 6.
The skip-then-finish path is tested in process (test_session.py); a kill from outside at a random
moment in test_resume.py.
"""
import functools
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from granite_jax.train.preemption import EXIT_PREEMPTED
from tests.launcher import ROOT, env, metrics

EXIT_NONFINITE, EXIT_SAVE_FAILED = 3, 4  # launch/run.py

MODEL = ["--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=1", "--config.model.head_dim=16", "--config.model.d_ff=64"]
COMMON = ["--config.train.steps=6", "--config.ckpt.every_steps=2", "--config.ckpt.max_to_keep=5",
          "--config.ckpt.async_save=false", "--config.train.log_every=1", "--config.train.eval_batches=0"]
KINDS = {
    "pretrain": ("configs/phase2.py", ["--config.train.seq_len=32", "--config.train.global_batch=4"], "flip"),
    "sft": ("configs/sft.py", ["--config.train.seq_len=64", "--config.train.global_batch=4",
                             "--config.optim.warmup_steps=1"], "truncate"),
    "reward_model": ("configs/reward_model.py", ["--config.train.seq_len=64", "--config.train.global_batch=4",
                                                 "--config.reward_model.n_pairs=64",
                                                 "--config.reward_model.n_eval_pairs=8"], "delete"),
    # Prompts whose reward random responses meet at random (a fresh model scores 0 on the demo math):
    # rewards vary inside a group, so advantages and gradients are not zero.
    "rl": ("configs/rl_multidomain.py", ["--config.rl.prompts_per_step=2", "--config.rl.samples_per_prompt=4",
                                         "--config.rl.max_prompt_len=40", "--config.rl.max_response_len=8",
                                         "--config.rl.overlong_buffer=0", "--config.rl.eval_prompts_n=2",
                                         "--config.train.global_batch=8", "--config.train.seq_len=48",
                                         "--config.rl.prompts={prompts}"], "flip"),
}
FIELDS = {"rl": ("loss", "reward_mean", "kl", "entropy", "grad_norm"), "reward_model": ("loss", "accuracy")}
RL_PROMPTS = [dict(prompt=f"Say something short ({i}).", domain="instruction_following",
                   reference=[dict(type="word_count", max=2), dict(type="no_commas"), dict(type="lowercase")])
              for i in range(8)]


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  """One persistent compilation cache for the module: a rerun loads the programs its reference run
  compiled (the same executables, so bitwise comparisons still hold) and starts ~2x faster."""
  return str(tmp_path_factory.mktemp("jax_cache"))


def _cli(kind, workdir, cache, *extra, faults=None, jax_cache=None):
  config, flags, _ = KINDS[kind]
  prompts = os.path.join(os.path.dirname(workdir), "prompts.jsonl")
  if kind == "rl" and not os.path.exists(prompts):
    with open(prompts, "w") as f:
      f.writelines(json.dumps(p) + "\n" for p in RL_PROMPTS)
  flags = [f.format(prompts=prompts) for f in flags]
  cmd = [sys.executable, os.path.join(ROOT, "launch", "run.py"), f"--config={config}", f"--workdir={workdir}",
         f"--config.data.cache_dir={cache}", *MODEL, *COMMON, *flags, *extra]
  e = dict(env(), **{f"GRANITE_FAULT_{k}": str(v) for k, v in (faults or {}).items()})
  if jax_cache:
    e.update(JAX_COMPILATION_CACHE_DIR=jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)


def per_step(kind, wd):
  fields = FIELDS.get(kind, ("loss",))
  return {m["step"]: tuple(m[f] for f in fields) for m in metrics(wd) if m["step"] > 0}


def ckpt_steps(wd):
  d = os.path.join(wd, "ckpt")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def biggest_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns]
  return max(files, key=os.path.getsize)


def damage(path, how):
  if how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) - 1)
  elif how == "flip":
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      b = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([b[0] ^ 0x01]))
  else:
    os.remove(path)


def saved_state(wd, step):
  """A checkpoint's train state as saved (no target needed: any trainer kind)."""
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore(os.path.join(wd, "ckpt", str(step), "state"))


def bitwise(x, y) -> bool:
  """Every leaf equal bit for bit (NaN == NaN would not do)."""
  lx, tx = jax.tree.flatten(x)
  ly, ty = jax.tree.flatten(y)
  return tx == ty and all(np.asarray(a).dtype == np.asarray(b).dtype
                          and np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in zip(lx, ly))


def tail(r):
  return f"rc={r.returncode}\nstdout:\n{r.stdout[-2500:]}\nstderr:\n{r.stderr[-2500:]}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_fault_matrix(kind, tmp_path, demo_cache_dir, jax_cache):
  cli = functools.partial(_cli, jax_cache=jax_cache)
  ref = str(tmp_path / "ref")
  r = cli(kind, ref, demo_cache_dir)
  assert r.returncode == 0, tail(r)
  want = per_step(kind, ref)
  assert sorted(want) == list(range(1, 7)), tail(r)
  assert len({v[0] for v in want.values()}) > 1  # the losses move: a resume that went wrong would show

  wd = str(tmp_path / "faulty")
  r = cli(kind, wd, demo_cache_dir, faults=dict(KILL_STEP=5))  # 1. crash
  assert r.returncode == -signal.SIGKILL, tail(r)
  assert ckpt_steps(wd) == [2, 4]

  victim = biggest_file(os.path.join(wd, "ckpt", "4"))  # 2. damage, fallback, preemption
  damage(victim, KINDS[kind][2])
  r = cli(kind, wd, demo_cache_dir, faults=dict(SIGTERM_STEP=3))
  assert r.returncode == EXIT_PREEMPTED, tail(r)
  assert f"checkpoint step 4 in {wd}/ckpt is damaged" in r.stdout and os.path.basename(victim) in r.stdout, tail(r)
  assert "resumed from step 2" in r.stdout and "checkpoint at step 3 committed" in r.stdout, tail(r)
  assert os.path.isdir(os.path.join(wd, "ckpt", "damaged", "4")) and ckpt_steps(wd) == [2, 3]

  r = cli(kind, wd, demo_cache_dir, faults=dict(NAN_STEPS=6, SAVE_FAIL_STEP=6))  # 3. resume, NaN, bad save
  assert r.returncode == EXIT_SAVE_FAILED and "Traceback" not in r.stderr, tail(r)
  assert "resumed from step 3" in r.stdout, tail(r)
  assert f"saving checkpoint step 6 to {wd}/ckpt failed" in r.stderr, tail(r)
  got = per_step(kind, wd)
  assert [m["step"] for m in metrics(wd) if m["step"] > 0] == list(range(1, 7))  # no duplicates
  assert {s: got[s] for s in range(1, 6)} == {s: want[s] for s in range(1, 6)}  # bitwise
  last = metrics(wd)[-1]
  assert last["step"] == 6 and last["skipped"] == 1 and last["nonfinite"] == "loss"
  assert ckpt_steps(wd) == [2, 3, 4]

  r = cli(kind, wd, demo_cache_dir, "--config.train.max_consecutive_skips=1",  # 4. too many skips
          "--config.ckpt.every_steps=1", faults=dict(NAN_STEPS="5,6"))
  assert r.returncode == EXIT_NONFINITE and "Traceback" not in r.stderr, tail(r)
  assert "resumed from step 4" in r.stdout and "damaged" not in r.stdout, tail(r)
  assert "step 6: 2 consecutive non-finite steps" in r.stderr, tail(r)
  assert [(m["step"], m["skipped"]) for m in metrics(wd) if m["step"] >= 5] == [(5, 1), (6, 1)]
  assert ckpt_steps(wd) == [2, 3, 4, 5]  # nothing of the stopped state
  s4, s5 = saved_state(wd, 4), saved_state(wd, 5)
  assert int(s5["step"]) > int(s4["step"])
  kept = {k: bitwise(s5[k], s4[k]) for k in ("params", "opt_state")}
  assert all(kept.values()), f"step 5's non-finite update reached the state: {kept}"

"""Multi-host for real on one machine: 2 processes x 4 fake CPU devices (jax.distributed + gloo).

Trains the tiny model on a (data=2, fsdp=2, tensor=2) mesh that spans both
processes, checkpoints (each process writes its array shards and its Grain
iterator position), restarts both processes and resumes. The losses must
equal a single-process 8-device run that trains on the same global batches:
process p of 2 reads data shard p, and the global batch is the processes'
rows in process order, so the reference concatenates the two shards' batches.
"""
import os

import numpy as np
import pytest

from launch import local
from tests.launcher import metrics

STEPS, FIRST = 8, 4
OVERRIDES = {"train.log_every": 1, "ckpt.every_steps": 4, "train.eval_batches": 0, "train.seq_len": 64,
             "model.n_layers": 2, "mesh.shape": (2, 2, 2),
             "mesh.dcn_shape": (2, 1, 1)}  # hybrid mesh: `data` spans the processes (process-as-granule)


def flags(workdir, cache, steps):
  out = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  return ["--config=configs/phase2.py", f"--workdir={workdir}", f"--config.data.cache_dir={cache}",
          f"--config.train.steps={steps}", *out]


def run_two_processes(workdir, cache, steps):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = local.start(2, flags(workdir, cache, steps), devices=4, capture_main=True,
                      log_dir=os.path.join(workdir, "local_logs"), base_env=env)
  rc = local.wait(procs, timeout=600)
  logs = []
  for i in range(2):
    with open(os.path.join(workdir, "local_logs", f"process_{i}.log")) as f:
      logs.append(f.read())
  assert rc == 0, "\n".join(log[-3000:] for log in logs)
  return logs


def reference_losses(cache, steps):
  """One process, 8 devices, same mesh; batch = concat(shard 0 rows, shard 1 rows)."""
  import jax

  from configs import phase2
  from granite_jax.data import pipeline
  from granite_jax.train import loop
  from granite_jax.train import state as state_lib
  from granite_jax.train import step as step_lib

  c = phase2.get_config()
  c.data.cache_dir, c.train.steps = cache, steps
  for k, v in OVERRIDES.items():
    section, field = k.split(".")
    c[section][field] = v
  c.mesh.dcn_shape = ()  # one process: a flat mesh of the same (2, 2, 2) shape
  job = loop.build(c)
  its = [pipeline.make_iterator(c.data, seq_len=c.train.seq_len, batch_size=c.train.global_batch // 2,
                                seed=c.train.seed, split="train", process_index=p, process_count=2)
         for p in range(2)]
  state = state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings)(jax.random.PRNGKey(c.train.seed))
  train_fn = step_lib.jit_train_step(job.model_cfg, job.mesh, job.tx, job.schedule, job.shardings)
  bs = step_lib.batch_sharding(job.mesh)
  out = []
  for _ in range(steps):
    parts = [next(it) for it in its]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    state, m = train_fn(state, loop.to_global(batch, bs))
    out.append(float(m["loss"]))
  return out


@pytest.mark.slow
def test_two_processes_checkpoint_resume_match_single_process(tmp_path, demo_cache_dir):
  wd = str(tmp_path / "mp")
  logs = run_two_processes(wd, demo_cache_dir, FIRST)
  assert "2 process(es)" in logs[0] and "(data=2, fsdp=2, tensor=2) on 8 cpu" in logs[0]
  step_dir = os.path.join(wd, "ckpt", str(FIRST))
  for p in range(2):  # each process wrote its own shards and its own iterator position
    assert os.path.exists(os.path.join(step_dir, "data_iter", f"process_{p}-of-2.json"))
    assert os.path.isdir(os.path.join(step_dir, "state", f"ocdbt.process_{p}"))

  logs = run_two_processes(wd, demo_cache_dir, STEPS)  # both processes restart and resume
  assert f"resumed from step {FIRST}" in logs[0]
  got = [m["loss"] for m in metrics(wd)]
  assert [m["step"] for m in metrics(wd)] == list(range(1, STEPS + 1))

  want = reference_losses(demo_cache_dir, STEPS)
  # Same arithmetic up to the order of cross-process (gloo) vs in-process reductions.
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)

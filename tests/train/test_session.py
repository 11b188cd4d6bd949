"""The run scaffold's non-finite path, in process: a skipped step is logged with skipped=1 and the
run goes on (this crashed with `dict() got multiple values for keyword argument 'skipped'`
before), its update is dropped (the checkpoint after it holds the state before it, bit for bit),
and too many in a row stop the run with the step named and no checkpoint of it."""
import os

import jax
import numpy as np
import pytest

from configs import phase2
from granite_jax.ckpt.manager import Checkpointer, abstract_like
from granite_jax.train import loop, session
from granite_jax.train import state as state_lib
from granite_jax.train.guards import NonFiniteError
from granite_jax.train.metrics import read_metrics


def tiny(cache, steps):
  c = phase2.get_config("tiny")
  c.model.update(n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  c.train.update(steps=steps, seq_len=32, global_batch=8, log_every=100, eval_batches=0)
  c.ckpt.update(every_steps=1, async_save=False, max_to_keep=10)
  c.data.cache_dir = cache
  return c


def test_all_nan_start_is_skipped_and_logged_not_a_crash(tmp_path, demo_cache_dir):
  """init_from a checkpoint whose params are NaN: every step is non-finite. The old loop raised
  TypeError in settle() at the first skipped step."""
  c = tiny(demo_cache_dir, 2)
  job = loop.build(c)
  good = state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings)(jax.random.PRNGKey(0))
  bad = good.replace(params=jax.tree.map(lambda p: p * np.nan, good.params))
  ck = Checkpointer(str(tmp_path / "nan_ckpt"), async_save=False)
  ck.save(1, bad)
  ck.close()
  c.init_from = str(tmp_path / "nan_ckpt")
  out = loop.run(c, str(tmp_path / "run"), progress=False)
  recs = read_metrics(str(tmp_path / "run"))
  assert [(r["step"], r["skipped"], r["nonfinite"]) for r in recs] == [(1, 1, "loss"), (2, 1, "loss")]
  assert out["skipped_steps"] == 2 and out["first_loss"] is None


@pytest.mark.slow  # the CLI fault matrix covers the same path; this one runs in process
def test_injected_nan_skips_then_too_many_stop_before_a_checkpoint(tmp_path, demo_cache_dir, monkeypatch):
  monkeypatch.setenv("GRANITE_FAULT_NAN_STEPS", "2,4,5")
  c = tiny(demo_cache_dir, 6)
  c.train.max_consecutive_skips = 1
  wd = str(tmp_path / "run")
  with pytest.raises(NonFiniteError, match=r"step 5: 2 consecutive non-finite steps .*max_consecutive_skips=1"):
    loop.run(c, wd, progress=False)
  recs = {r["step"]: r for r in read_metrics(wd)}
  assert recs[2]["skipped"] == 1 and recs[2]["nonfinite"] == "loss" and recs[4]["skipped"] == 1
  assert recs[1]["skipped"] == 0 and np.isfinite(recs[1]["loss"])
  ck = Checkpointer(os.path.join(wd, "ckpt"))
  assert ck.all_steps() == [1, 2, 3, 4]  # nothing at or after 5
  # The hook only poisons the embedded batch: the trainer's guard alone keeps steps 2 and 4 out.
  job = loop.build(c)
  abstract = abstract_like(jax.eval_shape(state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings),
                                          jax.random.PRNGKey(0)), job.shardings)
  st = {s: jax.device_get(ck.restore(s, abstract)) for s in ck.all_steps()}
  same = lambda a, b: _bitwise(a.params, b.params) and _bitwise(a.opt_state, b.opt_state)
  assert same(st[2], st[1]) and same(st[4], st[3]) and not same(st[3], st[2])
  assert [int(st[s].step) for s in st] == [1, 2, 3, 4]


def _bitwise(x, y) -> bool:
  """Every leaf equal bit for bit (NaN == NaN would not do)."""
  lx, tx = jax.tree.flatten(x)
  ly, ty = jax.tree.flatten(y)
  return tx == ty and all(np.asarray(a).dtype == np.asarray(b).dtype
                          and np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in zip(lx, ly))


def test_nan_hook_parses_and_names_the_variable(monkeypatch):
  from granite_jax.train import faults
  monkeypatch.setenv("GRANITE_FAULT_NAN_STEPS", "3, 7")
  assert faults.nan_steps() == {3, 7}
  monkeypatch.setenv("GRANITE_FAULT_NAN_STEPS", "x")
  with pytest.raises(ValueError, match="GRANITE_FAULT_NAN_STEPS"):
    faults.nan_steps()


def test_banner_takes_extra_lines_by_key(demo_cache_dir):
  job = loop.build(tiny(demo_cache_dir, 2))
  text = session.banner(job, "wd", "fresh init", {"rl": "demo prompts", "batch": "4 pairs"})
  keys = [line.split()[0] for line in text.splitlines()[1:]]
  assert keys == ["model", "mesh", "rl", "batch", "schedule", "start"]
  assert "  batch    4 pairs" in text and "fresh init" in text

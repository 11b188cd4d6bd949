"""TensorBoard event files: MetricsWriter's records read back from the event file."""
import glob
import os

import jax
import numpy as np
import pytest

from granite_jax.train.metrics import MetricsWriter, read_metrics
from granite_jax.train.tensorboard import read_scalars


def test_records_round_trip_through_event_files(tmp_path):
  w = MetricsWriter(str(tmp_path))
  w.write(dict(step=1, loss=np.float32(4.5), lr=1e-4, tokens_per_sec=1000.0, skipped=0))
  w.write(dict(step=10, loss=3.25, lr=2e-4, mfu=0.41, eval_loss=3.5, note="text is not a scalar"))
  w.close()
  assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
  s = read_scalars(str(tmp_path))
  assert s["loss"] == [(1, 4.5), (10, 3.25)]
  assert s["lr"] == [(1, pytest.approx(1e-4)), (10, pytest.approx(2e-4))]
  assert s["mfu"] == [(10, pytest.approx(0.41))]
  assert s["eval_loss"] == [(10, 3.5)]
  assert "note" not in s and "step" not in s
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 10]  # the JSON lines are unchanged


def test_events_are_on_disk_before_close(tmp_path):
  w = MetricsWriter(str(tmp_path))
  w.write(dict(step=3, loss=2.0))
  assert read_scalars(str(tmp_path))["loss"] == [(3, 2.0)]  # a crashed run keeps its curve
  w.close()


def test_resume_purges_points_past_the_checkpoint(tmp_path):
  w = MetricsWriter(str(tmp_path))
  for step in (10, 20, 30):  # the run dies after step 30, its last checkpoint is step 20
    w.write(dict(step=step, loss=float(step)))
  w.close()
  w = MetricsWriter(str(tmp_path))
  w.truncate_after(20)
  w.write(dict(step=30, loss=-30.0))
  w.close()
  assert read_scalars(str(tmp_path))["loss"] == [(10, 10.0), (20, 20.0), (30, -30.0)]
  assert [r["loss"] for r in read_metrics(str(tmp_path))] == [10.0, 20.0, -30.0]


def test_disabled_writer_writes_nothing(tmp_path):
  w = MetricsWriter(str(tmp_path), enabled=False)
  w.write(dict(step=1, loss=1.0))
  w.close()
  assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_training_loop_logs_mfu_event_files_and_plots(tmp_path, demo_cache_dir):
  from configs import phase2
  from granite_jax import plot
  from granite_jax.train import loop
  from granite_jax.train import state as state_lib

  c = phase2.get_config("tiny")
  c.model.update(n_layers=1, d_model=64, n_heads=2, n_kv_heads=1, d_ff=128)
  c.train.update(steps=2, seq_len=32, global_batch=8, log_every=1, eval_every=2, eval_batches=1,
                 peak_flops=1e9)
  c.data.cache_dir = demo_cache_dir
  workdir = str(tmp_path)
  loop.run(c, workdir, progress=False)
  recs = read_metrics(workdir)
  m = loop.build(c).model_cfg
  # FLOPs per token counted from the model's own parameter tree, not flops.py: 6 x every weight
  # that enters a matmul once per token (all but the norm scales; the input embedding only when
  # it is also the tied output head) + attention's QK^T and AV, 12 x L x T x n_heads x head_dim.
  shapes = jax.eval_shape(lambda: state_lib.init_params(m, jax.random.PRNGKey(0)))
  sizes = {jax.tree_util.keystr(k): v.size for k, v in jax.tree_util.tree_flatten_with_path(shapes)[0]}
  n_matmul = sum(n for k, n in sizes.items() if "norm" not in k and ("embed" not in k or m.tie_embeddings))
  assert n_matmul < sum(sizes.values())  # something was left out: the count is not the param count
  fpt = 6 * n_matmul + 12 * m.n_layers * 32 * m.n_heads * m.head_dim
  for r in recs:
    assert r["mfu"] == pytest.approx(r["tokens_per_sec"] * fpt / (1e9 * jax.device_count()), rel=1e-6)
  s = read_scalars(workdir)
  assert [st for st, _ in s["loss"]] == [r["step"] for r in recs]
  assert [st for st, _ in s["eval_loss"]] == [2]
  assert [st for st, _ in s["mfu"]] == [r["step"] for r in recs]
  # The run's own metrics.jsonl gets the pretraining plots (a renamed metric would drop one).
  assert {os.path.basename(p) for p in plot.plot(workdir)} == {"loss.png", "lr.png"}

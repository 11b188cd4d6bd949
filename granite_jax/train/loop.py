"""The pretraining trainer (every pretraining phase, LCE and SFT) on the run scaffold (session.py).

`run(config, workdir)` is the one Python entry point (the launcher and the notebook both call
it). Rerunning with the same workdir resumes from the newest checkpoint; the data of a step is a
function of the step (data/order.py), so the resume is exact on any process count.
What is particular to pretraining: the global order over token stores (the mixture, or chat
conversations for SFT), the LM step, held-out loss, tokens/s and MFU, per-domain epochs, and the
end-of-stage model merge (LCE).
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
from ml_collections import ConfigDict

from granite_jax import flops
from granite_jax.ckpt.manager import abstract_like, restore_params
from granite_jax.data import batches as batches_lib
from granite_jax.data import order as order_lib
from granite_jax.data import pipeline
from granite_jax.model import Granite
from granite_jax.ops import context_parallel as cp
from granite_jax.train import session
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib
from granite_jax.train.session import Job, build, to_global, total_steps, write_run_files  # noqa: F401 (API)


def make_order(c: ConfigDict, split: str) -> order_lib.GlobalOrder:
  """The global order of the run's training rows (or held-out rows) over its token stores."""
  return pipeline.make_order(c.data, seq_len=c.train.seq_len, seed=pipeline.data_seed(c), split=split)


def data_line(c: ConfigDict, order: order_lib.GlobalOrder, steps: int) -> str:
  seed = f"data seed {pipeline.data_seed(c)}"
  if c.data.get("kind", "pretrain") == "sft":
    rows = order.sources[0].rows_per_epoch(0)
    return (f"sft conversations from {c.data.sft.sources or 'the demo SFT set'}: {rows:,} packed rows per "
            f"epoch, {c.train.get('epochs', 0) or 'unlimited'} epoch(s); {seed}")
  return f"{pipeline.describe(order, steps, c.train.global_batch)}; {seed}"


def fresh_state(job: Job) -> tuple[state_lib.TrainState, str]:
  """No checkpoint yet: the parameters of `init_from` with a fresh optimizer, else init."""
  c = job.config
  if c.init_from:
    abstract_params = jax.eval_shape(lambda: state_lib.init_params(job.model_cfg, jax.random.PRNGKey(0)))
    params = restore_params(c.init_from, abstract_like(abstract_params, job.shardings.params))
    return state_lib.state_from_params(params, job.tx, job.shardings), f"params from {c.init_from}"
  init = state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings)
  return init(jax.random.PRNGKey(c.train.seed)), "fresh init"


def evaluate(job: Job, eval_fn, params, order: order_lib.GlobalOrder) -> dict:
  """Held-out loss on the first train.eval_batches batches of the eval order (the same every time)."""
  B = job.config.train.global_batch
  bs = step_lib.batch_sharding(job.mesh)
  rows = batches_lib.local_rows(bs, B, job.config.train.seq_len)
  loss_sum = n = 0.0
  for b in range(job.config.train.eval_batches):
    out = jax.device_get(eval_fn(params, batches_lib.to_global(order.batch(b, B, rows), rows, bs, B)))
    loss_sum += float(out["loss_sum"])
    n += float(out["n_tokens"])
  return dict(eval_loss=loss_sum / max(n, 1.0))


def trainer(job: Job) -> session.Trainer:
  c, cfg = job.config, job.model_cfg
  # Ring/all-gather attention: balance the causal work over the context shards.
  shards = cp.context_size(job.mesh)[1] if cfg.attention_impl in ("ring", "allgather") else 1
  step_fn = functools.partial(step_lib.train_step, model=Granite(cfg), tx=job.tx, schedule=job.schedule,
                              grad_accum=c.train.grad_accum, context_shards=shards)
  eval_fn = step_lib.jit_eval_step(cfg, job.mesh, job.shardings.params)
  flops_per_token = flops.train_flops_per_token(cfg, c.train.seq_len)
  peak = flops.device_peak_flops(c.train.get("peak_flops", 0.0))  # per device: config, table or measured
  # Every store (train and held-out) is opened here, before the first step: a missing, partial,
  # empty or other-tokenizer store stops the run now, naming its config field.
  order = make_order(c, "train")
  eval_order = make_order(c, "eval") if c.train.eval_batches else None
  B, bs = c.train.global_batch, step_lib.batch_sharding(job.mesh)
  rows = batches_lib.local_rows(bs, B, c.train.seq_len)
  watch = order_lib.EpochWatch()
  watch.news(order.epochs(0))

  stop = job.steps
  if c.data.get("kind", "pretrain") == "sft" and c.train.get("epochs", 0):  # data ends with the epochs
    stop = min(stop, order.sources[0].rows_in_epochs(c.train.epochs) // B)

  def make_data(step, stop_requested):
    return batches_lib.Loader(order, B, rows, step, stop, stop_requested=stop_requested)

  def next_batch(state, loader, step):
    local = loader.get(step)
    return batches_lib.to_global(local, rows, bs, B), {"data_wait_sec": loader.wait_s}

  def record(s, m, sec):
    tps = job.tokens_per_step / max(sec, 1e-9)
    out = dict(tokens_per_sec=tps, tokens_seen=s * job.tokens_per_step)
    mfu = flops.mfu(tps, flops_per_token, peak * jax.device_count())
    if mfu is not None:  # an accelerator missing from flops.PEAKS needs train.peak_flops
      out["mfu"] = mfu
    epochs = order.epochs(s * B)
    out.update({f"epochs/{d}": e for d, e in epochs.items()})
    for line in watch.news(epochs):
      if jax.process_index() == 0:
        print(f"granite_jax: step {s}: {line}", flush=True)
    return out

  def done_line(s):
    if s["first_loss"] is None:
      return None
    return (f"done: {job.steps} steps, loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}"
            + (f", eval loss {s['eval_loss']:.3f}" if s["eval_loss"] is not None else ""))

  return session.Trainer(
      step_fn=step_fn, batch_shardings=bs, make_data=make_data, next_batch=next_batch,
      fresh_state=lambda: fresh_state(job),
      evaluate=(lambda params: evaluate(job, eval_fn, params, eval_order)) if eval_order else None,
      banner={"data": data_line(c, order, job.steps)}, record=record, done_line=done_line,
      postfix=lambda r: dict(loss=f"{r['loss']:.3f}", lr=f"{r['lr']:.2e}", tok_s=f"{r['tokens_per_sec']:,.0f}"))


def run(config: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains to `total_steps(config)`; returns a summary dict (session.run), plus `merged`."""
  job = build(config)
  summary = session.run(job, workdir, trainer(job), progress=progress)
  c = config
  if c.get("merge") and c.merge.enabled and c.init_from:
    summary["merged"] = merge_with_start(c, workdir)
  return summary


def merge_with_start(c: ConfigDict, workdir: str) -> str | None:
  """The LCE model merge: weight x this stage + (1 - weight) x the checkpoint it started from."""
  from granite_jax.ckpt.merge import merge

  out = os.path.join(workdir, "merged", "ckpt")
  if jax.process_count() > 1:  # the merge is a host-side tool; run it once, on one machine
    print(f"granite_jax: run `python -m granite_jax.ckpt.merge {out} {workdir}/ckpt:{c.merge.weight} "
          f"{c.init_from}:{1 - c.merge.weight}` to merge this stage", flush=True)
    return None
  if os.path.isdir(out):
    return out
  merge([os.path.join(workdir, "ckpt"), c.init_from], [c.merge.weight, 1 - c.merge.weight], out,
        progress=False)
  print(f"merged {c.merge.weight:g} x this stage + {1 - c.merge.weight:g} x {c.init_from} -> {out} "
        f"(next stage: --config.init_from={out})", flush=True)
  return out

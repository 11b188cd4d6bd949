"""The pretraining trainer (every pretraining phase, LCE and SFT) on the run scaffold (session.py).

`run(config, workdir)` is the one Python entry point (the launcher and the notebook both call
it). Rerunning with the same workdir resumes from the newest checkpoint, data position included.
What is particular to pretraining: the mixture (or chat, for SFT) Grain pipeline, the LM step,
held-out loss, tokens/s and MFU, and the end-of-stage model merge (LCE).
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
from ml_collections import ConfigDict

from granite_jax import flops
from granite_jax.ckpt.manager import abstract_like, restore_params
from granite_jax.data import pipeline
from granite_jax.data.sources import skipped_records
from granite_jax.model import Granite
from granite_jax.ops import context_parallel as cp
from granite_jax.train import session
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib
from granite_jax.train.session import Job, build, to_global, total_steps, write_run_files  # noqa: F401 (API)


def data_iterator(c: ConfigDict, local_batch: int, split: str):
  """The pretraining mixture pipeline, or the chat (SFT) pipeline when data.kind == "sft"."""
  if c.data.get("kind", "pretrain") == "sft":
    from granite_jax.data.chat_pipeline import make_iterator
    epochs = c.train.get("epochs", 0) or None
  else:
    make_iterator, epochs = pipeline.make_iterator, None
  return make_iterator(c.data, seq_len=c.train.seq_len, batch_size=local_batch, seed=c.train.seed,
                       split=split, process_index=jax.process_index(), process_count=jax.process_count(),
                       num_epochs=epochs if split == "train" else None)


def data_line(c: ConfigDict) -> str:
  if c.data.get("kind", "pretrain") == "sft":
    return f"sft conversations from {c.data.sft.sources or 'the demo SFT set'}, {c.train.get('epochs', 0) or 'unlimited'} epoch(s)"
  return ", ".join(f"{d} {w:.1%}" for d, w in pipeline.mixture_weights(c.data).items())


def fresh_state(job: Job) -> tuple[state_lib.TrainState, str]:
  """No checkpoint yet: the parameters of `init_from` with a fresh optimizer, else init."""
  c = job.config
  if c.init_from:
    abstract_params = jax.eval_shape(lambda: state_lib.init_params(job.model_cfg, jax.random.PRNGKey(0)))
    params = restore_params(c.init_from, abstract_like(abstract_params, job.shardings.params))
    return state_lib.state_from_params(params, job.tx, job.shardings), f"params from {c.init_from}"
  init = state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings)
  return init(jax.random.PRNGKey(c.train.seed)), "fresh init"


def evaluate(job: Job, eval_fn, params) -> dict:
  it = data_iterator(job.config, job.local_batch, "eval")
  bs = step_lib.batch_sharding(job.mesh)
  loss_sum = n = 0.0
  for _ in range(job.config.train.eval_batches):
    out = jax.device_get(eval_fn(params, to_global(next(it), bs)))
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

  def record(s, m, sec):
    tps = job.tokens_per_step / max(sec, 1e-9)
    out = dict(tokens_per_sec=tps, tokens_seen=s * job.tokens_per_step)
    mfu = flops.mfu(tps, flops_per_token, c.train.get("peak_flops", 0.0) * jax.device_count())
    if mfu is not None:  # needs train.peak_flops (per device); 0 = unknown
      out["mfu"] = mfu
    if skipped_records():
      out["bad_records_skipped"] = skipped_records()
    return out

  def done_line(s):
    if s["first_loss"] is None:
      return None
    return (f"done: {job.steps} steps, loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}"
            + (f", eval loss {s['eval_loss']:.3f}" if s["eval_loss"] is not None else ""))

  return session.Trainer(
      step_fn=step_fn, batch_shardings=step_lib.batch_sharding(job.mesh),
      make_data=lambda: data_iterator(c, job.local_batch, "train"),
      next_batch=lambda state, it, step: (next(it), {}),
      fresh_state=lambda: fresh_state(job),
      evaluate=lambda params: evaluate(job, eval_fn, params),
      banner={"data": data_line(c)}, record=record, done_line=done_line,
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

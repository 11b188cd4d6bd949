"""The pretraining loop: data -> jitted step -> metrics, eval and checkpoints.

`run(config, workdir)` is the one Python entry point (the launcher and the
notebook both call it). Rerunning with the same workdir resumes from the
newest checkpoint, data position included.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from granite_jax import flops
from granite_jax.ckpt.manager import Checkpointer, abstract_like, restore_params
from granite_jax.data import pipeline
from granite_jax.data.sources import skipped_records
from granite_jax.optim import describe_schedule, make_optimizer
from granite_jax.sharding.mesh import mesh_from_config
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib
from granite_jax.train.guards import Guard
from granite_jax.train.metrics import MetricsWriter
from granite_jax.train.preemption import Preemption, exit_preempted
from granite_jax.train.steps import total_steps  # tokens / explicit steps / SFT epochs over the data
from granite_jax.train.validate import validate


@dataclasses.dataclass
class Job:
  """Everything built from a config before the first step (reused by tests and tools)."""
  config: ConfigDict
  model_cfg: Any
  mesh: Any
  tx: Any
  schedule: Any
  shardings: state_lib.TrainState
  steps: int
  tokens_per_step: int

  @property
  def local_batch(self) -> int:
    return self.config.train.global_batch // jax.process_count()


def build(config: ConfigDict) -> Job:
  model_cfg = validate(config, jax.device_count(), jax.process_count())
  mesh = mesh_from_config(config.mesh)  # hybrid (ICI x DCN) when mesh.dcn_shape is set
  steps = total_steps(config)
  tokens_per_step = config.train.global_batch * config.train.seq_len
  tx, schedule = make_optimizer(config.optim, total_steps=steps, tokens_per_step=tokens_per_step)
  shardings = state_lib.state_shardings(model_cfg, mesh, tx)
  return Job(config, model_cfg, mesh, tx, schedule, shardings, steps, tokens_per_step)


def to_global(batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  """Per-process numpy rows -> one global jax.Array per field."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def initial_state(job: Job, ckpt: Checkpointer, make_iter) -> tuple[state_lib.TrainState, Any, str]:
  """(state, train iterator, how we started): newest good checkpoint, else init_from, else init."""
  abstract = abstract_like(
      jax.eval_shape(state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings), jax.random.PRNGKey(0)),
      job.shardings)
  if ckpt.all_steps():
    found = ckpt.restore_latest_good(abstract, make_iter)
    if found is not None:
      step, state, it = found
      return state, it, f"resumed from step {step} ({ckpt.directory})"
  if job.config.init_from:
    abstract_params = jax.eval_shape(lambda: state_lib.init_params(job.model_cfg, jax.random.PRNGKey(0)))
    params = restore_params(job.config.init_from, abstract_like(abstract_params, job.shardings.params))
    state = state_lib.state_from_params(params, job.tx, job.shardings)
    return state, make_iter(), f"params from {job.config.init_from}"
  init = state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings)
  return init(jax.random.PRNGKey(job.config.train.seed)), make_iter(), "fresh init"


def data_iterator(c: ConfigDict, local_batch: int, split: str):
  """The pretraining mixture pipeline, or the chat (SFT) pipeline when data.kind == "sft"."""
  if c.data.get("kind", "pretrain") == "sft":
    from granite_jax.sft.data import make_iterator
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


def banner(job: Job, workdir: str, start: str) -> str:
  c, m = job.config, job.model_cfg
  mesh = ", ".join(f"{a}={s}" for a, s in job.mesh.shape.items())
  lines = [
      f"granite_jax | {c.name} | workdir {workdir}",
      f"  model    {c.preset}: {m.num_params() / 1e6:,.1f}M params, d={m.d_model} L={m.n_layers} "
      f"heads={m.n_heads}x{m.head_dim} kv={m.n_kv_heads} mlp={m.d_ff} vocab={m.vocab_size} "
      f"dtype={m.dtype} attn={m.attention_impl} remat={m.remat_policy}",
      f"  mesh     ({mesh}) on {jax.device_count()} {jax.devices()[0].platform} device(s), "
      f"{jax.process_count()} process(es)",
      "  data     " + data_line(c),
      f"  batch    {c.train.global_batch} x {c.train.seq_len} = {job.tokens_per_step:,} tokens/step, "
      f"{job.steps:,} steps ({job.steps * job.tokens_per_step:,.0f} tokens)",
      f"  schedule {describe_schedule(c.optim, job.steps, job.tokens_per_step)}",
      f"  start    {start}",
  ]
  return "\n".join(lines)


def evaluate(job: Job, eval_fn, params) -> float:
  it = data_iterator(job.config, job.local_batch, "eval")
  bs = step_lib.batch_sharding(job.mesh)
  loss_sum = n = 0.0
  for _ in range(job.config.train.eval_batches):
    out = jax.device_get(eval_fn(params, to_global(next(it), bs)))
    loss_sum += float(out["loss_sum"])
    n += float(out["n_tokens"])
  return loss_sum / max(n, 1.0)


def write_run_files(config: ConfigDict, job: Job, workdir: str) -> None:
  """config.json (the whole config) and model_config.json (what exporters need)."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(workdir, "model_config.json"), "w") as f:
    json.dump(job.model_cfg.to_dict(), f, indent=2)


def run(config: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains to `total_steps(config)`; returns a summary dict.

  Raises NonFiniteError when the numerics guard stops the run; exits with
  EXIT_PREEMPTED (via SystemExit) after checkpointing on SIGTERM.
  """
  job = build(config)
  c = config
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    write_run_files(c, job, workdir)

  def make_iter():
    return data_iterator(c, job.local_batch, "train")

  ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=c.ckpt.max_to_keep,
                      async_save=c.ckpt.async_save)
  state, train_it, start = initial_state(job, ckpt, make_iter)
  step = int(jax.device_get(state.step))
  writer = MetricsWriter(workdir, enabled=is_main)
  writer.truncate_after(step)  # a crashed run may have logged steps past its last checkpoint
  if is_main:
    print(banner(job, workdir, start), flush=True)
  train_fn = step_lib.jit_train_step(job.model_cfg, job.mesh, job.tx, job.schedule, job.shardings,
                                     c.train.grad_accum)
  eval_fn = step_lib.jit_eval_step(job.model_cfg, job.mesh, job.shardings.params)
  bs = step_lib.batch_sharding(job.mesh)
  guard = Guard(c.train.on_nonfinite, c.train.max_consecutive_skips, c.train.loss_spike_factor)
  preempt = Preemption()
  bar = _progress(progress and is_main, step, job.steps)
  first = last = eval_loss = None
  flops_per_token = flops.train_flops_per_token(job.model_cfg, c.train.seq_len)
  t_mark, step_mark = time.perf_counter(), step
  pending = None  # (step, metrics) of the step in flight: checked one step late to keep dispatch async

  def settle(pending, with_eval=False):
    nonlocal first, last, eval_loss, t_mark, step_mark
    s, m = pending
    m = jax.device_get(m)
    loss, gnorm, skipped = float(m["loss"]), float(m["grad_norm"]), bool(m["skipped"])
    events = guard.check(s, loss, gnorm, skipped)  # may raise NonFiniteError
    if not (s % c.train.log_every == 0 or s == job.steps or s == 1 or events or with_eval):
      return
    now = time.perf_counter()
    tps = (s - step_mark) * job.tokens_per_step / max(now - t_mark, 1e-9)
    t_mark, step_mark = now, s
    if not skipped:
      first = loss if first is None else first
      last = loss
    record = dict(step=s, loss=loss, lr=float(m["lr"]), grad_norm=gnorm, tokens_per_sec=tps,
                  tokens_seen=s * job.tokens_per_step, skipped=int(skipped), **events)
    mfu = flops.mfu(tps, flops_per_token, c.train.get("peak_flops", 0.0) * jax.device_count())
    if mfu is not None:  # needs train.peak_flops (per device); 0 = unknown
      record["mfu"] = mfu
    if skipped_records():
      record["bad_records_skipped"] = skipped_records()
    if with_eval:  # only called when `state` is the state after step s
      eval_loss = evaluate(job, eval_fn, state.params)
      record["eval_loss"] = eval_loss
    writer.write(record)
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{tps:,.0f}")

  try:
    while step < job.steps:
      try:
        batch = to_global(next(train_it), bs)
      except StopIteration:  # a finite number of epochs (SFT) ran out before train.steps
        if pending is not None:
          settle(pending)
          pending = None
        if is_main:
          print(f"granite_jax: data exhausted after step {step} ({c.train.get('epochs')} epochs)", flush=True)
        if step and step not in ckpt.all_steps():
          ckpt.save(step, state, train_it)
        break
      state, m = train_fn(state, batch)
      step += 1
      if pending is not None:
        settle(pending)
        pending = None
      bar.update(1)
      must_save = step % c.ckpt.every_steps == 0 or step == job.steps
      eval_due = bool(c.train.eval_batches) and (step % c.train.eval_every == 0 or step == job.steps)
      # Multi-host agreement on preemption costs a collective: ask only at log/save steps.
      stop = preempt.should_stop(step) if (jax.process_count() == 1 or must_save
                                           or step % c.train.log_every == 0) else False
      if must_save or stop or eval_due:
        settle((step, m), with_eval=eval_due)  # never checkpoint a step the guard has not seen
      else:
        pending = (step, m)
      if must_save or stop:
        ckpt.save(step, state, train_it)
      if stop:
        exit_preempted(step, ckpt, bar)
  finally:
    preempt.restore()
  bar.close()
  ckpt.close()
  writer.close()
  summary = dict(steps=job.steps, first_loss=first, final_loss=last, eval_loss=eval_loss,
                 skipped_steps=guard.total_skipped, workdir=workdir)
  if c.get("merge") and c.merge.enabled and c.init_from:
    summary["merged"] = merge_with_start(c, workdir)
  if is_main and first is not None:
    print(f"done: {job.steps} steps, loss {first:.3f} -> {last:.3f}"
          + (f", eval loss {eval_loss:.3f}" if eval_loss is not None else "")
          + (f", {guard.total_skipped} skipped steps" if guard.total_skipped else "")
          + f"; metrics in {writer.path}", flush=True)
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


def _progress(enabled: bool, start: int, total: int):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True)

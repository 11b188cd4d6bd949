"""The one run scaffold every trainer uses: pretraining/LCE/SFT (train/loop.py), the reward
model (rl/reward_model_train.py) and RL (rl/loop.py).

A trainer supplies a `Trainer`: its pure step function, its batches (and their checkpointable
position), its evaluation and its extra metrics and banner lines. `run` does the rest, the same
way for all of them:
- mesh + jit with explicit shardings; the step runs inside the mesh context (logical constraints
  apply) under the logical-axis rules;
- run files (config.json, model_config.json);
- checkpoint + resume of the train state, past damaged steps; the data is a function of the step
  (`make_data(step)`), so a resume needs no data state and works on any process count;
- metrics.jsonl + TensorBoard, truncated on resume to the restored step;
- the banner; the non-finite guard, checked one step late so dispatch stays asynchronous, and
  always before a checkpoint; preemption (SIGTERM: checkpoint, exit 42, all processes agree);
- the progress bar and shutdown;
- where the time goes (train/timing.py): a step-time breakdown in every record (data, host to
  device, step, checkpoint, eval, ...), device memory, the straggler check, XLA profiles on
  demand (profiling.py) and WORKDIR/timeline.jsonl, from which goodput.py computes goodput.
Fault hooks for tests: train/faults.py.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import ConfigDict

from granite_jax.ckpt.manager import Checkpointer, abstract_like
from granite_jax.data.batches import StopRequested
from granite_jax.optim import describe_schedule, make_optimizer
from granite_jax.sharding.mesh import mesh_from_config
from granite_jax.sharding.jit import mesh_context
from granite_jax.sharding.rules import rules_for
from granite_jax.train import faults
from granite_jax.train import state as state_lib
from granite_jax.train.guards import Guard, NonFiniteError
from granite_jax.train.metrics import MetricsWriter
from granite_jax.train.preemption import Preemption, exit_preempted
from granite_jax.train.steps import total_steps  # tokens / explicit steps / SFT epochs over the data
from granite_jax.train.timing import RunTiming
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


class Position:
  """The data position of trainers whose batches are a function of it (RL prompts, reward-model
  pairs): `state["next"]` is the step whose batch comes next."""

  def __init__(self, **state):
    self.state = dict(state)


@dataclasses.dataclass
class Trainer:
  """What one trainer supplies; everything else is the session's."""
  step_fn: Callable          # pure (state, batch) -> (state, metrics: loss, grad_norm, lr, skipped, ...)
  batch_shardings: Any       # a sharding, or a pytree of them matching a batch
  make_data: Callable[..., Any]  # (start step, stop_requested) -> the data from that step on
  next_batch: Callable       # (state, data, step) -> (batch, extra metrics); StopIteration: data ran out;
                             # data.StopRequested: SIGTERM arrived while it waited for data
  fresh_state: Callable[[], tuple[Any, str]]  # no checkpoint yet: (state, how it was made)
  state_shardings: Any = None   # default: the LM TrainState shardings of the job
  abstract_state: Any = None    # default: those of state_lib.make_init_fn
  evaluate: Callable[[Any], dict] | None = None  # params -> held-out metrics
  eval_at_start: bool = False   # log the held-out metrics of the starting params as step 0
  log_every: int | None = None  # default train.log_every
  updates_per_step: int = 1     # optimizer steps on each batch (RL ppo_epochs)
  banner: dict = dataclasses.field(default_factory=dict)  # extra banner lines: {"data": "..."}
  record: Callable | None = None    # (step, metrics, seconds per step) -> extra logged fields
  postfix: Callable | None = None   # record -> progress-bar fields
  log_line: Callable | None = None  # record -> a line to print at log steps, or None
  done_line: Callable | None = None  # summary -> the end-of-run line, or None
  close: Callable[[], None] | None = None  # at shutdown, also after an error (e.g. worker processes)


def write_run_files(config: ConfigDict, job: Job, workdir: str) -> None:
  """config.json (the whole config) and model_config.json (what exporters and init_from need)."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(workdir, "model_config.json"), "w") as f:
    json.dump(job.model_cfg.to_dict(), f, indent=2)


def banner(job: Job, workdir: str, start: str, extra: dict | None = None) -> str:
  c, m = job.config, job.model_cfg
  mesh = ", ".join(f"{a}={s}" for a, s in job.mesh.shape.items())
  lines = {
      "title": f"granite_jax | {c.name} | workdir {workdir}",
      "model": f"{c.preset}: {m.num_params() / 1e6:,.1f}M params, d={m.d_model} L={m.n_layers} "
               f"heads={m.n_heads}x{m.head_dim} kv={m.n_kv_heads} mlp={m.d_ff} vocab={m.vocab_size} "
               f"dtype={m.dtype} attn={m.attention_impl} remat={m.remat_policy}",
      "mesh": f"({mesh}) on {jax.device_count()} {jax.devices()[0].platform} device(s), "
              f"{jax.process_count()} process(es)",
  }
  lines.update(extra or {})
  lines.setdefault("batch", f"{c.train.global_batch} x {c.train.seq_len} = {job.tokens_per_step:,} tokens/step, "
                            f"{job.steps:,} steps ({job.steps * job.tokens_per_step:,.0f} tokens)")
  lines.setdefault("schedule", describe_schedule(c.optim, job.steps, job.tokens_per_step))
  lines["start"] = start
  return "\n".join(v if k == "title" else f"  {k:<8} {v}" for k, v in lines.items())


def mesh_jit(fn, mesh, **jit_kw):
  """jax.jit(fn, **jit_kw) traced under the logical-axis rules and called inside the mesh
  context, so the model's logical sharding constraints resolve against `mesh`."""
  def traced(*args):
    with nn.logical_axis_rules(rules_for(mesh)):
      return fn(*args)

  jitted = jax.jit(traced, **jit_kw)

  def call(*args):
    with mesh_context(mesh):
      return jitted(*args)
  call.jitted = jitted
  return call


def jit_step(step_fn, mesh, state_shardings, batch_shardings, *, poison: bool = False):
  """The trainer's step with explicit shardings, the state donated. `poison`: the signature of
  faults.poisonable (an extra replicated factor)."""
  rep = NamedSharding(mesh, P())
  in_sh = (state_shardings, batch_shardings) + ((rep,) if poison else ())
  return mesh_jit(faults.poisonable(step_fn) if poison else step_fn, mesh, in_shardings=in_sh,
                  out_shardings=(state_shardings, rep), donate_argnums=(0,))


def global_from_full(x: np.ndarray, sharding) -> jax.Array:
  """A host array every process holds in full -> one global jax.Array with `sharding`."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_global(batch, shardings) -> Any:
  """Per-process numpy rows -> global jax.Arrays (leaves that are jax.Arrays already pass)."""
  if isinstance(shardings, dict):
    return {k: to_global(v, shardings[k]) for k, v in batch.items()}
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(to_global, batch, shardings)
  if isinstance(batch, dict):
    return {k: to_global(v, shardings) for k, v in batch.items()}
  if isinstance(batch, jax.Array):
    return batch
  return jax.make_array_from_process_local_data(shardings, np.asarray(batch))


def _initial_state(trainer: Trainer, ckpt: Checkpointer, abstract):
  """(state, how we started): newest good checkpoint, else the trainer's fresh state."""
  if ckpt.all_steps():
    found = ckpt.restore_latest_good(abstract)
    if found is not None:
      step, state = found
      return state, f"resumed from step {step} ({ckpt.directory})"
  return trainer.fresh_state()


def run(job: Job, workdir: str, trainer: Trainer, *, progress: bool = True) -> dict[str, Any]:
  """Trains to `job.steps` (or until the data runs out); returns a summary dict.

  Raises NonFiniteError when the numerics guard stops the run; exits with EXIT_PREEMPTED
  (SystemExit) after checkpointing on SIGTERM; CheckpointError when a save fails.
  """
  c = job.config
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  tm = RunTiming(c, workdir, is_main=is_main, log_every=trainer.log_every or c.train.log_every)
  if is_main:
    write_run_files(c, job, workdir)
  shardings = trainer.state_shardings or job.shardings
  abstract = trainer.abstract_state or abstract_like(
      jax.eval_shape(state_lib.make_init_fn(job.model_cfg, job.tx, job.shardings), jax.random.PRNGKey(0)),
      job.shardings)
  ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=c.ckpt.max_to_keep,
                      async_save=c.ckpt.async_save, verify_checksums=c.ckpt.get("verify_checksums", True))
  state, start = _initial_state(trainer, ckpt, abstract)
  step = int(jax.device_get(state.step)) // trainer.updates_per_step
  preempt = Preemption()
  data = trainer.make_data(step, lambda: preempt.requested)
  writer = MetricsWriter(workdir, enabled=is_main)
  writer.truncate_after(step)  # a crashed run may have logged steps past its last checkpoint
  if is_main:
    print(banner(job, workdir, start, trainer.banner), flush=True)
  nan_steps = faults.nan_steps()
  train_fn = jit_step(trainer.step_fn, job.mesh, shardings, trainer.batch_shardings)
  # Fault hook: a second program, used only at the poisoned steps, so the others stay bitwise those
  # of a normal run.
  poison_fn = jit_step(trainer.step_fn, job.mesh, shardings, trainer.batch_shardings, poison=True) \
      if nan_steps else None
  guard = Guard(c.train.on_nonfinite, c.train.max_consecutive_skips, c.train.get("loss_spike_factor", 0.0))
  log_every = trainer.log_every or c.train.log_every
  eval_on = trainer.evaluate is not None and bool(c.train.eval_batches)
  out = dict(steps=job.steps, first_loss=None, final_loss=None, first_eval=None, final_eval=None,
             eval_loss=None, workdir=workdir)
  tm.started(step, job.steps)
  if step == 0 and eval_on and trainer.eval_at_start:
    out["first_eval"] = out["final_eval"] = trainer.evaluate(state.params)
    writer.write(dict(step=0, **out["first_eval"]))
    tm.lap("eval")
  bar = _progress(progress and is_main, step, job.steps)
  marks = [time.perf_counter(), step]  # time and step of the last logged record

  def settle(s, m, extra, with_eval=False):
    """Host side of step s, one step late: guard (may raise), log, evaluate."""
    tm.settling()
    m = jax.device_get(m)
    tm.lap("step")  # waiting for the device: step s ends while step s + 1 is queued behind it
    loss, gnorm, skipped = float(m["loss"]), float(m["grad_norm"]), bool(m["skipped"])
    try:
      events = guard.check(s, loss, gnorm, skipped)
    except NonFiniteError:  # the run stops here: log the step that stopped it, then raise
      writer.write(dict(step=s, loss=loss, grad_norm=gnorm, skipped=1, stopped=1))
      raise
    if not skipped:
      out["first_loss"] = loss if out["first_loss"] is None else out["first_loss"]
      out["final_loss"] = loss
    if not (s % log_every == 0 or s == job.steps or s == 1 or events or with_eval):
      return
    now = time.perf_counter()
    sec = (now - marks[0]) / max(s - marks[1], 1)
    marks[:] = [now, s]
    record = {"step": s, **{k: float(v) for k, v in m.items()}}
    record["skipped"] = int(skipped)
    record.update({k: v for k, v in extra.items() if not k.startswith("_")})
    if trainer.record is not None:
      record.update(trainer.record(s, m, sec))
    record.update(events)
    if with_eval:  # only called when `state` is the state after step s
      tm.lap("other")
      out["final_eval"] = trainer.evaluate(state.params)
      tm.lap("eval")
      record.update(out["final_eval"])
      out["eval_loss"] = out["final_eval"].get("eval_loss")
    record.update(tm.record(s))
    writer.write(record)
    fields = dict(trainer.postfix(record)) if trainer.postfix is not None else {}
    fields.update(tm.postfix(record))
    if fields:
      bar.set_postfix(**fields)
    line = trainer.log_line(dict(record, **extra)) if trainer.log_line and is_main and s % log_every == 0 else None
    if line:
      bar.write(line)

  pending = None  # (step, metrics, extra) of the step in flight
  status = "error"
  try:
    while step < job.steps:
      tm.iteration(step)
      try:
        batch, extra = trainer.next_batch(state, data, step)
      except StopIteration:  # a finite number of epochs (SFT) ran out before train.steps
        if pending is not None:
          settle(*pending)
          pending = None
        if is_main:
          print(f"granite_jax: data exhausted after step {step} ({c.train.get('epochs')} epochs)", flush=True)
        if step and step not in ckpt.all_steps():
          tm.lap("other")
          ckpt.save(step, state)
          tm.saved(step)
        break
      except StopRequested as e:  # SIGTERM during a data stall: keep what is done, leave now
        if pending is not None:
          settle(*pending)
          pending = None
        if is_main:
          print(f"granite_jax: {e}", flush=True)
        if jax.process_count() == 1 and step and step not in ckpt.all_steps():
          ckpt.save(step, state)  # (several processes may not all be waiting: no collective save)
        exit_preempted(step, ckpt, bar)
      tm.lap_data(extra)
      batch = to_global(batch, trainer.batch_shardings)
      tm.lap("h2d")
      fn = functools.partial(_poisoned, poison_fn) if step + 1 in nan_steps else train_fn
      skipped = None
      tm.begin(step + 1)
      with tm.annotation(step + 1):
        for _ in range(trainer.updates_per_step):
          state, m = fn(state, batch)
          skipped = m["skipped"] if skipped is None else skipped | m["skipped"]
      tm.dispatched()
      m = dict(m, skipped=skipped)
      step += 1
      ckpt.poll()
      tm.lap("ckpt")
      tm.after_step(step, (state, m))
      if pending is not None:
        settle(*pending)
        pending = None
      bar.update(1)
      faults.signal_after(step)
      must_save = step % c.ckpt.every_steps == 0 or step == job.steps
      eval_due = eval_on and (step % c.train.eval_every == 0 or step == job.steps)
      # Multi-host agreement on preemption costs a collective: ask only at log/save steps.
      tm.lap("other")
      stop = preempt.should_stop(step) if (jax.process_count() == 1 or must_save
                                           or step % log_every == 0) else False
      tm.lap("sync")
      if must_save or stop or eval_due:
        settle(step, m, extra, with_eval=eval_due)  # never checkpoint a step the guard has not seen
      else:
        pending = (step, m, extra)
      if must_save or stop:
        tm.lap("other")
        ckpt.save(step, state)
        tm.saved(step)
      if stop:
        exit_preempted(step, ckpt, bar)
    status = "done"
  except SystemExit:  # preempted: the checkpoint has committed
    status = "preempted"
    tm.lap("ckpt")
    raise
  except Exception:  # let a save in flight commit (the previous checkpoint stays), then re-raise
    _quiet_close(ckpt, writer, bar)
    raise
  finally:
    preempt.restore()
    if status != "done":
      _print(tm.end(status, step))
    if hasattr(data, "close"):
      data.close()
    if trainer.close is not None:
      trainer.close()
  bar.close()
  tm.lap("other")
  ckpt.close()
  tm.lap("ckpt")  # the last async save commits
  writer.close()
  out["skipped_steps"] = guard.total_skipped
  line = trainer.done_line(out) if trainer.done_line and is_main else None
  if line:
    print(line + (f", {guard.total_skipped} skipped steps" if guard.total_skipped else "")
          + f"; metrics in {writer.path}", flush=True)
  _print(tm.end("done", step))
  return out


def _print(line: str | None) -> None:
  if line:
    print(line, flush=True)


def _poisoned(poison_fn, state, batch):
  return poison_fn(state, batch, np.float32(np.nan))


def _quiet_close(ckpt, writer, bar) -> None:
  for close in (bar.close, writer.close, ckpt.close):
    try:
      close()
    except Exception:  # noqa: BLE001 - the error being raised is the one to report
      pass


def _progress(enabled: bool, start: int, total: int):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True)

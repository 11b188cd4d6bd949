"""Dry run of a stage at its real size: validate, build the real mesh from fake CPU devices, lower
and compile every jitted program of the stage from abstract inputs, and print XLA's per-device
memory next to the planner's and the GPU's HBM. No weights are allocated and no data is read.

  python launch/run.py --config=configs/gb200.py:sft,8b,1 --dry_run
  python -m granite_jax.plan.dry_run sft:8b rl_math:30b phase2:8b:16   # several, one process

The process needs as many devices as the mesh: `prepare_devices(n)` sets
`--xla_force_host_platform_device_count` before JAX's backend starts (launch/run.py and the
module entry do this). XLA:CPU stands in cuDNN flash attention with the blockwise kernel (same
memory class), so its figures are the GPU program's up to kernel workspace.
A program "fits" when XLA's peak (arguments + outputs - donated + temporaries) is within
FIT_FRACTION of the HBM (the gb200 XLA profile gives JAX 95% of it).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

from ml_collections import ConfigDict

from granite_jax.plan import stages

HBM_GB = 186.0        # GB200 HBM3e per GPU
FIT_FRACTION = 0.95   # XLA_PYTHON_CLIENT_MEM_FRACTION of the gb200 profile
GIB = 2**30


def prepare_devices(n: int) -> None:
  """Before JAX's backend starts: a CPU platform with `n` fake devices (idempotent if larger)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  # LLVM's optimization of the CPU code does not change XLA's buffer assignment (the memory we
  # read), only compile time: a quarter to a third less without it.
  fast = [f for f in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
          if f.split("=")[0] not in " ".join(flags)]
  os.environ["XLA_FLAGS"] = " ".join(flags + fast + [f"--xla_force_host_platform_device_count={n}"])
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax
  jax.config.update("jax_platforms", "cpu")


def laid_out(c: ConfigDict) -> ConfigDict:
  """A config whose mesh still has a -1 (no device count yet) gets its stage's GB200 layout
  (configs/gb200.py, stages.DEFAULT_RACKS); an explicit mesh is kept."""
  if all(s >= 1 for s in c.mesh.shape):
    return c
  gb200 = stages._configs()
  if c.preset not in ("3b", "8b", "30b"):
    raise ValueError(f"mesh.shape={tuple(c.mesh.shape)} has -1 and preset {c.preset!r} has no GB200 layout; "
                     "give --config.mesh.shape explicitly")
  racks = stages.DEFAULT_RACKS.get(gb200.stage_kind(c), 1)
  with c.unlocked():  # the command line's ConfigDict is locked; the layout adds `gb200`
    return gb200.apply(c, racks)


def one_rack(c: ConfigDict) -> ConfigDict:
  """The program one rack of a multi-rack layout runs, when racks only add data parallelism
  (mesh.dcn_shape = (racks, 1, ...)): the same per-GPU shapes and shardings, so the same memory;
  only the gradient all-reduce's replica group is smaller. XLA:CPU takes hours to compile for
  1152 fake devices, minutes for one rack's 72."""
  dcn = tuple(c.mesh.get("dcn_shape", ()) or ())
  racks = dcn[0] if dcn else 1
  if racks == 1 or any(d != 1 for d in dcn[1:]) or c.mesh.axes[0] != "data":
    return c
  r = ConfigDict(c.to_dict())
  r.mesh.shape = (c.mesh.shape[0] // racks, *c.mesh.shape[1:])
  r.mesh.dcn_shape = (1,) * len(dcn)
  r.train.global_batch = c.train.global_batch // racks
  if r.get("rl"):
    r.rl.prompts_per_step = c.rl.prompts_per_step // racks
  return r


def _mesh(c: ConfigDict):
  import jax

  from granite_jax.sharding.mesh import make_mesh
  n = stages.devices(c)
  if jax.device_count() < n:
    raise RuntimeError(f"the dry run needs {n} devices for mesh {stages.describe_mesh(c)}, JAX has "
                       f"{jax.device_count()}: call prepare_devices({n}) before JAX starts")
  # One process holds every fake device, so racks (mesh.dcn_shape) cannot be told apart: the flat
  # mesh has the same shape and shardings, so the same per-device program and memory.
  return make_mesh(c.mesh.shape, c.mesh.axes, jax.devices()[:n])


def run_stage(c: ConfigDict, hbm_gb: float = HBM_GB, log=print, only=()) -> list[dict]:
  """Compiles every program of `c` (or those named in `only`); one result dict per program (or
  one with `error`)."""
  from granite_jax.plan.programs import programs
  from granite_jax.train.validate import validate
  g = c.get("gb200") or {}
  head = dict(stage=c.name, preset=c.preset, racks=g.get("racks", 0), gpus=stages.devices(c),
              mesh=stages.describe_mesh(c), batch_note=g.get("batch_note", ""),
              does_not_fit=g.get("does_not_fit", ""))
  limit = hbm_gb * 1e9 * FIT_FRACTION
  try:
    validate(c, stages.devices(c), 1, data=False)
    rack = one_rack(c)
    if rack is not c:
      head["compiled_for"] = f"one rack's share: {stages.devices(rack)} GPUs, batch {rack.train.global_batch}"
      log(f"  compiled for {head['compiled_for']} (racks add data parallelism only: same per-GPU program)")
    progs = programs(rack, _mesh(rack))
  except Exception as e:  # noqa: BLE001 - a config that cannot be built is a row of the report
    log(f"  {c.name}:{c.preset}: {type(e).__name__}: {e}")
    return [dict(head, program="-", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")]
  out = []
  for p in progs:
    if only and p.name not in only:
      continue
    r = dict(head, program=p.name, shapes=p.shapes, planner=p.estimate.total)
    t0 = time.time()
    try:
      lowered = p.lower()
      r["lowered_sha"] = fingerprint(lowered)
      ma = lowered.compile().memory_analysis()
      r["xla"] = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes \
          + ma.temp_size_in_bytes
      r["fits"] = r["xla"] <= limit
      if getattr(ma, "pieces", None):  # the rollout engine: its pieces' peaks (plan/programs.py)
        r["pieces"], r["peak_piece"] = ma.pieces, ma.peak_piece
    except Exception as e:  # noqa: BLE001
      r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      r["fits"] = False
    r["compile_s"] = round(time.time() - t0, 1)
    log(format_row(r, hbm_gb))
    out.append(r)
  return out


def fingerprint(lowered) -> str:
  """The lowered program's identity: StableHLO text without source locations. Equal text (and
  jax/XLA version) compiles to the same buffers, so a result stays valid while this is equal."""
  import jax
  return hashlib.sha256(f"{jax.__version__}\n{lowered.as_text()}".encode()).hexdigest()[:16]


def fingerprints(c: ConfigDict) -> dict[str, str]:
  """{program: fingerprint} of `c`'s programs at this commit: lowered, not compiled (seconds)."""
  from granite_jax.plan.programs import programs
  rack = one_rack(c)
  return {p.name: fingerprint(p.lower()) for p in programs(rack, _mesh(rack))}


def format_row(r: dict, hbm_gb: float = HBM_GB) -> str:
  if "xla" not in r:
    return f"  {r['program']:<9} {r.get('shapes', ''):<40} DOES NOT COMPILE: {r.get('error', '')}"
  verdict = "fits" if r["fits"] else "DOES NOT FIT"
  pieces = ("\n" + " " * 12 + "pieces: " + ", ".join(f"{k} {v / GIB:.1f}" for k, v in r["pieces"].items())
            + f" GiB/GPU (peak: {r['peak_piece']})") if r.get("pieces") else ""
  return (f"  {r['program']:<9} {r['shapes']:<40} XLA {r['xla'] / GIB:7.1f} GiB/GPU | planner "
          f"{r['planner'] / GIB:7.1f} GiB | HBM {hbm_gb * 1e9 / GIB:.0f} GiB | {verdict} "
          f"({r['compile_s']:.0f} s)" + pieces)


def ok(results: list[dict]) -> bool:
  return bool(results) and all(r.get("fits") and "error" not in r for r in results)


def dry_run(c: ConfigDict, hbm_gb: float = HBM_GB) -> int:
  """The whole dry run of one config, printed; 0 when every program compiles and fits."""
  from configs import gb200  # noqa: F401 - launch/run.py put the repo root on sys.path
  print(f"granite_jax | dry run {c.name}:{c.preset} | {stages.devices(c)} fake CPU devices, mesh "
        f"{stages.describe_mesh(c)} | batch {c.train.global_batch} x {c.train.seq_len} | model rope_theta "
        f"{c.model.rope_theta:g}, max_seq_len {c.model.max_seq_len}"
        + (f", from {c.init_from}" if c.get("init_from") else ""), flush=True)
  line = gb200.describe(c)
  if line:
    print(f"  {line}", flush=True)
  results = run_stage(c, hbm_gb)
  good = ok(results)
  note = results[0].get("does_not_fit") if results else ""
  if not good and note:
    print(f"  what to change: {note}", flush=True)
  verdict = "every program compiles and fits" if good else "FAILED"
  print(f"dry run {c.name}:{c.preset}: {verdict}", flush=True)
  return 0 if good else 1


_RL_SHAPE_FIELDS = ("prompts_per_step", "samples_per_prompt", "max_prompt_len", "max_response_len",
                    "temperature", "eps_low", "eps_high", "agg", "rollout_axes", "rollout_rows")


def program_key(c: ConfigDict) -> str:
  """What decides the compiled programs: stages with equal keys compile to the same programs."""
  # The optimizer's settings change values, not buffers (AdamW state is the same for every schedule).
  from granite_jax.plan.programs import reward_model_of
  rm = reward_model_of(c) if c.get("rl") else None  # RLHF also compiles the reward model's scoring
  parts = dict(model=c.model.to_dict(), mesh=[list(c.mesh.shape), list(c.mesh.axes)],
               train=[c.train.global_batch, c.train.seq_len, c.train.grad_accum], kind=stages.kind(c),
               clip=c.optim.clip_norm > 0, data_kind=c.data.get("kind"),
               rl={k: v for k, v in (c.get("rl") or {}).items() if k in _RL_SHAPE_FIELDS},
               score=rm and [rm[0].to_dict(), rm[1]])
  return json.dumps(parts, sort_keys=True, default=str)


def _parse(spec: str):
  parts = spec.split(":")
  if len(parts) not in (2, 3):
    raise SystemExit(f"{spec!r}: expected STAGE:PRESET[:RACKS]")
  return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else None


def main(argv: list[str]) -> int:
  """STAGE:PRESET[:RACKS] ... [--only=rollout,logprobs] -> one `RESULT <json>` line per program;
  exit 1 if any fails. `--only`: compile just the named programs (e.g. an RL stage's rollout)."""
  only = tuple(p for a in argv if a.startswith("--only=") for p in a.split("=", 1)[1].split(",") if p)
  specs = [_parse(a) for a in argv if not a.startswith("--only=")]
  return run_specs(specs, only=only)


def run_specs(specs, done: dict | None = None, only=()) -> int:
  """`done`: {program_key: rows} already compiled (table.py's resume); extended in place.
  `only`: program names to compile (all when empty)."""
  if not specs:
    raise SystemExit("usage: python -m granite_jax.plan.dry_run STAGE:PRESET[:RACKS] ...")
  configs, results = [], []
  for stage, preset, racks in specs:
    try:
      configs.append(stages.load(stage, preset, racks))
    except ValueError as e:
      results.append(dict(stage=stage, preset=preset, program="-", error=f"ValueError: {e}"))
      print("RESULT " + json.dumps(results[-1]), flush=True)
  if configs:
    prepare_devices(max(stages.devices(one_rack(c)) for c in configs))
  done = {} if done is None else done
  for c in configs:
    print(f"{c.name}:{c.preset} on {stages.devices(c)} devices ({stages.describe_mesh(c)})", flush=True)
    key = program_key(c)
    if key in done:  # e.g. phases 1-4, or the four RL stages: the same programs, compiled once
      rows = [dict(r, stage=c.name, preset=c.preset, same_as=r["stage"]) for r in done[key]]
      for r in rows:
        print(format_row(r) + f" (same programs as {r['same_as']})", flush=True)
    else:
      rows = run_stage(c, only=only)
      if not only:
        done[key] = rows
    for r in rows:
      results.append(dict(r, key=key))
      print("RESULT " + json.dumps(results[-1]), flush=True)
  return 0 if all(r.get("fits") and "error" not in r for r in results) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

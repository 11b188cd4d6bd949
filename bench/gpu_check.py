"""The GPU check: one table of what one H100/H200 does with this code, in a few minutes.

  bash bench/gpu_check.sh              # one GPU: installs the package + CUDA JAX, then this
  python -m bench.gpu_check            # the check alone, with the JAX this python has
  python -m bench.gpu_check --cpu      # the same code paths at tiny shapes on CPU (the tests')

Rows (GPU shapes; `--cpu` in brackets):
  device            device kind and count, jax version, what the install step did.
  attention fwd     granite_jax.ops.attention with impl "cudnn" vs "xla" [blockwise vs xla: XLA:CPU
                    has no cuDNN] on bf16 q/k/v at the 8B attention shape (32 query heads, 8 KV,
                    head 128; B 2, T 4096, 4 packed documents a row) [4/2 heads of 64, T 256, 2
                    documents]: max abs diff of the outputs, and the best time of each (jitted).
  attention grads   the same for dq, dk, dv of sum(out * cotangent); time of forward + backward.
                    Both attention rows FAIL when max|a - b| > tol * max|b| (tol 2e-2, bf16).
  train MFU         the jitted train step (bench.common.JaxTrainer: AdamW, float32 master weights)
                    of the 8B preset cut to 4 layers [tiny preset, 2 layers], bf16 activations,
                    cuDNN attention [xla], no remat, B 4 x T 4096 [2 x 128]; MFU = tokens/s x
                    granite_jax.flops.train_flops_per_token / flops.device_peak_flops() (the
                    device kind's bf16 datasheet peak [a measured float32 matmul on CPU]).
  rollout fast / program
                    tokens/s of make_sampler(engine="fast") and (engine="program") on the same
                    8B slice [tiny] in bf16 at the RL shape: 4 prompts x 16 samples, 128-token
                    prompts, 256 new tokens [2 x 4, 16, 16]; temperature 1, no stop token, so
                    every row makes all its tokens; tokens/s = rows x new tokens / best call.

Each section runs in its own subprocess (`--section NAME`) under a time limit (its share of
`--budget-s`), so a compile that hangs, an out-of-memory or a crash becomes a TIMEOUT or ERROR
row instead of the end of the run; without `--cpu` the device row says NO GPU when JAX sees none.
Exit status 0 when every row is ok or PASS, else 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "GPU_CHECK_ROWS "  # a child's result line on stdout
TOL = 2e-2  # bf16: max|a - b| / max|b| allowed between two attention implementations
# Seconds each section may take when the budget allows (else a proportional share of it).
SECTIONS = {"attention": 75, "train": 110, "rollout_fast": 120, "rollout_program": 90}


@dataclasses.dataclass(frozen=True)
class Shapes:
  impls: tuple[str, str]  # (checked, reference) attention implementations
  attn_BTNKH: tuple[int, int, int, int, int]
  docs: int  # packed documents per attention row
  block: int  # query/key block of the blockwise impl
  preset: str
  overrides: dict
  train_BT: tuple[int, int]
  rollout_PGLN: tuple[int, int, int, int]  # prompts, samples each, prompt length, new tokens


GPU = Shapes(("cudnn", "xla"), (2, 4096, 32, 8, 128), 4, 512, "8b",
             dict(n_layers=4, attention_impl="cudnn", remat_policy="none"), (4, 4096), (4, 16, 128, 256))
CPU = Shapes(("blockwise", "xla"), (2, 256, 4, 2, 64), 2, 64, "tiny",
             dict(n_layers=2, dtype="bfloat16", attention_impl="xla", remat_policy="none"),
             (2, 128), (2, 4, 16, 16))


def model_config(s: Shapes):
  from granite_jax.model.config import preset
  return preset(s.preset, **s.overrides)


def model_name(s: Shapes) -> str:
  c = model_config(s)
  n = c.num_params()
  size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
  return f"{s.preset} preset, L{c.n_layers}, {size} params, {c.dtype}, attn {c.attention_impl}"


# ---- attention ------------------------------------------------------------------------------------

def attention_fn(impl: str, scale: float, block: int):
  """(q, k, v, segment_ids, positions) -> out with the project's op, as the model calls it."""
  from granite_jax.ops.attention import BLOCKED_IMPLS, attention

  def fn(q_BTNH, k_BTKH, v_BTKH, seg_BT, pos_BT):
    return attention(q_BTNH, k_BTKH, v_BTKH, scale=scale, segment_ids_BT=seg_BT, impl=impl,
                     positions_BT=pos_BT if impl in BLOCKED_IMPLS else None, block=block)
  return fn


def compare_attention(fn_a, fn_b, names: tuple[str, str], *, B: int, T: int, N: int, K: int, H: int,
                      docs: int, tol: float = TOL, iters: int = 3, seed: int = 0) -> list[dict]:
  """Rows 'attention fwd' and 'attention grads': fn_a vs fn_b on the same bf16 inputs."""
  import jax
  import jax.numpy as jnp

  from bench import common

  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (B, T, N, H), jnp.bfloat16)
  k = jax.random.normal(ks[1], (B, T, K, H), jnp.bfloat16)
  v = jax.random.normal(ks[2], (B, T, K, H), jnp.bfloat16)
  ct = jax.random.normal(ks[3], (B, T, N, H), jnp.float32)
  t = jnp.arange(T, dtype=jnp.int32)
  seg = jnp.broadcast_to(1 + t // (T // docs), (B, T))
  pos = jnp.broadcast_to(t % (T // docs), (B, T))
  shape = f"B{B} T{T} N{N} K{K} H{H} bf16, {docs} docs/row"
  rows = []
  for check, make in (("attention fwd", _fwd), ("attention grads", _grads)):
    fa, fb = jax.jit(make(fn_a, ct)), jax.jit(make(fn_b, ct))
    try:  # e.g. a kernel that runs forward but not backward: its row says so, the other stands
      out_a, out_b = fa(q, k, v, seg, pos), fb(q, k, v, seg, pos)
    except Exception as e:
      rows.append(dict(check=check, shape=shape, result=error_cell(e), seconds="", status="ERROR"))
      continue
    diff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
               for a, b in zip(out_a, out_b))
    ref = max(float(jnp.max(jnp.abs(b.astype(jnp.float32)))) for b in out_b)
    ta = common.best_time(lambda: fa(q, k, v, seg, pos), iters=iters)
    tb = common.best_time(lambda: fb(q, k, v, seg, pos), iters=iters)
    ok = math.isfinite(diff) and diff <= tol * ref
    what = "out" if check == "attention fwd" else "dq, dk, dv"
    rows.append(dict(check=check, shape=shape,
                     result=f"{names[0]} vs {names[1]} {what}: max abs diff {diff:.3g} "
                            f"(largest {names[1]} value {ref:.3g}, tol {tol:g} x that); "
                            f"{names[0]} {ta * 1e3:.3g} ms, {names[1]} {tb * 1e3:.3g} ms",
                     seconds=ta, status="PASS" if ok else "FAIL"))
  return rows


def error_cell(e: BaseException | str) -> str:
  text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
  return " ".join(text.split())[:200].replace("|", "/")


def _fwd(fn, ct):
  return lambda q, k, v, seg, pos: (fn(q, k, v, seg, pos),)


def _grads(fn, ct):
  import jax
  import jax.numpy as jnp

  def loss(q, k, v, seg, pos):
    return jnp.sum(fn(q, k, v, seg, pos).astype(jnp.float32) * ct)
  return jax.grad(loss, argnums=(0, 1, 2))


def section_attention(s: Shapes) -> list[dict]:
  B, T, N, K, H = s.attn_BTNKH
  fns = [attention_fn(impl, 1 / H, s.block) for impl in s.impls]  # Granite: attention 1/head_dim
  return compare_attention(*fns, s.impls, B=B, T=T, N=N, K=K, H=H, docs=s.docs)


# ---- train step MFU ------------------------------------------------------------------------------

def section_train(s: Shapes, warmup: int = 2, steps: int = 5) -> list[dict]:
  import jax

  from bench import common
  from granite_jax import flops

  cfg = model_config(s)
  B, T = s.train_BT
  trainer = common.JaxTrainer(cfg, devices=jax.devices()[:1])
  batches = [trainer.put(t) for t in common.token_batches(cfg.vocab_size, B, T, warmup + steps)]
  t0 = time.perf_counter()
  trainer.step(batches[0])
  first = time.perf_counter() - t0
  times = trainer.step_seconds(batches[1:], warmup - 1)
  tps = common.tokens_per_sec(B, T, times)
  fpt = flops.train_flops_per_token(cfg, T)
  peak, source = flops.device_peak_flops(), "bf16 datasheet, flops.PEAKS"
  if jax.devices()[0].platform == "cpu":
    source = "measured f32 matmul"
  elif peak <= 0:  # a GPU the table does not know: a measured bf16 matmul instead
    peak, source = common.peak_flops("bfloat16"), "measured bf16 matmul"
  mfu = flops.mfu(tps, fpt, peak)
  return [dict(check="train MFU", shape=f"{model_name(s)}, B{B} T{T}, AdamW",
               result=f"MFU {100 * mfu:.1f}%: {tps:,.0f} tokens/s x {fpt / 1e9:.3g} GFLOP/token / "
                      f"peak {peak / 1e12:.3g} TFLOP/s ({source}); step {min(times):.3g} s, "
                      f"first {first:.3g} s",
               seconds=min(times), status="ok")]


# ---- rollout tokens/s ----------------------------------------------------------------------------

def section_rollout(s: Shapes, engine: str, repeats: int = 2) -> list[dict]:
  import jax
  import numpy as np

  from bench import common
  from granite_jax.infer.sampler import left_pad, make_sampler
  from granite_jax.model.params import init_params

  cfg = model_config(s)
  Bp, G, Pl, N = s.rollout_PGLN
  params = jax.jit(lambda key: init_params(cfg, key))(jax.random.PRNGKey(0))  # one program, not op by op
  padded, lens = left_pad(common.token_batches(cfg.vocab_size, Bp, Pl, 1)[0])
  fn = make_sampler(cfg, max_new_tokens=N, samples_per_prompt=G, engine=engine)
  args = (params, padded, lens, jax.random.PRNGKey(1), np.float32(1.0), np.float32(1.0), np.int32(0))
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  made = int(np.asarray(out["lengths"]).sum())
  if made != Bp * G * N:
    raise RuntimeError(f"rows made {made} tokens, expected {Bp * G * N}")
  _, times = common.run_times(lambda: fn(*args), 1, repeats)
  best = min(times)
  return [dict(check=f"rollout {engine}", shape=f"{model_name(s)}, {Bp} prompts x {G} samples, "
                                                 f"prompt {Pl}, {N} new",
               result=f"{Bp * G * N / best:,.0f} tokens/s ({Bp * G} rows x {N} tokens in {best:.3g} s; "
                      f"first call {first:.3g} s)",
               seconds=best, status="ok")]


# ---- the parent: one subprocess per section, one table -------------------------------------------

def device_row(install: str, cpu: bool) -> dict:
  import jax
  dev = jax.devices()[0]
  return dict(check="device", shape=f"{jax.device_count()} x {dev.platform}",
              result=f"{dev.device_kind}, jax {jax.__version__}; install: {install}", seconds="",
              status="ok" if cpu or dev.platform == "gpu" else "NO GPU")


def run_section(name: str, cpu: bool) -> list[dict]:
  s = CPU if cpu else GPU
  if name == "attention":
    return section_attention(s)
  if name == "train":
    return section_train(s)
  if name.startswith("rollout_"):
    return section_rollout(s, name.split("_", 1)[1])
  raise ValueError(f"unknown section {name!r}; choose one of {list(SECTIONS)}")


def child(name: str, cpu: bool, install: str) -> None:
  rows = run_section(name, cpu)
  print(MARK + json.dumps(dict(rows=rows, device=device_row(install, cpu))), flush=True)


def run_child(name: str, cpu: bool, limit_s: float, install: str) -> tuple[list[dict], dict | None]:
  cmd = [sys.executable, "-m", "bench.gpu_check", "--section", name, "--install", install]
  env = dict(os.environ, JAX_PLATFORMS="cpu") if cpu else None
  fail = dict(check=name.replace("_", " "), shape="", seconds="")
  try:
    p = subprocess.run(cmd + (["--cpu"] if cpu else []), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=max(limit_s, 1))
  except subprocess.TimeoutExpired:
    return [dict(fail, result=f"did not finish in its {limit_s:.0f} s", status="TIMEOUT")], None
  for line in p.stdout.splitlines():
    if line.startswith(MARK):
      out = json.loads(line[len(MARK):])
      return out["rows"], out["device"]
  sys.stderr.write(p.stderr[-4000:])
  last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
  return [dict(fail, result=error_cell(last), status="ERROR")], None


def markdown_table(rows: list[dict], cols=("check", "shape", "result", "seconds", "status")) -> str:
  """Padded markdown; no JAX import here, so a broken install still gets its table."""
  cells = [[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
  lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  return "\n".join(lines + ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |"
                             for row in cells])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cpu", action="store_true", help="tiny shapes on CPU, blockwise vs xla attention")
  p.add_argument("--budget-s", type=float, default=None, help="whole run (default 400 GPU, 170 CPU)")
  p.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
  p.add_argument("--install", default=os.environ.get("GPU_CHECK_INSTALL", "none (this python's jax)"),
                 help="what the install step did, for the device row")
  p.add_argument("--out", default=None, help="also write the rows as JSON here")
  p.add_argument("--section", choices=list(SECTIONS), default=None, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.cpu:
    a.install = "skipped (--cpu)"
  if a.section:  # a child: one section, its rows on one line
    child(a.section, a.cpu, a.install)
    return 0
  deadline = time.monotonic() + (a.budget_s or (170 if a.cpu else 400))
  rows, device = [], None
  for i, name in enumerate(a.only):
    left = deadline - time.monotonic()
    share = left * SECTIONS[name] / sum(SECTIONS[n] for n in a.only[i:])
    got, dev = run_child(name, a.cpu, min(SECTIONS[name], share), a.install)
    rows += got
    device = device or dev
  rows.insert(0, device or dict(check="device", shape="", result=f"unknown (every section failed); "
                                f"install: {a.install}", seconds="", status="ERROR"))
  bad = [r["check"] for r in rows if r["status"] not in ("ok", "PASS")]
  title = f"GPU check{' (--cpu: tiny shapes, blockwise stands in for cuDNN)' if a.cpu else ''}"
  table = markdown_table(rows)
  print(f"{title}\n{table}")
  print(f"{'all rows ok' if not bad else 'not ok: ' + ', '.join(bad)}", flush=True)
  if a.out:
    with open(a.out, "w") as f:
      json.dump(dict(cpu=a.cpu, rows=rows, table=table, time=time.strftime("%Y-%m-%d %H:%M:%S")), f,
                indent=2)
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())

"""Shared by the benchmarks: the bench model, the measured peak, JAX step timing, tables.

Run the benchmarks from the repository root (`python -m bench.bench_train`) so
that `bench` and `granite_jax` import without installing anything else.
"""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from granite_jax import flops
from granite_jax.model import ModelConfig
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The fixed CPU bench shape of issue 9. No remat: it fits easily, and the
# transformers baseline does not recompute activations either. `xla` attention (the
# project's [B, K, G*T, S] einsum path) is the faster CPU path: grad 171 ms/layer vs 300 ms
# for `jax` (jax.nn.dot_product_attention's XLA lowering) at this shape.
BENCH = dict(model=ModelConfig(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, n_kv_heads=2,
                               head_dim=64, d_ff=1536, max_seq_len=512, attention_multiplier=1 / 64,
                               dtype="float32", attention_impl="xla", remat_policy="none"),
             seq_len=512, batch=8)

# One H100: Granite-8B widths, 4 layers, bf16 activations, cuDNN flash attention.
GPU_8B_SLICE = dict(model=ModelConfig(vocab_size=100_352, d_model=4096, n_layers=4, n_heads=32,
                                      n_kv_heads=8, head_dim=128, d_ff=12_800, max_seq_len=4096,
                                      attention_multiplier=1 / 128, logits_scaling=16.0,
                                      embedding_multiplier=12.0, residual_multiplier=0.22,
                                      dtype="bfloat16", attention_impl="cudnn",
                                      remat_policy="none"),
                    seq_len=4096, batch=4)

# AdamW as in the transformers baseline (torch.optim.AdamW with these arguments).
LR, BETAS, EPS, WD = 1e-4, (0.9, 0.95), 1e-8, 0.1


def make_tx() -> optax.GradientTransformation:
  return optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WD)


def token_batches(vocab: int, batch: int, seq_len: int, n: int, seed: int = 0) -> list[np.ndarray]:
  """Identical int32 token rows for every framework (one document per row)."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, (batch, seq_len), dtype=np.int32) for _ in range(n)]


def as_lm_batch(tokens: np.ndarray) -> dict[str, np.ndarray]:
  B, T = tokens.shape
  return dict(tokens=tokens, segment_ids=np.ones((B, T), np.int32),
              positions=np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy())


def run_times(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[Any, list[float]]:
  """(the first call's output, wall seconds of `repeats` calls after `warmup` >= 1 calls)."""
  out = jax.block_until_ready(fn())
  for _ in range(warmup - 1):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return out, times


def best_time(fn: Callable[[], Any], *, warmup: int = 1, iters: int = 5) -> float:
  """Fastest of `iters` calls (seconds): the least disturbed by other load on the machine."""
  return min(run_times(fn, max(1, warmup), iters)[1])


def peak_flops(dtype: str = "float32", n: int | None = None, iters: int = 5) -> float:
  """Arithmetic peak in FLOP/s: the best of several large jitted n x n x n matmuls.

  CPU: float32, n=2048 (a few tenths of a second a call); GPU: n=8192.
  """
  dev = jax.devices()[0]
  n = n or (2048 if dev.platform == "cpu" else 8192)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(k1, (n, n), dtype)
  b = jax.random.normal(k2, (n, n), dtype)
  reps = 1 if dev.platform == "cpu" else 20  # amortize dispatch on a fast device

  @jax.jit
  def mm(a, b):
    return jax.lax.fori_loop(0, reps, lambda i, acc: acc + (a @ b).astype(acc.dtype),
                             jnp.zeros((n, n), dtype))

  return 2 * n ** 3 * reps / best_time(lambda: mm(a, b), warmup=1, iters=iters)


def peak_flops_cpu(iters: int = 5) -> float:
  return peak_flops("float32", 2048, iters)


class JaxTrainer:
  """The project's jitted, sharded train step on a given mesh, timed on fixed batches."""

  def __init__(self, cfg: ModelConfig, mesh_shape=(1, 1, 1), devices=None):
    self.cfg = cfg
    self.mesh = make_mesh(mesh_shape, devices=devices)
    tx = make_tx()
    sh = state_lib.state_shardings(cfg, self.mesh, tx)
    self.state = state_lib.make_init_fn(cfg, tx, sh)(jax.random.PRNGKey(0))
    self.fn = step_lib.jit_train_step(cfg, self.mesh, tx, optax.constant_schedule(LR), sh)
    self.bs = step_lib.batch_sharding(self.mesh)

  def put(self, tokens: np.ndarray):
    return jax.device_put(as_lm_batch(tokens), self.bs)

  def step(self, batch) -> float:
    self.state, m = self.fn(self.state, batch)
    return float(m["loss"])  # syncs

  def step_seconds(self, batches: Sequence, warmup: int = 1) -> list[float]:
    """Per-step wall times after `warmup` steps (the first compiles)."""
    for b in batches[:warmup]:
      self.step(b)
    times = []
    for b in batches[warmup:]:
      t = time.perf_counter()
      self.step(b)
      times.append(time.perf_counter() - t)
    return times


def tokens_per_sec(batch: int, seq_len: int, step_times: Sequence[float]) -> float:
  """From the fastest step: on a shared machine the least disturbed one (same rule for all)."""
  return batch * seq_len / float(np.min(step_times))


def mfu(tps: float, cfg: ModelConfig, seq_len: int, peak: float) -> float:
  return flops.mfu(tps, flops.train_flops_per_token(cfg, seq_len), peak)


def machine() -> dict[str, Any]:
  dev = jax.devices()[0]
  return dict(platform=dev.platform, device=dev.device_kind, n_devices=jax.device_count(),
              cpu_count=os.cpu_count(), processor=platform.processor() or platform.machine(),
              jax=jax.__version__)


def print_table(title: str, rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)
  cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
  lines = [title, "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
  text = "\n".join(lines)
  print(text, flush=True)
  return text


def write_json(name: str, obj: dict[str, Any], out: str | None = None) -> str:
  path = out or os.path.join(RESULTS_DIR, f"{name}.json")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(dict(obj, machine=machine(), time=time.strftime("%Y-%m-%d %H:%M:%S")), f, indent=2)
  print(f"wrote {path}", flush=True)
  return path

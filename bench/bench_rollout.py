"""Rollout sampling throughput: the fast engine vs the single-program sampler (and Tunix).

  python -m bench.bench_rollout                              # RL shape + long tail, ours only
  python -m bench.bench_rollout --tunix-venv /tmp/tunix      # + Tunix 0.1.7's Sampler (RL shape)

The bench model (bench/common.py: d 512, 8 layers, 8 heads of 64, 2 KV heads, MLP 1536, vocab
8192, float32, random init seed 0) with RoPE theta 1e6, the value Tunix's llama3 attention
applies whatever its config says, so all three run the same function of the same weights.
Prompts: random tokens (seed 0), `--prompts` x `--prompt-len`; `--samples` samples each.

  rl          every row generates `--new-tokens` tokens (no stop token), temperature 1.
  long tail   per-row budgets, geometric with mean `--tail-mean`, capped at `--new-tokens`
              (seed 0): the fast engine stops each row at its budget; the baseline (and any
              sampler without per-row budgets) runs until its longest row, max(budgets).
  queue       `--queue-prompts` x `--samples` requests, the same long-tailed budgets, and room
              for `--prompts` x `--samples` rows (the RL shape's): the fast engine in one call
              with `max_rows` (continuous batching: finished rows refilled with waiting
              requests) vs the fast engine one batch of `--prompts` prompts after another (each
              call compacts, and the next waits for its longest row).
  --no-attention  the fast engine with its attention replaced by the identity (a wrong model,
              the same everything else: matmuls, norms, draws, KV writes): what any attention
              kernel could at most bring the engine to, measured against the same baseline
              (whose attention is the model's own, untouched). Use with `--only rl --out`.
tokens/s = tokens the rows needed (rows x new tokens; sum of budgets) / the fastest timed
call. The implementations' timed calls are interleaved (one of each per round), so load
from other jobs on the machine falls on all of them alike; ratios are within one run.

  baseline    `make_sampler(engine="program")`: granite_jax.infer.sampler.sample, the sampler
              before issue 25 (one jitted program; every prompt repeated G times before the
              prefill; each decode step attends over prompt + max_new_tokens cache slots).
  fast        `make_sampler(engine="fast")`: granite_jax.infer.engine.Engine.
  tunix       tunix.generate.sampler.Sampler with tunix.models.llama3 at this shape, our
              weights copied in (q scaled by 1/8: its attention scale is head_dim^-0.5,
              ours 1/64; exact in float), one row per sample (64 prompt strings), cache
              prompt + new tokens; run in its own venv as a subprocess (`--tunix-venv`) whose
              timed calls interleave with ours.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
import time

import jax
import numpy as np

from bench import common
from granite_jax.infer import decode
from granite_jax.infer.sampler import left_pad, make_sampler
from granite_jax.model.params import init_params


def bench_model():
  return dataclasses.replace(common.BENCH["model"], rope_theta=1e6)


def interleaved(fns: dict, warmup: int, repeats: int) -> tuple[dict, dict]:
  """First outputs and timed seconds of each fn, one call of each per round."""
  outs = {k: jax.block_until_ready(f()) for k, f in fns.items()}
  for _ in range(warmup - 1):
    for f in fns.values():
      jax.block_until_ready(f())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(f())
      times[k].append(time.perf_counter() - t)
  return outs, times


def tail_budgets(rows: int, mean: float, cap: int, seed: int = 0) -> np.ndarray:
  return np.minimum(np.random.default_rng(seed).geometric(1.0 / mean, rows), cap).astype(np.int32)


class TunixPeer:
  """Tunix's Sampler on each prompt repeated G times, in a subprocess of `venv`'s python.

  The subprocess loads the weights, compiles (greedy and sampled), then runs one timed
  rollout per `run()` (a line on its stdin), so its calls interleave with ours.
  `greedy`: its first min(32, N) greedy tokens per prompt; `tokens` [rows, N] after `close()`.
  """

  def __init__(self, venv: str, params, cfg, prompts, G: int, N: int, timeout: int):
    self.dir = tempfile.TemporaryDirectory()
    d = self.dir.name
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(os.path.join(d, "params.npz"), **flat)
    np.save(os.path.join(d, "prompts.npy"), np.repeat(prompts, G, axis=0))
    with open(os.path.join(d, "run.py"), "w") as f:
      f.write(_TUNIX_SCRIPT)
    args = dict(d=d, N=N, G=G, cfg=dataclasses.asdict(cfg))
    self.timeout = timeout
    self.proc = subprocess.Popen([os.path.join(venv, "bin", "python"), os.path.join(d, "run.py"),
                                  json.dumps(args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    self._expect("ready")
    self.greedy = np.load(os.path.join(d, "greedy.npy"))

  def _expect(self, word: str):
    line = self.proc.stdout.readline().strip()
    if line != word:
      self.proc.kill()
      raise RuntimeError(f"tunix peer: expected {word!r}, got {line!r}:\n{self.proc.stderr.read()[-3000:]}")

  def run(self):
    self.proc.stdin.write("run\n")
    self.proc.stdin.flush()
    self._expect("done")

  def close(self) -> np.ndarray:
    self.proc.stdin.write("quit\n")
    self.proc.stdin.flush()
    self.proc.wait(self.timeout)
    tokens = np.load(os.path.join(self.dir.name, "tokens.npy"))
    self.dir.cleanup()
    return tokens


_TUNIX_SCRIPT = r'''
import json, os, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from tunix.generate import sampler as sampler_lib
from tunix.models.llama3 import model as llama3

a = json.loads(sys.argv[1])
c, d = a["cfg"], a["d"]
w = dict(np.load(os.path.join(d, "params.npz")))
prompts = np.load(os.path.join(d, "prompts.npy"))
mc = llama3.ModelConfig(num_layers=c["n_layers"], vocab_size=c["vocab_size"], embed_dim=c["d_model"],
                        hidden_dim=c["d_ff"], num_heads=c["n_heads"], head_dim=c["head_dim"],
                        num_kv_heads=c["n_kv_heads"], rope_theta=int(c["rope_theta"]),
                        norm_eps=c["rms_eps"], weight_tying=True)
m = llama3.Llama3(mc, rngs=nnx.Rngs(0))
m.embedder.input_embedding.value = jnp.asarray(w["embed/embedding"])
m.final_norm.w.value = jnp.asarray(w["final_norm/scale"])
q_scale = c["attention_multiplier"] * c["head_dim"] ** 0.5  # theirs multiplies by head_dim^-0.5
for i, layer in enumerate(m.layers):
  g = lambda name: jnp.asarray(w[f"layers/{name}"][i])
  layer.attn.q_proj.w.value = g("attn/q") * q_scale
  layer.attn.k_proj.w.value, layer.attn.v_proj.w.value = g("attn/k"), g("attn/v")
  layer.attn.o_proj.w.value = g("attn/o")
  layer.mlp.gate_proj.kernel.value, layer.mlp.up_proj.kernel.value = g("mlp/gate"), g("mlp/up")
  layer.mlp.down_proj.kernel.value = g("mlp/down")
  layer.input_layernorm.w.value = g("attn_norm/scale")
  layer.post_attention_layernorm.w.value = g("mlp_norm/scale")

class Tok:  # prompts travel as strings of token ids
  def encode(self, s, **kw): return [int(t) for t in s.split()]
  def decode(self, ids, **kw): return " ".join(map(str, ids))
  def bos_id(self): return 0  # falsy: no BOS is prepended
  def eos_id(self): return -1
  def pad_id(self): return 0

P, N = prompts.shape[1], a["N"]
s = sampler_lib.Sampler(m, Tok(), sampler_lib.CacheConfig(cache_size=P + N, num_layers=c["n_layers"],
                                                           num_kv_heads=c["n_kv_heads"],
                                                           head_dim=c["head_dim"]))
texts = [" ".join(map(str, r)) for r in prompts]
kw = dict(max_generation_steps=N, max_prompt_length=P, eos_tokens=[-1], pad_output=True)
run = lambda: s(texts, temperature=1.0, top_p=1.0, seed=1, **kw)
greedy = s(texts[:: a["G"]], temperature=0.0, **dict(kw, max_generation_steps=min(32, N)))
np.save(os.path.join(d, "greedy.npy"), np.asarray(greedy.tokens))
out = run()  # compiles
print("ready", flush=True)
for line in sys.stdin:
  if line.strip() != "run":
    break
  run()
  print("done", flush=True)
np.save(os.path.join(d, "tokens.npy"), np.asarray(out.tokens))
'''


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--prompts", type=int, default=4)
  p.add_argument("--samples", type=int, default=16)
  p.add_argument("--prompt-len", type=int, default=128)
  p.add_argument("--new-tokens", type=int, default=256)
  p.add_argument("--tail-mean", type=float, default=64.0)
  p.add_argument("--repeats", type=int, default=2, help="timed rounds")
  p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (the first compiles)")
  p.add_argument("--queue-prompts", type=int, default=16, help="prompts of the queue scenario")
  p.add_argument("--only", choices=("rl", "tail", "queue"), default=None, help="one scenario")
  p.add_argument("--no-attention", action="store_true", help="the engine's ceiling (see above)")
  p.add_argument("--tunix-venv", default=None, help="a venv with google-tunix==0.1.7 (RL shape)")
  p.add_argument("--tunix-timeout", type=int, default=3600)
  p.add_argument("--out", default=None, help="JSON path (default bench/results/rollout.json)")
  a = p.parse_args(argv)
  if a.no_attention:  # before anything is traced: every engine program is built without it
    decode.attend = lambda q_RNH, *args: q_RNH
  cfg = bench_model()
  Bp, G, Pl, N = a.prompts, a.samples, a.prompt_len, a.new_tokens
  R = Bp * G
  params = init_params(cfg, jax.random.PRNGKey(0))
  prompts = common.token_batches(cfg.vocab_size, Bp, Pl, 1)[0]
  padded, lens = left_pad(prompts)
  rng, T1 = jax.random.PRNGKey(1), np.float32(1.0)
  knobs = (T1, np.float32(1.0), np.int32(0))
  result = dict(model=dataclasses.asdict(cfg), prompts=Bp, samples=G, prompt_len=Pl, new_tokens=N,
                warmup=a.warmup, repeats=a.repeats, scenarios={})
  title = (f"rollout sampling | d={cfg.d_model} L={cfg.n_layers} heads={cfg.n_heads}x{cfg.head_dim} "
           f"kv={cfg.n_kv_heads} mlp={cfg.d_ff} V={cfg.vocab_size} {cfg.dtype} | {Bp} prompts x {G} "
           f"samples, prompt {Pl}, temperature 1")
  rows = []

  def add(scenario, impl, needed, times, extra=None):
    row = dict(scenario=scenario, impl=impl, seconds=float(np.min(times)),
               median_s=float(np.median(times)), tokens_per_sec=needed / float(np.min(times)),
               **(extra or {}))
    rows.append(row)
    result["scenarios"].setdefault(scenario, {})[impl] = dict(row, run_times=times)
    return row

  mk = lambda engine, n: make_sampler(cfg, max_new_tokens=n, samples_per_prompt=G, engine=engine)
  if a.only in (None, "rl"):
    base, fast = mk("program", N), mk("fast", N)
    fns = {"baseline": lambda: base(params, padded, lens, rng, *knobs),
           "fast": lambda: fast(params, padded, lens, rng, *knobs)}
    peer = None
    if a.tunix_venv:
      peer = TunixPeer(a.tunix_venv, params, cfg, prompts, G, N, a.tunix_timeout)
      fns["tunix"] = peer.run
    outs, times = interleaved(fns, a.warmup, a.repeats)
    for k in ("baseline", "fast"):
      assert (np.asarray(outs[k]["lengths"]) == N).all(), k
    result["no_attention"] = a.no_attention
    b = add("rl", "baseline (program)", R * N, times["baseline"])
    f = add("rl", "fast (engine)", R * N, times["fast"])
    f["vs_baseline"] = b["seconds"] / f["seconds"]
    if peer is not None:
      assert peer.close().shape == (R, N)  # no row stopped early
      t = add("rl", "tunix 0.1.7 Sampler", R * N, times["tunix"])
      t["vs_baseline"] = b["seconds"] / t["seconds"]
      f["vs_tunix"] = t["seconds"] / f["seconds"]
      ours = np.asarray(fast(params, padded, lens, rng, np.float32(0), np.float32(1), np.int32(0))
                        ["tokens"])[::G, :min(32, N)]
      result["greedy_agreement_vs_tunix"] = float((ours == peer.greedy).mean())
  if a.only in (None, "tail"):
    budgets = tail_budgets(R, a.tail_mean, N)
    top = int(budgets.max())
    base, fast = mk("program", top), mk("fast", N)
    outs, times = interleaved({"baseline": lambda: base(params, padded, lens, rng, *knobs),
                               "fast": lambda: fast(params, padded, lens, rng, *knobs, budgets)},
                              a.warmup, a.repeats)
    np.testing.assert_array_equal(np.asarray(outs["fast"]["lengths"]), budgets)
    need = int(budgets.sum())
    b = add("long tail", f"baseline (program, runs to max {top})", need, times["baseline"])
    f = add("long tail", "fast (engine, per-row budgets)", need, times["fast"])
    f["vs_baseline"] = b["seconds"] / f["seconds"]
    result["tail_budgets"] = dict(sum=need, max=top, mean=float(budgets.mean()))
  if a.only in (None, "queue"):
    Bq = a.queue_prompts - a.queue_prompts % Bp
    qprompts, qlens = left_pad(common.token_batches(cfg.vocab_size, Bq, Pl, 1)[0])
    budgets = tail_budgets(Bq * G, a.tail_mean, N, seed=1)
    refill = make_sampler(cfg, max_new_tokens=N, samples_per_prompt=G, engine="fast", max_rows=R)
    fast = mk("fast", N)
    batches = lambda: [fast(params, qprompts[i:i + Bp], qlens[i:i + Bp], rng, *knobs, budgets[i * G:(i + Bp) * G])
                       for i in range(0, Bq, Bp)]
    outs, times = interleaved({"batches": batches,
                               "refill": lambda: refill(params, qprompts, qlens, rng, *knobs, budgets)},
                              a.warmup, a.repeats)
    np.testing.assert_array_equal(np.asarray(outs["refill"]["lengths"]), budgets)
    np.testing.assert_array_equal(np.concatenate([np.asarray(o["lengths"]) for o in outs["batches"]]), budgets)
    need = int(budgets.sum())
    b = add("queue", f"fast, {Bq // Bp} calls of {R} rows", need, times["batches"])
    f = add("queue", f"fast, 1 call, {R} rows refilled", need, times["refill"])
    f["vs_batches"] = b["seconds"] / f["seconds"]
    result["queue_budgets"] = dict(requests=Bq * G, rows=R, sum=need, mean=float(budgets.mean()))
  result["rows"] = rows
  result["table"] = common.print_table(title, rows, ["scenario", "impl", "seconds", "median_s",
                                                     "tokens_per_sec", "vs_baseline", "vs_tunix",
                                                     "vs_batches"])
  if "greedy_agreement_vs_tunix" in result:
    print(f"greedy tokens equal to tunix's (first 32 of one sample per prompt): "
          f"{100 * result['greedy_agreement_vs_tunix']:.1f}%")
  common.write_json("rollout", result, a.out)
  return result


if __name__ == "__main__":
  main()

"""RLHF reward-model scoring throughput: packed rows through the one sharded program vs one
sequence at a time, in one run.

  python -m bench.bench_rm_scoring                       # 256 rollouts, tiny reward model
  python -m bench.bench_rm_scoring --n 512 --rows 16 32 64

The reward model has the `tiny` preset's widths (d 256, 4 layers, vocab 4096; random weights,
float32, XLA attention) and scores a synthetic rollout batch of the tiny RLHF stage's shape:
`--n` token sequences of prompt (20-96 tokens) + response (1-32) + <|end_of_text|>, the model's
`seq_len` 128 (configs/reward_model.py:tiny; the few longer ones keep their last 128 tokens).
  one at a time  the scorer before issue 27: one jitted call per sequence, padded to seq_len
  batched R      rl/rm_scorer.py's RewardModelScorer: sequences packed into rows of seq_len (best
                 fit, longest first), R rows per call of `jit_rm_score` on every device's mesh;
                 64 = the tiny RLHF step's micro-batch (8 prompts x 8 samples, grad_accum 1)
Both get token ids (tokenizing is the same for both and not timed). sequences/s = n / the fastest
of --repeats passes after a warm-up pass (the compile). Scores are checked against one at a time.
Results: bench/results/rm_scoring.json.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from bench.common import machine, print_table, write_json


def rollout_ids(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  return [rng.integers(2, vocab, rng.integers(20, 97) + rng.integers(1, 33)).tolist() + [1] for _ in range(n)]


def one_at_a_time(params, cfg, seq_len: int):
  """The pre-issue-27 path: `score(ids)` per sequence, right-padded to seq_len."""
  from granite_jax.rl import reward_model as rm_lib
  fn = jax.jit(lambda p, t, s: rm_lib.rm_scores(p, t, s, cfg=cfg))

  def score_all(ids):
    out = []
    for x in ids:
      tokens, seg = rm_lib.pad_rows([x], seq_len)
      out.append(float(fn(params, tokens, seg)[0]))
    return np.array(out, np.float32)
  return score_all


def fastest(fn, ids, repeats: int):
  out = fn(ids)  # warm-up: compiles
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn(ids)
    times.append(time.perf_counter() - t)
  return out, min(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--n", type=int, default=256)
  ap.add_argument("--rows", type=int, nargs="+", default=[64, 16])
  ap.add_argument("--seq-len", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args()
  from granite_jax.model import preset
  from granite_jax.rl import reward_model as rm_lib
  from granite_jax.rl.rm_scorer import RewardModelScorer, default_mesh
  cfg = preset("tiny", attention_impl="xla", dtype="float32", remat_policy="none")
  params = rm_lib.init_rm_params(cfg, jax.random.PRNGKey(0))
  params["head"]["w"] = jax.random.normal(jax.random.PRNGKey(1), (cfg.d_model,)) / cfg.d_model ** 0.5
  ids = rollout_ids(a.n, cfg.vocab_size)
  tokens = sum(min(len(x), a.seq_len) for x in ids)
  want, t_one = fastest(one_at_a_time(params, cfg, a.seq_len), ids, a.repeats)
  rows = [dict(scorer="one at a time", rows_per_call="1", calls=a.n, rows=a.n, fill=tokens / (a.n * a.seq_len),
               seconds=t_one, seqs_per_s=a.n / t_one, speedup=1.0, max_abs_diff=0.0)]
  mesh = default_mesh()
  placed = jax.device_put(params, rm_lib.rm_param_shardings(cfg, mesh))
  for r in a.rows:
    s = RewardModelScorer(placed, cfg, None, mesh=mesh, rows=r, seq_len=a.seq_len)
    got, t = fastest(s.score_ids, ids, a.repeats)
    calls = s.stats["calls"] // (a.repeats + 1)
    rows.append(dict(scorer=f"batched {r}", rows_per_call=str(r), calls=calls, rows=calls * r,
                     fill=tokens / (calls * r * a.seq_len), seconds=t, seqs_per_s=a.n / t, speedup=t_one / t,
                     max_abs_diff=float(np.abs(got - want).max())))
  title = (f"RLHF reward-model scoring | {a.n} rollouts, {tokens:,} tokens, seq_len {a.seq_len} | tiny RM "
           f"d={cfg.d_model} L={cfg.n_layers} float32 | {jax.device_count()} {jax.devices()[0].platform} device(s)")
  print_table(title, rows, ["scorer", "calls", "rows", "fill", "seconds", "seqs_per_s", "speedup", "max_abs_diff"])
  write_json("rm_scoring", dict(n=a.n, seq_len=a.seq_len, tokens=tokens, rows=rows, device=machine()))


if __name__ == "__main__":
  main()

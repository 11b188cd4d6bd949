"""When does in-context copying (an induction circuit) form in the demo model? (issue 15)

Trains the demo pipeline's model (granite_jax/demo/stages.py MODEL: 2 layers, d 128) from scratch
with the project's optimizer as the demo pretraining sets it (LR 3e-3 constant after 20 warm-up
steps, granite_jax.optim.make_optimizer: clip, AdamW, its weight-decay mask) on rows of
uniformly random tokens in which a span recurs, so only copying predicts the repeat:
  --rows span      one span of T/8..T/4 tokens recurs once, at a random later gap;
  --rows periodic  the row is one span of 8-32 tokens repeated to the row's end (the period
                   differs per row, so the copy offset must be found in context).
Prints, every --every steps, the held-out loss on the repeats' tokens over the loss on the other
tokens (1: no copying; ~0: copied) on held-out rows of both kinds (so whether copying learnt on
one carries to the other shows), with the tokens seen, so formation time can be mapped against
batch x context (Aoyama et al. 2025, arXiv 2511.16893, fit ~10^5.7 x sqrt(batch x context)
tokens). A measurement, not a test: nothing is asserted.

  python -m bench.bench_copy_formation --rows periodic --batch 8 --seq-len 128 --steps 3000
  python -m bench.bench_copy_formation --batch 4 --seq-len 64 --steps 40000 --every 2000
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import print_table, write_json
from granite_jax.demo.stages import MODEL
from granite_jax.model.config import preset
from granite_jax.model.decoder import Granite
from granite_jax.model.params import init_params
from granite_jax.optim import default_optim_config, make_optimizer


def copy_rows(rng: np.random.Generator, n: int, T: int, alphabet: int):
  """int tokens [n, T] and bool [n, T]: True where the token repeats the span (past its first)."""
  x_BT = rng.integers(8, 8 + alphabet, (n, T))
  rep_BT = np.zeros((n, T), bool)
  for b in range(n):
    L = rng.integers(T // 8, T // 4 + 1)
    s = rng.integers(0, T - 2 * L + 1)
    d = rng.integers(L, T - s - L + 1)
    x_BT[b, s + d:s + d + L] = x_BT[b, s:s + L]
    rep_BT[b, s + d + 1:s + d + L] = True  # the repeat's first token is not predictable
  return x_BT, rep_BT


def periodic_rows(rng: np.random.Generator, n: int, T: int, alphabet: int, lo: int = 8, hi: int = 32):
  """Rows that are one random span of lo..hi tokens repeated to length T; True past the first period."""
  x_BT = np.zeros((n, T), np.int64)
  rep_BT = np.zeros((n, T), bool)
  for b in range(n):
    L = rng.integers(lo, hi + 1)
    x_BT[b] = np.resize(rng.integers(8, 8 + alphabet, L), T)
    rep_BT[b, L:] = True
  return x_BT, rep_BT


ROWS = {"span": copy_rows, "periodic": periodic_rows}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", choices=sorted(ROWS), default="span", help="what the model trains on")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq-len", type=int, default=256)
  p.add_argument("--alphabet", type=int, default=4088, help="distinct tokens in a row (of the 4,096)")
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--every", type=int, default=250)
  p.add_argument("--lr", type=float, default=3e-3)
  a = p.parse_args(argv)
  cfg = preset("tiny", **MODEL)
  model = Granite(cfg)
  optim = default_optim_config()
  optim.schedule, optim.peak_lr, optim.warmup_steps = "constant", a.lr, 20  # as the demo's pretrain stage
  tx, _ = make_optimizer(optim, total_steps=a.steps, tokens_per_step=a.batch * a.seq_len)
  params = init_params(cfg, jax.random.PRNGKey(0))
  opt_state = tx.init(params)

  def losses(params, x_BT, rep_BT):
    logp_BTV = jax.nn.log_softmax(model.apply({"params": params}, x_BT[:, :-1]))
    nll_BT = -jnp.take_along_axis(logp_BTV, x_BT[:, 1:, None], -1)[..., 0]
    rep = rep_BT[:, 1:]
    return nll_BT.mean(), (jnp.sum(nll_BT * rep) / rep.sum(), jnp.sum(nll_BT * ~rep) / (~rep).sum())

  @jax.jit
  def step(params, opt_state, x_BT, rep_BT):
    g = jax.grad(lambda p: losses(p, x_BT, rep_BT)[0])(params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  held = jax.jit(lambda p, x, r: losses(p, x, r)[1])
  evals = {k: make(np.random.default_rng(1), 64, a.seq_len, a.alphabet) for k, make in ROWS.items()}
  rng, rows, t0 = np.random.default_rng(0), [], time.time()
  for i in range(a.steps + 1):
    if i % a.every == 0:
      row = dict(step=i, tokens=i * a.batch * a.seq_len)
      for k, (ex_BT, erep_BT) in evals.items():
        rep, other = map(float, held(params, ex_BT, erep_BT))
        row.update({f"{k}_repeat_loss": rep, f"{k}_other_loss": other, f"{k}_ratio": rep / other})
      rows.append(dict(row, seconds=time.time() - t0))
      print(rows[-1], flush=True)
    x_BT, rep_BT = ROWS[a.rows](rng, a.batch, a.seq_len, a.alphabet)
    params, opt_state = step(params, opt_state, x_BT, rep_BT)
  print_table(f"copy formation: trained on {a.rows} rows, batch {a.batch} x {a.seq_len}, "
              f"alphabet {a.alphabet}", rows,
              ["step", "tokens"] + [f"{k}_{m}" for k in ROWS for m in ("repeat_loss", "ratio")] + ["seconds"])
  write_json(f"copy_formation_{a.rows}_b{a.batch}_t{a.seq_len}", dict(args=vars(a), rows=rows))


if __name__ == "__main__":
  main()

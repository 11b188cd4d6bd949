"""The rollout engine: prefill once per prompt, decode in chunks whose cost follows the live tokens.

`Engine(cfg, ...)(params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, max_new_Q)`
returns what `sampler.sample` returns (tokens / logprobs [B*G, N], lengths [B*G], rows
prompt-major) for the same requests, with three kinds of work left out:
  - each prompt is prefilled once, and its KV is shared by its G samples (infer/decode.py);
  - decode runs in chunks of `chunk` steps, each a jitted `lax.while_loop` over a generated KV
    of S slots, S the filled length at the chunk's end rounded up to `length_bucket`: a step
    reads what is written, not prompt + max_new_tokens slots (one compiled program per
    (rows, S) met; the chunk's end is a traced bound);
  - between chunks, when the live rows fit in half the batch or fewer (power-of-two row
    buckets), the batch is compacted to them: a row that stopped (a stop id, or its own
    `max_new_Q` budget) stops costing steps. After the first compaction each row carries its
    own copy of its prompt's KV (G = 1), gathered once.
The loop ends when every row is done. Draws use one key per request and token (infer/draw.py),
so a request's tokens do not depend on the batch it was decoded in; greedy tokens equal the
single-program sampler's.
Single device only (no mesh): `sampler.make_sampler` keeps its single program for meshes.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from granite_jax.infer import decode, draw
from granite_jax.model import ModelConfig
from granite_jax.model.decoder import decode_params


class Spec(NamedTuple):
  """What the jitted pieces are specialised on besides shapes (equal specs share programs)."""
  cfg: ModelConfig
  pad_id: int
  mode: str  # draw.pick_mode: only the branch in use is compiled


def _next_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


class Engine:
  def __init__(self, cfg: ModelConfig, *, max_new_tokens: int, stop_ids=(), samples_per_prompt: int = 1,
               pad_id: int = 0, chunk: int = 32, length_bucket: int = 32):
    if max_new_tokens < 1 or samples_per_prompt < 1 or chunk < 1 or length_bucket < 1:
      raise ValueError(f"Engine: max_new_tokens={max_new_tokens}, samples_per_prompt="
                       f"{samples_per_prompt}, chunk={chunk}, length_bucket={length_bucket} "
                       "must be positive")
    self.cfg, self.N, self.G, self.pad_id = cfg, max_new_tokens, samples_per_prompt, pad_id
    self.stop_S = np.asarray(tuple(stop_ids) or (-1,), np.int32)
    self.chunk, self.bucket = chunk, length_bucket

  def __call__(self, params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, max_new_Q=None):
    sp = Spec(self.cfg, self.pad_id, draw.pick_mode(temperature, top_p, top_k))
    N, Q = self.N, len(lengths_B) * self.G
    budget_Q = np.full(Q, N, np.int32) if max_new_Q is None else np.clip(max_new_Q, 0, N).astype(np.int32)
    if budget_Q.shape != (Q,):
      raise ValueError(f"max_new_Q: expected shape ({Q},), got {budget_Q.shape}")
    dparams = _decode_params(sp.cfg, params)
    logits_BV, prompt = _prefill(sp.cfg, dparams, jnp.asarray(prompts_BP, jnp.int32),
                                 jnp.asarray(lengths_B, jnp.int32))
    knobs = (jnp.float32(temperature), jnp.float32(top_p), jnp.int32(top_k))
    stop_S = jnp.asarray(self.stop_S)
    state = _start(sp, N, logits_BV, prompt["lengths_B"], rng, jnp.asarray(budget_Q), stop_S, *knobs)
    out = dict(tokens=jnp.full((Q, N), sp.pad_id, jnp.int32), logprobs=jnp.zeros((Q, N), jnp.float32),
               lengths=jnp.zeros((Q,), jnp.int32))
    gen = None
    while True:
      t, done_R = jax.device_get((state["t"], state["done"]))
      if t >= N or done_R.all():
        break
      live_R = np.flatnonzero(~done_R)
      rows = _next_pow2(len(live_R))
      if rows < len(done_R):  # save every row, keep the live ones (padded with done rows)
        out = _save(out, state)
        keep_R = np.concatenate([live_R, np.flatnonzero(done_R)[:rows - len(live_R)]]).astype(np.int32)
        state, gen, prompt = _compact(state, gen, prompt, jnp.asarray(keep_R),
                                      len(done_R) // len(prompt["lengths_B"]))
      t_end = min(t + self.chunk, N)
      slots = min(-(-(t_end - 1) // self.bucket) * self.bucket, N - 1)  # token t_end - 2 is fed last
      if gen is None:
        groups = len(prompt["lengths_B"])
        gen = decode.init_gen_kv(sp.cfg, groups, len(state["done"]) // groups, slots)
      elif gen["v"][0].shape[3] < slots:
        gen = _grow(gen, slots)
      state, gen = _chunk(sp, dparams, prompt, gen, state, jnp.int32(t_end), stop_S, *knobs)
    return _save(out, state)


_decode_params = jax.jit(decode_params, static_argnums=0)
_prefill = jax.jit(decode.prefill, static_argnums=0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _start(sp: Spec, N: int, logits_BV, plen_B, rng, budget_Q, stop_S, temperature, top_p, top_k):
  """Token 0 of every request, from its prompt's prefill logits (request q = b*G + g)."""
  Q = budget_Q.shape[0]
  req_R = jnp.arange(Q, dtype=jnp.int32)
  prompt_R = req_R // (Q // logits_BV.shape[0])
  keys_R = draw.row_keys(rng, req_R)
  tok_R, lp_R = draw.pick_rows(logits_BV[prompt_R], keys_R, 0, temperature, top_p, top_k, sp.mode)
  s = dict(t=jnp.int32(0), req=req_R, keys=keys_R, budget=budget_Q, pos0=plen_B[prompt_R],
           done=jnp.zeros((Q,), bool), tokens=jnp.full((Q, N), sp.pad_id, jnp.int32),
           logprobs=jnp.zeros((Q, N), jnp.float32), lengths=jnp.zeros((Q,), jnp.int32))
  return _record(sp, s, tok_R, lp_R, stop_S)


def _record(sp: Spec, s, tok_R, lp_R, stop_S):
  """Token s["t"] of the live rows -> the row buffers; then t + 1."""
  t = s["t"]
  live_R = ~s["done"] & (t < s["budget"])
  tok_R = jnp.where(live_R, tok_R, sp.pad_id)
  lp_R = jnp.where(live_R, lp_R, 0.0)
  done_R = ~live_R | jnp.isin(tok_R, stop_S) | (t + 1 >= s["budget"])
  return dict(s, t=t + 1, tok=tok_R, done=s["done"] | done_R,
              tokens=jax.lax.dynamic_update_slice(s["tokens"], tok_R[:, None], (0, t)),
              logprobs=jax.lax.dynamic_update_slice(s["logprobs"], lp_R[:, None], (0, t)),
              lengths=s["lengths"] + live_R.astype(jnp.int32))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(3, 4))
def _chunk(sp: Spec, params, prompt, gen, state, t_end, stop_S, temperature, top_p, top_k):
  """Decode steps until token t_end - 1 is picked or every row is done."""
  def body(c):
    s, gen = c
    t = s["t"]  # feed token t - 1 into slot t - 1, pick token t
    logits_RV, gen = decode.decode_step(sp.cfg, params, s["tok"], s["pos0"] + t - 1, prompt, gen, t - 1)
    tok_R, lp_R = draw.pick_rows(logits_RV, s["keys"], t, temperature, top_p, top_k, sp.mode)
    return _record(sp, s, tok_R, lp_R, stop_S), gen

  cond = lambda c: (c[0]["t"] < t_end) & ~jnp.all(c[0]["done"])
  return jax.lax.while_loop(cond, body, (state, gen))


_grow = jax.jit(decode.grow_gen_kv, static_argnums=1)


@functools.partial(jax.jit, static_argnums=4)
def _compact(state, gen, prompt, keep_R, G):
  """Rows `keep_R` of the batch; the prompt KV becomes per row (G = 1) from here on."""
  n_live = jnp.sum(~state["done"])
  take = lambda a: jnp.take(a, keep_R, axis=0)
  s = {k: (v if k == "t" else take(v)) for k, v in state.items()}
  s["req"] = jnp.where(jnp.arange(len(keep_R)) < n_live, s["req"], -1)  # padding rows: no request
  gen = None if gen is None else decode.take_rows(gen, keep_R)
  at_B = keep_R // G
  prompt = dict(k=tuple(jnp.take(a, at_B, axis=0) for a in prompt["k"]),
                v=tuple(jnp.take(a, at_B, axis=0) for a in prompt["v"]),
                valid_BP=jnp.take(prompt["valid_BP"], at_B, axis=0),
                lengths_B=jnp.take(prompt["lengths_B"], at_B, axis=0))
  return s, gen, prompt


@functools.partial(jax.jit, donate_argnums=0)
def _save(out, state):
  """Every row with a request -> its request's output row."""
  Q = out["lengths"].shape[0]
  at_R = jnp.where(state["req"] >= 0, state["req"], Q)  # out of range: dropped
  return {k: out[k].at[at_R].set(state[k], mode="drop") for k in out}

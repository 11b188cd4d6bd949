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
With `max_rows` below the call's requests (B*G), the rest wait (continuous batching): the
call starts on the first prompts' samples (`max_rows` rounded down to whole prompts per data
shard, at least one), and between chunks the rows that finished are refilled with waiting requests, one
request per row: the batch goes to the per-row layout (G = 1), each admitted row prefills
its prompt (a prompt whose samples are admitted across two refills is prefilled twice) and
counts its own tokens (`t0`: the step it started at), so rows of different ages decode side
by side (their KV written by a scatter, one slot per row). Compaction waits until nothing waits.
The loop ends when every row is done and nothing waits.
Draws use one key per request and token (infer/draw.py), so a request's tokens do not depend on
the batch it was decoded in (nor on when it was admitted: a call with `max_rows` returns what
one without it returns); greedy tokens equal the single-program sampler's.

On a mesh (`mesh=` with several devices) the engine runs in the RL rollout layout
(sharding/rules.py `rollout_rules(mesh, rollout_axes)`, the layout of `sampler.make_sampler`'s
rollout program): the weights are cast and resharded once per call (split per layer), heads /
KV heads / MLP / vocabulary over the `rollout_axes` devices (tensor parallel), and every row
array, prompt KV and generated KV over the remaining batch axes ("data", D ways), the KV also
by KV heads. Each data shard compacts its own rows (D x a power-of-two bucket, the largest
shard's live rows): no KV crosses data shards, and every piece keeps rows and heads where they
are (explicit sharding constraints here and in infer/decode.py; a decode step's collectives are
the tensor-parallel all-reduces and the logits' gather over the rollout axes). A prompt batch
that D does not divide is padded with budget-0 copies of its last prompt. A request waits
for a row of its own data shard (its prompt's), so refills move nothing between shards either.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from granite_jax.infer import decode, draw
from granite_jax.infer.admission import Queue, next_pow2
from granite_jax.infer.layout import Layout, axis_rules, pin, pin_prompt, rollout_param_shardings
from granite_jax.model import ModelConfig
from granite_jax.model.decoder import decode_params
from granite_jax.sharding.jit import mesh_context
from granite_jax.sharding.rules import rollout_rules


class Piece(NamedTuple):
  """One jitted piece of an engine call with abstract arguments (`Engine.pieces`)."""
  jitted: object
  args: tuple      # jitted.lower(*args): static arguments included
  resident: tuple  # abstract buffers live beside it that are not its arguments


class Spec(NamedTuple):
  """What the jitted pieces are specialised on besides shapes (equal specs share programs)."""
  cfg: ModelConfig
  pad_id: int
  mode: str  # draw.pick_mode: only the branch in use is compiled
  lay: Layout | None = None
  aligned: bool = True  # every row at the same token index (no refill yet): one slot per step


class Engine:
  def __init__(self, cfg: ModelConfig, *, max_new_tokens: int, stop_ids=(), samples_per_prompt: int = 1,
               pad_id: int = 0, chunk: int = 32, length_bucket: int = 32, mesh: Mesh | None = None,
               rollout_axes=(), param_shardings=None, max_rows: int | None = None):
    if max_new_tokens < 1 or samples_per_prompt < 1 or chunk < 1 or length_bucket < 1 or (
        max_rows is not None and max_rows < 1):
      raise ValueError(f"Engine: max_new_tokens={max_new_tokens}, samples_per_prompt="
                       f"{samples_per_prompt}, chunk={chunk}, length_bucket={length_bucket}, "
                       f"max_rows={max_rows} must be positive")
    self.cfg, self.N, self.G, self.pad_id = cfg, max_new_tokens, samples_per_prompt, pad_id
    self.max_rows = max_rows
    self.stop_S = np.asarray(tuple(stop_ids) or (-1,), np.int32)
    self.chunk, self.bucket = chunk, length_bucket
    self.lay = self._to_rollout = self._rollout_shardings = None
    if mesh is not None and mesh.size > 1:
      rules = rollout_rules(mesh, tuple(rollout_axes))
      r = dict(rules)
      axes = lambda x: () if x is None else ((x,) if isinstance(x, str) else tuple(x))
      batch, tp = axes(r["act_batch"]), axes(r["act_kv_heads"])
      self.lay = Layout(mesh, rules, batch, tp, math.prod(mesh.shape[a] for a in batch))
      train = rollout_param_shardings(cfg, mesh, tuple(rollout_axes))  # ValueError: ways vs heads
      drop_layer = lambda s: NamedSharding(mesh, P(*tuple(s.spec)[1:]))
      out = {k: v for k, v in train.items() if k != "layers"}
      out["layers"] = (jax.tree.map(drop_layer, train["layers"]),) * cfg.n_layers
      # One reshard per call, cast and split per layer: the rollout layout's decode parameters.
      self._to_rollout = jax.jit(functools.partial(decode_params, cfg), out_shardings=out,
                                 in_shardings=(param_shardings,) if param_shardings is not None else None)
      self._rollout_shardings = out

  def _first(self, Bd: int, D: int) -> int:
    """Prompts per data shard in a call's first batch (all of them unless `max_rows` caps it)."""
    if self.max_rows is None:
      return Bd
    return max(1, min(Bd, self.max_rows // (D * self.G)))

  def pieces(self, params, n_prompts: int, prompt_len: int, temperature, top_p, top_k,
             slots: int | None = None) -> dict[str, "Piece"]:
    """The jitted pieces a call runs at its memory peaks, with abstract arguments at these shapes
    (`params`: the training parameters, abstract or not; nothing sized by them is allocated), for lowering
    without running (plan/programs.py, the dry run): {name: Piece(jitted, args, resident)},
    `jitted.lower(*args)` under the mesh (static arguments included in `args`), `resident` the
    abstract buffers of the call that are live beside the piece but are not its arguments.
      reshard  the weights to the decode parameters (cast, split per layer; rollout layout);
      prefill  the first batch's prompts (all n_prompts unless `max_rows` caps it), once each;
      decode   a chunk over every row of the first batch (its prompts x G, the group layout before
               any compaction) with `slots` generated-KV slots (default the largest the engine
               allocates: N - 1);
      compact  the first compaction at `slots` (rows halve, the prompt KV becomes per row); absent
               when a data shard holds one row;
      refill   (`max_rows` below n_prompts x G) a chunk over as many rows in the per-row layout
               (each row its own prompt KV), rows of different ages.
    A prompt batch that the data shards do not divide is padded as a call pads it."""
    lay, N, G = self.lay, self.N, self.G
    sp = Spec(self.cfg, self.pad_id, draw.pick_mode(temperature, top_p, top_k), lay)
    D = 1 if lay is None else lay.D
    Pn = n_prompts + (-n_prompts % D)
    B0 = D * self._first(Pn // D, D)
    Q, Q0 = Pn * G, B0 * G
    slots = N - 1 if slots is None else slots
    sds = lambda a, sh=None: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)

    def at(tree, kv=False):  # where the pieces' outputs are (compiled outputs drop 1-device axes)
      if lay is None:
        return jax.tree.map(sds, tree)
      drop = lambda x: None if x is None else (tuple(a for a in ((x,) if isinstance(x, str) else x)
                                                     if lay.mesh.shape[a] > 1) or None)
      spec = lambda a: NamedSharding(lay.mesh, P(*(drop(x) for x in lay.spec(a, kv).spec)))
      return jax.tree.map(lambda a: sds(a, spec(a)), tree)
    i32, f32 = np.int32, np.float32
    one = lambda shape, dtype: at(jax.ShapeDtypeStruct(shape, dtype))
    with mesh_context(lay.mesh) if lay is not None else contextlib.nullcontext():
      if lay is None:
        reshard = Piece(_decode_params, (self.cfg, params), ())
        dparams = jax.eval_shape(functools.partial(decode_params, self.cfg), params)
      else:
        reshard = Piece(self._to_rollout, (params,), ())
        dparams = jax.tree.map(sds, jax.eval_shape(self._to_rollout, params), self._rollout_shardings)
      prompts, lengths = one((B0, prompt_len), i32), one((B0,), i32)
      logits, prompt = jax.eval_shape(functools.partial(_prefill, self.cfg, lay), dparams, prompts, lengths)
      logits = at(logits)
      prompt = _at_prompt(at, prompt)
      # Scalars and stop ids as a call passes them (uncommitted: where they are is in the program).
      knobs = (jnp.float32(temperature), jnp.float32(top_p), jnp.int32(top_k))
      stop_S = jnp.asarray(self.stop_S)
      rng = jax.ShapeDtypeStruct((2,), np.uint32)
      state = at(jax.eval_shape(functools.partial(_start, sp, N), logits, prompt["lengths_B"], None, rng,
                                one((Q0,), i32), one((Q0,), i32), stop_S, *knobs))
      gen = at(jax.eval_shape(lambda: decode.init_gen_kv(self.cfg, B0, G, slots)), True)
      out = dict(tokens=one((Q, N), i32), logprobs=one((Q, N), f32), lengths=one((Q,), i32))
      train = tuple(jax.tree.leaves(params))
      got = dict(reshard=reshard,
                 prefill=Piece(_prefill, (self.cfg, lay, dparams, prompts, lengths), train),
                 decode=Piece(_chunk, (sp, dparams, prompt, gen, state, jnp.int32(N), stop_S, *knobs),
                              train + tuple(jax.tree.leaves(out))))
      rows = next_pow2(Q0 // D) // 2  # the most rows a compaction keeps per data shard
      if rows >= 1:
        keep = one((rows,), i32) if lay is None else one((D, rows), i32)
        got["compact"] = Piece(_compact, (lay, state, gen, prompt, keep, G),
                               train + tuple(jax.tree.leaves((dparams, out))))
      if Q0 < Q:
        keep = one((Q0,), i32) if lay is None else one((D, Q0 // D), i32)
        s1, gen1, prompt1 = jax.eval_shape(lambda *a: _compact(lay, *a, G), state, gen, prompt, keep)
        got["refill"] = Piece(_chunk, (sp._replace(aligned=False), dparams, _at_prompt(at, prompt1),
                                       at(gen1, True), at(s1), jnp.int32(N), stop_S, *knobs),
                              train + tuple(jax.tree.leaves(out)))
    return got

  def __call__(self, params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, max_new_Q=None):
    lay = self.lay
    sp = Spec(self.cfg, self.pad_id, draw.pick_mode(temperature, top_p, top_k), lay)
    N, G, Q = self.N, self.G, len(lengths_B) * self.G
    budget_Q = np.full(Q, N, np.int32) if max_new_Q is None else np.clip(max_new_Q, 0, N).astype(np.int32)
    if budget_Q.shape != (Q,):
      raise ValueError(f"max_new_Q: expected shape ({Q},), got {budget_Q.shape}")
    prompts_BP, lengths_B = np.asarray(prompts_BP, np.int32), np.asarray(lengths_B, np.int32)
    if lay is None:
      return self._run(sp, params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, budget_Q)
    extra = -len(lengths_B) % lay.D  # budget-0 copies of the last prompt: D divides the batch
    if extra:
      prompts_BP = np.concatenate([prompts_BP, np.repeat(prompts_BP[-1:], extra, 0)])
      lengths_B = np.concatenate([lengths_B, np.repeat(lengths_B[-1:], extra)])
      budget_Q = np.concatenate([budget_Q, np.zeros(extra * G, np.int32)])
    with mesh_context(lay.mesh):
      out = self._run(sp, params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, budget_Q)
    return {k: v[:Q] for k, v in out.items()} if extra else out

  def _run(self, sp: Spec, params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, budget_Q):
    lay, N, G, Q = sp.lay, self.N, self.G, len(budget_Q)
    D = 1 if lay is None else lay.D
    put = (lambda a: jnp.asarray(a)) if lay is None else (lambda a: jax.device_put(a, lay.spec(a)))
    per_shard = (lambda x: put(x[0])) if lay is None else put  # [D, r] row indices: [r] on one device
    dparams = _decode_params(sp.cfg, params) if lay is None else self._to_rollout(params)
    knobs = (jnp.float32(temperature), jnp.float32(top_p), jnp.int32(top_k))
    stop_S = jnp.asarray(self.stop_S)
    # The first batch: each data shard's first prompts (all of them unless max_rows caps it).
    Bd = len(lengths_B) // D
    first_B = (np.arange(D)[:, None] * Bd + np.arange(self._first(Bd, D))).ravel()
    req_R = (first_B[:, None] * G + np.arange(G)).ravel().astype(np.int32)
    queue = Queue(budget_Q, D, req_R) if len(req_R) < Q else None
    logits_BV, prompt = _prefill(sp.cfg, lay, dparams, put(prompts_BP[first_B]), put(lengths_B[first_B]))
    state = _start(sp, N, logits_BV, prompt["lengths_B"], None, rng, put(req_R), put(budget_Q[req_R]),
                   stop_S, *knobs)
    zeros = dict(tokens=np.full((Q, N), sp.pad_id, np.int32), logprobs=np.zeros((Q, N), np.float32),
                 lengths=np.zeros((Q,), np.int32))
    out = {k: put(v) for k, v in zeros.items()}
    gen = None
    while True:
      t, done_R, t0_R = self._flags(lay, state)
      if queue is not None and queue.admits(done_R.reshape(D, -1)):
        out = _save(lay, out, state)  # the finished rows' outputs, before their rows are reused
        if sp.aligned:  # to the per-row layout: every row keeps its place and gets its prompt's KV
          keep_DR = np.tile(np.arange(len(done_R) // D, dtype=np.int32), (D, 1))
          state, gen, prompt = _compact(lay, state, gen, prompt, per_shard(keep_DR),
                                        len(done_R) // len(prompt["lengths_B"]))
          sp = sp._replace(aligned=False)
        a = queue.admit(done_R.reshape(D, -1), G)
        new_logits, new_prompt = _prefill(sp.cfg, lay, dparams, put(prompts_BP[a["prompts"]]),
                                          put(lengths_B[a["prompts"]]))
        state, prompt = _admit(sp, state, prompt, new_logits, new_prompt, per_shard(a["at"]), per_shard(a["slot"]),
                               put(a["req"]), put(np.where(a["req"] >= 0, budget_Q[a["req"]], 0)), rng,
                               stop_S, *knobs)
        t, done_R, t0_R = self._flags(lay, state)
      waiting = queue is not None and queue.waiting()
      if done_R.all() and not waiting or sp.aligned and t >= N:
        break
      if done_R.all():  # every admitted row ended at its first token: admit again
        continue
      done_DR = done_R.reshape(D, -1)  # each data shard's rows
      live_D = (~done_DR).sum(1)
      rows = next_pow2(int(live_D.max()))
      if rows < done_DR.shape[1] and not waiting:  # save every row, keep the live ones (+ done rows)
        out = _save(lay, out, state)
        keep_DR = np.stack([np.concatenate([np.flatnonzero(~d), np.flatnonzero(d)[:rows - n]])
                            for d, n in zip(done_DR, live_D)]).astype(np.int32)
        state, gen, prompt = _compact(lay, state, gen, prompt, per_shard(keep_DR),
                                      len(done_R) // len(prompt["lengths_B"]))
      # A row's token index is t - t0 (t0 = 0 until a refill): the chunk ends where the live row
      # that started first reaches N, and its KV needs slots up to token t_end - 2.
      start = 0 if sp.aligned else int(t0_R[~done_R].min())
      t_end = min(t + self.chunk, N + start)
      slots = min(-(-(t_end - start - 1) // self.bucket) * self.bucket, N - 1)
      if gen is None:
        groups = len(prompt["lengths_B"])
        if lay is None:
          gen = decode.init_gen_kv(sp.cfg, groups, len(state["done"]) // groups, slots)
        else:
          gen = _new_gen(sp.cfg, lay, groups, len(state["done"]) // groups, slots)
      elif gen["v"][0].shape[3] < slots:
        gen = _grow(lay, gen, slots)
      state, gen = _chunk(sp, dparams, prompt, gen, state, jnp.int32(t_end), stop_S, *knobs)
    return _save(lay, out, state)

  @staticmethod
  def _flags(lay: Layout | None, state):
    """(t, done [R], t0 [R]) on the host; on a mesh replicated first: every process reads them
    whole (multi-host)."""
    return jax.device_get((state["t"], state["done"], state["t0"]) if lay is None else _flags(lay, state))


_decode_params = jax.jit(decode_params, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _flags(lay: Layout, state):
  rep = NamedSharding(lay.mesh, P())
  return (state["t"], jax.lax.with_sharding_constraint(state["done"], rep),
          jax.lax.with_sharding_constraint(state["t0"], rep))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _prefill(cfg: ModelConfig, lay: Layout | None, params, prompts_BP, lengths_B):
  with axis_rules(lay):
    logits_BV, prompt = decode.prefill(cfg, params, prompts_BP, lengths_B)
  return pin(lay, logits_BV), pin_prompt(lay, prompt)


def _at_prompt(at, prompt):
  return dict(k=at(prompt["k"], True), v=at(prompt["v"], True), valid_BP=at(prompt["valid_BP"]),
              lengths_B=at(prompt["lengths_B"]))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _new_gen(cfg: ModelConfig, lay: Layout, groups: int, G: int, slots: int):
  return pin(lay, decode.init_gen_kv(cfg, groups, G, slots), True)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _start(sp: Spec, N: int, logits_BV, plen_B, at, rng, req_R, budget_R, stop_S, temperature, top_p,
           top_k):
  """Token 0 of requests `req_R` from their prompts' prefill logits: row r is a sample of prompt
  r // G (`at` None; rows prompt-major, G = rows // prompts) or of prompt `at` (`_take`)."""
  R = req_R.shape[0]
  if at is None:
    G = R // logits_BV.shape[0]
    # Repeats, not a gather by r // G: rows stay on the data shard of their prompt.
    logits_RV, plen_R = jnp.repeat(logits_BV, G, axis=0), jnp.repeat(plen_B, G)
  else:
    logits_RV, plen_R = _take(logits_BV, at), _take(plen_B, at)
  req_R = pin(sp.lay, req_R)
  keys_R = draw.row_keys(rng, req_R)
  tok_R, lp_R = draw.pick_rows(pin(sp.lay, logits_RV), keys_R, 0, temperature, top_p, top_k, sp.mode)
  s = dict(t=jnp.int32(0), t0=jnp.zeros((R,), jnp.int32), req=req_R, keys=keys_R, budget=budget_R,
           pos0=plen_R, done=jnp.zeros((R,), bool), tokens=jnp.full((R, N), sp.pad_id, jnp.int32),
           logprobs=jnp.zeros((R, N), jnp.float32), lengths=jnp.zeros((R,), jnp.int32))
  return pin(sp.lay, _record(sp, pin(sp.lay, s), tok_R, lp_R, stop_S))


def _index(sp: Spec, s):
  """Each row's token index: t (every row in step), or t - t0 (rows admitted at steps t0 + 1)."""
  return s["t"] if sp.aligned else s["t"] - s["t0"]


def _col(a_RN, tau, x_R):
  """x_R into column `tau` of a_RN (a scalar, or one per row: a select, nothing moves between
  devices; a column past the end writes nothing)."""
  if jnp.ndim(tau) == 0:
    return jax.lax.dynamic_update_slice(a_RN, x_R[:, None], (0, tau))
  return jnp.where(jnp.arange(a_RN.shape[1]) == tau[:, None], x_R[:, None], a_RN)


def _record(sp: Spec, s, tok_R, lp_R, stop_S):
  """Token `_index` of the live rows -> the row buffers; then t + 1."""
  tau = _index(sp, s)
  live_R = ~s["done"] & (tau < s["budget"])
  tok_R = jnp.where(live_R, tok_R, sp.pad_id)
  lp_R = jnp.where(live_R, lp_R, 0.0)
  done_R = ~live_R | jnp.isin(tok_R, stop_S) | (tau + 1 >= s["budget"])
  return dict(s, t=s["t"] + 1, tok=tok_R, done=s["done"] | done_R,
              tokens=_col(s["tokens"], tau, tok_R), logprobs=_col(s["logprobs"], tau, lp_R),
              lengths=s["lengths"] + live_R.astype(jnp.int32))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(3, 4))
def _chunk(sp: Spec, params, prompt, gen, state, t_end, stop_S, temperature, top_p, top_k):
  """Decode steps until step t_end - 1 is picked or every row is done."""
  lay = sp.lay

  def body(c):
    s, gen = c
    tau = _index(sp, s)  # feed each row's token tau - 1 into its slot tau - 1, pick token tau
    with axis_rules(lay):
      logits_RV, gen = decode.decode_step(sp.cfg, params, s["tok"], s["pos0"] + tau - 1, prompt, gen,
                                          tau - 1)
    tok_R, lp_R = draw.pick_rows(logits_RV, s["keys"], tau, temperature, top_p, top_k, sp.mode)
    return pin(lay, _record(sp, s, tok_R, lp_R, stop_S)), pin(lay, gen, True)

  cond = lambda c: (c[0]["t"] < t_end) & ~jnp.all(c[0]["done"])
  return jax.lax.while_loop(cond, body, (state, gen))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _grow(lay: Layout | None, gen, slots: int):
  return pin(lay, decode.grow_gen_kv(gen, slots), True)


def _take(a, keep):
  """Rows `keep` of `a` [R, ...]: keep [r] (one device), or [D, r] indices within each of the D
  data shards (a batched gather: each shard reads its own rows, nothing moves between shards)."""
  if keep.ndim == 1:
    return jnp.take(a, keep, axis=0)
  D, r = keep.shape
  a_DR = a.reshape(D, -1, *a.shape[1:])
  return jax.vmap(lambda x, i: jnp.take(x, i, axis=0))(a_DR, keep).reshape(D * r, *a.shape[1:])


def _put(a, at, x):
  """`a` [R, ...] with rows `at` set to `x` [r, ...] (at [r], or [D, r] within each data shard as
  `_take`); rows past the end are dropped."""
  if at.ndim == 1:
    return a.at[at].set(x, mode="drop")
  D, r = at.shape
  put = jax.vmap(lambda a, i, x: a.at[i].set(x, mode="drop"))
  return put(a.reshape(D, -1, *a.shape[1:]), at, x.reshape(D, r, *x.shape[1:])).reshape(a.shape)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _compact(lay: Layout | None, state, gen, prompt, keep, G):
  """Rows `keep` of the batch; the prompt KV becomes per row (G = 1) from here on."""
  take = lambda a: _take(a, keep)
  s = {k: (v if k == "t" else take(v)) for k, v in state.items()}
  s["req"] = jnp.where(s["done"], -1, s["req"])  # padding rows (done when kept): no request
  gen = None if gen is None else pin(lay, decode.take_rows(gen, keep, take), True)
  at = keep // G
  prompt = dict(k=tuple(_take(a, at) for a in prompt["k"]), v=tuple(_take(a, at) for a in prompt["v"]),
                valid_BP=_take(prompt["valid_BP"], at), lengths_B=_take(prompt["lengths_B"], at))
  return pin(lay, s), gen, pin_prompt(lay, prompt)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _admit(sp: Spec, state, prompt, logits_BV, new_prompt, at, slot, req_R, budget_R, rng, stop_S,
           temperature, top_p, top_k):
  """Rows `slot` of a per-row batch (G = 1) <- requests `req_R` of the prefilled prompts `at`:
  token 0 drawn from their prompt's logits (the row's step t0 + 1 = now), each its prompt's KV.
  Their generated KV is left as it was: a row reads only the slots it has written."""
  new = _start(sp._replace(aligned=True), state["tokens"].shape[1], logits_BV, new_prompt["lengths_B"],
               at, rng, req_R, budget_R, stop_S, temperature, top_p, top_k)
  new = dict(new, t0=jnp.full_like(new["t0"], state["t"] - 1))
  s = {k: (v if k == "t" else _put(v, slot, new[k])) for k, v in state.items()}
  rows = lambda a, b: _put(a, slot, _take(b, at))
  prompt = dict(k=tuple(map(rows, prompt["k"], new_prompt["k"])),
                v=tuple(map(rows, prompt["v"], new_prompt["v"])),
                valid_BP=rows(prompt["valid_BP"], new_prompt["valid_BP"]),
                lengths_B=rows(prompt["lengths_B"], new_prompt["lengths_B"]))
  return pin(sp.lay, s), pin_prompt(sp.lay, prompt)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _save(lay: Layout | None, out, state):
  """Every row with a request -> its request's output row (within its data shard on a mesh)."""
  Q = out["lengths"].shape[0]
  if lay is None:
    at_R = jnp.where(state["req"] >= 0, state["req"], Q)  # out of range: dropped
    return {k: _put(out[k], at_R, state[k]) for k in out}
  D = lay.D
  Qd = Q // D
  req_DR = state["req"].reshape(D, -1)
  at_DR = jnp.where(req_DR >= 0, req_DR - Qd * jnp.arange(D)[:, None], Qd)
  return pin(lay, {k: _put(out[k], at_DR, state[k]) for k in out})

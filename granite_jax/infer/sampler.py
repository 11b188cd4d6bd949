"""Batched autoregressive sampling with a preallocated KV cache.

Prompts are left-padded to a common length P, so every row decodes into the
same cache slot each step; per-row positions start at 0 on the first real
prompt token and padding slots get segment 0, which no real token attends to.
One jitted program does the prefill (logits of the last position only) and a
`lax.while_loop` of 1-token decode steps that stops when every row has emitted
a stop token or `max_new_tokens`; the cache (one array per layer) is updated in
place, and the layer weights are split per layer and cast to the compute dtype
once before the loop (`split_layers`, see granite_jax.model.decoder.decode_params).

Sampling: greedy when temperature <= 0, else temperature, then top-k, then
top-p (nucleus); only the branch in use runs (no sort when greedy or when
top_k <= 0 and top_p >= 1). The returned log-probs are those of the
temperature-scaled model distribution (log_softmax(logits / T); raw logits
when greedy), before the top-k/top-p truncation: the quantity the trainer
recomputes, so the importance ratio is 1 on-policy. A stop token is part of the output and of
`lengths`; positions after a row stops hold `pad_id` and log-prob 0.

Two engines behind `make_sampler` / `generate`: "program" is the single jitted program above
(`sample`: any mesh, and what the dry run lowers); "fast" is granite_jax.infer.engine (one
prefill per prompt, decode cost that follows the live tokens, per-row token budgets; one device,
or a mesh in the rollout layout of `rollout_axes`), whose sampled tokens come from other draws
of the same distribution (infer/draw.py).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from granite_jax.infer.engine import Engine
from granite_jax.infer.layout import rollout_param_shardings, sampler_shardings  # noqa: F401 (public here too)
from granite_jax.infer.logits import argmax, filter_logits  # noqa: F401 (public here too)
from granite_jax.model import Granite, ModelConfig
from granite_jax.model.cache import init_cache
from granite_jax.model.decoder import decode_params
from granite_jax.sharding.jit import with_mesh
from granite_jax.sharding.rules import rollout_rules, rules_for

PROMPT_BUCKET = 8  # prompt lengths round up to a multiple of this: fewer recompiles


def pick_tokens(logits_BV, key, temperature, top_p, top_k):
  """(token_B, logprob_B) from float32 logits; see the module docstring for the log-prob.

  Only the branch in use runs (`lax.cond` on the scalar settings): greedy needs
  no sort or draw, and plain temperature sampling (top_k <= 0, top_p >= 1) no
  top-k/top-p sort.
  """
  def logprob(scaled_BV, tok_B):
    return jnp.take_along_axis(jax.nn.log_softmax(scaled_BV, axis=-1), tok_B[:, None], axis=-1)[:, 0]

  def greedy(logits_BV):
    tok_B = argmax(logits_BV)
    return tok_B, logprob(logits_BV, tok_B)

  def sampled(logits_BV):
    scaled_BV = logits_BV / temperature
    filtered_BV = jax.lax.cond((top_k <= 0) & (top_p >= 1.0), lambda x: x,
                               lambda x: filter_logits(x, top_k, top_p), scaled_BV)
    tok_B = jax.random.categorical(key, filtered_BV, axis=-1).astype(jnp.int32)
    return tok_B, logprob(scaled_BV, tok_B)

  return jax.lax.cond(temperature <= 0, greedy, sampled, logits_BV)


def sample(params, prompts_BP, lengths_B, rng, temperature, top_p, top_k, *,
           cfg: ModelConfig, max_new_tokens: int, stop_ids: tuple[int, ...] = (),
           samples_per_prompt: int = 1, pad_id: int = 0, split_layers: bool = True):
  """Left-padded prompts [B, P] with lengths [B] -> dict(tokens, logprobs [B*G, N], lengths [B*G]).

  Rows are prompt-major: row b*G + g is sample g of prompt b. `split_layers`:
  copy the layer weights once (per layer, compute dtype) so decode steps neither
  slice the stacked weights nor cast them; False saves that copy's memory.
  """
  model = Granite(cfg)
  if split_layers:
    params = decode_params(cfg, params)
  G, N = samples_per_prompt, max_new_tokens
  prompts_BP = jnp.repeat(prompts_BP.astype(jnp.int32), G, axis=0)
  lengths_B = jnp.repeat(lengths_B.astype(jnp.int32), G, axis=0)
  B, Pl = prompts_BP.shape
  pad_B = Pl - lengths_B
  slot_P = jnp.arange(Pl, dtype=jnp.int32)
  seg_BP = (slot_P[None] >= pad_B[:, None]).astype(jnp.int32)
  pos_BP = jnp.maximum(slot_P[None] - pad_B[:, None], 0)
  # Token i is picked from the logits after token i - 1 (the prompt's last for i = 0);
  # the last token is never fed back, so the cache needs Pl + N - 1 slots.
  cache = init_cache(cfg, B, Pl + N - 1)
  logits_B1V, cache = model.apply({"params": params}, prompts_BP * seg_BP, segment_ids=seg_BP,
                                  positions=pos_BP, cache=cache, cache_index=0, last_only=True)
  stop_S = jnp.asarray(stop_ids if stop_ids else (-1,), jnp.int32)
  ones_B1 = jnp.ones((B, 1), jnp.int32)

  def pick(s, logits_BV):
    """Picks token s["i"] from `logits_BV` for the rows still live and records it."""
    i = s["i"]
    tok_B, lp_B = pick_tokens(logits_BV, jax.random.fold_in(rng, i), temperature, top_p, top_k)
    live_B = ~s["done"]
    tok_B = jnp.where(live_B, tok_B, pad_id)
    lp_B = jnp.where(live_B, lp_B, 0.0)
    return dict(s, i=i + 1, tok=tok_B, done=s["done"] | (live_B & jnp.isin(tok_B, stop_S)),
                tokens=jax.lax.dynamic_update_slice(s["tokens"], tok_B[:, None], (0, i)),
                logprobs=jax.lax.dynamic_update_slice(s["logprobs"], lp_B[:, None], (0, i)),
                lengths=s["lengths"] + live_B.astype(jnp.int32))

  def cond(s):
    return (s["i"] < N) & ~jnp.all(s["done"])

  def body(s):
    i = s["i"]  # feed token i - 1 (slot Pl + i - 1), pick token i
    logits_B1V, cache = model.apply({"params": params}, s["tok"][:, None], segment_ids=ones_B1,
                                    positions=(lengths_B + i - 1)[:, None], cache=s["cache"],
                                    cache_index=Pl + i - 1)
    return pick(dict(s, cache=cache), logits_B1V[:, 0])

  init = dict(i=jnp.zeros((), jnp.int32), tok=jnp.zeros((B,), jnp.int32), cache=cache,
              done=jnp.zeros((B,), bool), tokens=jnp.full((B, N), pad_id, jnp.int32),
              logprobs=jnp.zeros((B, N), jnp.float32), lengths=jnp.zeros((B,), jnp.int32))
  out = jax.lax.while_loop(cond, body, pick(init, logits_B1V[:, 0]))
  return dict(tokens=out["tokens"], logprobs=out["logprobs"], lengths=out["lengths"])


def make_sampler(cfg: ModelConfig, *, max_new_tokens: int, stop_ids: Sequence[int] = (),
                 samples_per_prompt: int = 1, pad_id: int = 0, mesh: Mesh | None = None,
                 param_shardings=None, split_layers: bool = True, engine: str = "program",
                 rollout_axes: Sequence[str] = (), max_rows: int | None = None) -> Callable:
  """Jitted `(params, prompts_BP, lengths_B, rng, temperature, top_p, top_k) -> dict`.

  With a mesh, parameters come in `param_shardings` (the training ones). Without `rollout_axes`
  they keep them and the batch is split along the training batch axes (XLA then hoists every
  layer's FSDP all-gather out of the decode loop: the whole model sits on every device).
  `rollout_axes` (mesh axes, e.g. ("fsdp", "tensor"); configs/gb200.py `rl.rollout_axes`): the
  program first casts the parameters to the compute dtype and moves them (one reshard) to the
  rollout layout (sharding/rules.py `rollout_rules`): those axes' devices split every layer
  tensor-parallel (heads, KV heads, MLP, vocabulary; the KV cache goes by KV heads), and the batch
  goes over the other batch axes (data). The prompt batch must divide by the batch axes in use
  (`sampler_shardings`).
  `split_layers`: see `sample`. Nothing is donated: the caller keeps the
  parameters, and the cache lives inside the program.
  `engine="fast"`: granite_jax.infer.engine (no mesh, a one-device one, or a mesh with
  `rollout_axes`: the engine in the rollout layout), which also takes per-row budgets as an 8th
  argument `max_new_Q` [B*G]; on a mesh of several devices without `rollout_axes`, this program.
  `max_rows` (the fast engine): rows decoded at once; a call's other requests wait and refill
  finished rows (continuous batching, infer/engine.py). None: all of a call's rows at once.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be positive")
  if samples_per_prompt < 1:
    raise ValueError(f"samples_per_prompt={samples_per_prompt} must be positive")
  if engine not in ("program", "fast"):
    raise ValueError(f"engine={engine!r} must be 'program' or 'fast'")
  if engine == "fast" and (mesh is None or mesh.size == 1 or rollout_axes):
    return Engine(cfg, max_new_tokens=max_new_tokens, stop_ids=tuple(int(s) for s in stop_ids),
                  samples_per_prompt=samples_per_prompt, pad_id=pad_id, mesh=mesh,
                  rollout_axes=tuple(rollout_axes), param_shardings=param_shardings, max_rows=max_rows)
  if max_rows is not None:
    raise ValueError(f"max_rows={max_rows} needs the fast engine (engine='fast'; on a mesh with rollout_axes)")
  fn = functools.partial(sample, cfg=cfg, max_new_tokens=max_new_tokens,
                         stop_ids=tuple(int(s) for s in stop_ids),
                         samples_per_prompt=samples_per_prompt, pad_id=pad_id,
                         split_layers=split_layers)
  if mesh is None:
    return jax.jit(fn)
  rollout_axes = tuple(rollout_axes)
  rules = rollout_rules(mesh, rollout_axes) if rollout_axes else rules_for(mesh)
  row, rows, rep = sampler_shardings(mesh, rollout_axes)
  to_rollout = rollout_param_shardings(cfg, mesh, rollout_axes) if rollout_axes else None

  def run(params, *args):
    with nn.logical_axis_rules(rules):
      if to_rollout is not None:  # one reshard, in the compute dtype, before the prefill
        params = jax.tree.map(lambda a, s: jax.lax.with_sharding_constraint(_compute(cfg, a), s),
                              params, to_rollout)
      return fn(params, *args)

  jitted = jax.jit(run, in_shardings=(param_shardings, row, rows, rep, rep, rep, rep),
                   out_shardings=dict(tokens=row, logprobs=row, lengths=rows))
  return with_mesh(jitted, mesh)


def _compute(cfg: ModelConfig, a):
  return a.astype(cfg.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a


def left_pad(prompt_tokens, lengths=None, pad_id: int = 0, bucket: int = PROMPT_BUCKET):
  """List of token lists, or a right-padded [B, P] array (+ lengths) -> (left-padded, lengths)."""
  if isinstance(prompt_tokens, (np.ndarray, jax.Array)):
    arr = np.asarray(prompt_tokens)
    if arr.ndim != 2:
      raise ValueError(f"prompt_tokens: expected [B, P], got shape {arr.shape}")
    lens = np.full(len(arr), arr.shape[1]) if lengths is None else np.asarray(lengths)
    rows = [list(r[:n]) for r, n in zip(arr, lens)]
  else:
    rows = [list(r) for r in prompt_tokens]
  if not rows or min(len(r) for r in rows) < 1:
    raise ValueError("prompt_tokens: need at least one prompt, each with at least one token")
  Pl = -(-max(len(r) for r in rows) // bucket) * bucket
  out = np.full((len(rows), Pl), pad_id, np.int32)
  for b, r in enumerate(rows):
    out[b, Pl - len(r):] = r
  return out, np.array([len(r) for r in rows], np.int32)


@functools.lru_cache(maxsize=16)
def _cached_sampler(cfg, max_new_tokens, stop_ids, samples_per_prompt, pad_id, engine):
  return make_sampler(cfg, max_new_tokens=max_new_tokens, stop_ids=stop_ids,
                      samples_per_prompt=samples_per_prompt, pad_id=pad_id, engine=engine)


def generate(params, cfg: ModelConfig, prompt_tokens, max_new_tokens: int, *,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             stop_ids: Sequence[int] = (), rng: jax.Array | None = None,
             samples_per_prompt: int = 1, lengths=None, pad_id: int = 0,
             max_new_per_row: Sequence[int] | None = None, engine: str = "fast") -> dict:
  """One-call generation for evals and judges (no mesh).

  `prompt_tokens`: list of token lists, or a right-padded [B, P] array with
  optional `lengths`. Returns dict(tokens [B*G, N], logprobs [B*G, N], lengths [B*G]).
  `max_new_per_row`: each output row's own token budget (<= max_new_tokens; the fast engine).
  `engine`: "fast" (granite_jax.infer.engine) or "program" (`sample`, the single program).
  """
  prompts_BP, lengths_B = left_pad(prompt_tokens, lengths, pad_id)
  fn = _cached_sampler(cfg, int(max_new_tokens), tuple(int(s) for s in stop_ids),
                       int(samples_per_prompt), int(pad_id), engine)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  args = (params, prompts_BP, lengths_B, rng, jnp.float32(temperature), jnp.float32(top_p),
          jnp.int32(top_k))
  if max_new_per_row is None:
    return fn(*args)
  if engine != "fast":
    raise ValueError("max_new_per_row needs engine='fast'")
  return fn(*args, np.asarray(max_new_per_row, np.int32))

"""Per-device memory of the train step, from shapes alone (no devices, no compile).

Terms, in bytes per device (b = sequences per device and micro-batch,
t = tokens per device along the sequence, after the `context` split):
  params, opt_state  exact per-leaf shard sizes: each parameter's logical axes
                     map through sharding/rules.py to mesh axes; AdamW keeps mu
                     and nu in the parameter dtype;
  grads              same shards as the parameters (reduce-scattered), plus an
                     accumulator when train.grad_accum > 1;
  residuals          what the scanned stack saves for the backward under the
                     remat policy: nothing_saveable keeps each layer's input
                     (L x b x t x d); dots_saveable also every matmul output;
                     none keeps everything;
  layer              one layer's rematerialized forward + backward working set
                     (q/k/v/o, SwiGLU hidden, their cotangents), live while
                     that layer's backward runs, plus its FSDP-gathered weights;
  attention          "xla"/"jax" materialize f32 scores b x heads x t x S;
                     flash-style impls (cudnn, blockwise, ring) keep per-block
                     tiles only;
  logits             f32 b x t x V/tensor logits and their softmax cotangent
                     (the loss is a full-vocabulary log-softmax), or one
                     [b, loss_chunk, V] block with model.loss_chunk (chunked
                     cross-entropy, the real sizes' default) plus the final
                     hidden states' cotangent; and the gathered embedding
                     for the tied head;
  kv_cache           rollouts (RL): K and V for every layer, sequence and token.
The constants (buffers live at once) were read off XLA's buffer assignment of
the same step (granite_jax/plan/xla.py); docs/planner.md has the comparison.
sampler_memory / forward_memory: the RL rollout (prefill + decode with its KV cache; in the
rollout layout the fast engine's highest piece, engine_memory) and the forward-only passes
(log-probs, reward-model scores), by the same terms.
"""
from __future__ import annotations

import dataclasses
import math
import types
from typing import Mapping

from granite_jax.model.config import ModelConfig
from granite_jax.sharding.rules import rules_for

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1}
FLASH_IMPLS = ("cudnn", "blockwise", "ring", "allgather")

# Buffers live at the peak, in units of the named tensor. Fitted to XLA's buffer
# assignment of this step (least squares, then rounded): GRAD/RESIDUAL to the
# per-layer slope, the rest to the depth-independent part, over the 3B/8B/30B
# presets x 4 stages compiled at 4 and 8 layers with the unchunked loss; the
# chunked-loss constants read off the same compiles with loss_chunk=1024, and
# GRAD lowered to 2.25 to balance 30B (`python -m granite_jax.plan --check`).
# They describe what XLA keeps live at once; they are not derivable from the model.
GRAD_BUFFERS = 2.25      # gradient shards (f32): raw, / n_tokens, non-finite-guarded, partly fused
RESIDUAL_BUFFERS = 2.0   # per saved layer input: the stacked scan carry and its cotangent

def _jaxlib_version() -> tuple[int, ...]:
  import jaxlib
  return tuple(int(x) for x in jaxlib.__version__.split(".")[:2] if x.isdigit())


# f32 logits, the log-softmax cotangent and their temporaries (unchunked loss). XLA 0.12 fuses
# one of them: the same step's temporaries drop by exactly one f32 [b, t, vocab] buffer, at
# 1K and 2K tokens, 2-8 layers (jaxlib 0.10.2: 3; 0.12.0.1: 2; 0.11 not measured).
LOGIT_BUFFERS = 3.0 if _jaxlib_version() < (0, 12) else 2.0
EMBED_BUFFERS = 1.0      # tied embedding gathered for the head (its cotangent reuses the grads)
# Chunked cross-entropy (model.loss_chunk): f32 [b, chunk, V] blocks live at once (XLA
# overlaps several iterations' logits and cotangents), and with context parallelism f32
# [b, T, d] copies of the whole (unsharded) sequence's final hidden states: the chunks
# cut across the context shards, so XLA gathers the sequence on every device.
CHUNK_BUFFERS = 6.5
CP_HIDDEN_BUFFERS = 3.25
LAYER_BUFFERS = 0.5      # one layer's rematerialized activations beyond the above
SCORE_BUFFERS = 1.0      # f32 scores of xla attention (softmax fused into them)
FLASH_TILE_BUFFERS = 4.0  # f32 block x block tiles per query block in flight
# Read off the compiles in docs/stages.md (RL rollout and log-probs on 64 GPUs): rough.
PREFILL_SCORE_BUFFERS = 4.0  # a dense prefill's f32 [b, heads, prompt, prompt] scores
# The rollout's decode loop reads loop-invariant weights: XLA hoists every layer's FSDP
# all-gather out of it, so the whole model sits gathered over fsdp on every GPU, as stored (f32)
# plus two compute-dtype copies: 3B / 8B / 30B rollouts (XLA 41.4 / 88.9 / 101.3 GiB) hold
# 4.0 / 3.8 / 4.3 bf16 copies of parameters / tensor beyond the other terms.
SAMPLER_GATHERED_BYTES = 8.0  # per parameter, divided by tensor
# The rollout layout (rollout_axes): compute-dtype copies of each GPU's 1/ways of the model beside
# the training shards: the resharded weights and the per-layer split of them.
ROLLOUT_COPIES = 2.0
# ... and compute-dtype [b, prompt, d_model] buffers of the prefill's residual stream, whole on
# every GPU of a tensor-parallel group (norms, residual adds, the attention and MLP outputs around
# their all-reduces): read off the rl_math rollouts in that layout (XLA 24.9 / 42.7 / 76.3 GiB for
# 3B / 8B / 30B; 5.8 / 4.9 / 5.2 such buffers beyond the other terms).
ROLLOUT_HIDDEN_BUFFERS = 5.0
# The rollout engine's pieces (engine_memory), read off the compiles of its pieces that
# plan/programs.py lowers (`python -m granite_jax.plan.dry_run rl_math:{3b,8b,30b} --only=rollout`,
# jaxlib 0.10.2, 64 fake CPU devices, data=8 x fsdp=8 as 8 rollout ways). XLA's peaks per piece
# (GiB/GPU, with the buffers live beside each): reshard 4.3 / 10.6 / 37.4, prefill 5.3 / 11.9 /
# 36.7, decode 11.8 / 25.5 / 58.5, compact 15.1 / 31.3 / 60.8 for 3B / 8B / 30B. Beside the
# training shards, one compute-dtype copy of 1/ways of the model (the decode parameters); the
# decode chunk's and the prefill's temporaries hold about 2 more copies of it (2.2 / 2.2 / 2.1
# in the decode, 2.6 / 2.5 / 2.2 in the prefill beyond its activations); the reshard's 2.4-2.6
# beside its output. The KV buffers are exact sizes (the compaction's input and output are both
# live: it peaks highest at every size, the largest generated KV x 1.5 plus the per-row prompt KV).
ENGINE_WEIGHT_COPIES = 1.0
ENGINE_WEIGHT_TEMPS = 2.0
RESHARD_TEMPS = 2.5
ENGINE_STATE_BUFFERS = 2.0   # [rows, new_tokens] tokens and log-probs: the state's and the output's
ENGINE_LOGIT_BUFFERS = 3.0   # f32 [rows, vocab] last logits, gathered over the rollout ways
FORWARD_LOGIT_BUFFERS = 1.0
# The RL step's loss (rl/loss.py: tempered log-softmax, entropy, ratios) over one micro-batch's
# full [b, t, vocab] logits (one sequence per data rank since micro-batches are strided,
# train/step.py split_micro): XLA 26.3 / 41.2 GiB for 3B / 8B on data=8 x fsdp=8, 32.4 for 30B
# on data=2 x fsdp=8 x tensor=4 (docs/stages.md); 93.1 for 30B on data=8 x fsdp=8 (planner 106.9).
RL_LOGIT_BUFFERS = 3.5


def dtype_bytes(name: str) -> int:
  if name not in _BYTES:
    raise ValueError(f"model dtype {name!r} is not one of {sorted(_BYTES)}")
  return _BYTES[name]


def param_leaves(cfg: ModelConfig) -> list[tuple[tuple[int, ...], tuple[str | None, ...]]]:
  """(shape, logical axes) of every parameter, as the model declares them (no allocation)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from granite_jax.model import Granite

  cfg = dataclasses.replace(cfg, attention_impl="xla")  # parameters do not depend on the kernel
  boxed = jax.eval_shape(lambda: Granite(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return [(tuple(x.value.shape), tuple(x.names)) for x in leaves]


def shard_count(shape, names, mesh: Mapping[str, int]) -> int:
  """Elements of one device's shard (ceil per dimension, as XLA pads)."""
  rules = dict(rules_for(types.SimpleNamespace(axis_names=tuple(mesh))))  # only names are read
  n = 1
  for dim, name in zip(shape, names):
    phys = rules.get(name) if name else None
    phys = (phys,) if isinstance(phys, str) else (phys or ())
    n *= math.ceil(dim / math.prod(mesh[p] for p in phys))
  return n


@dataclasses.dataclass
class Memory:
  params: float
  opt_state: float
  grads: float
  residuals: float
  layer: float
  attention: float
  logits: float
  kv_cache: float = 0.0

  @property
  def total(self) -> float:
    return sum(dataclasses.asdict(self).values())


def train_memory(cfg: ModelConfig, mesh: Mapping[str, int], global_batch: int, seq_len: int,
                 grad_accum: int = 1, kv_cache_seqs: int = 0, logit_buffers: float | None = None) -> Memory:
  """Per-device bytes of one train step (and, for RL, the rollout KV cache held beside it).
  `logit_buffers`: f32 [b, t, vocab] buffers of an unchunked loss (default LOGIT_BUFFERS)."""
  dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
  tp, cp = mesh.get("tensor", 1), mesh.get("context", 1)
  b = global_batch / dp / grad_accum
  t = seq_len / cp
  pb, ab = dtype_bytes(cfg.param_dtype), dtype_bytes(cfg.dtype)
  leaves = param_leaves(cfg)
  p_dev = sum(shard_count(s, n, mesh) for s, n in leaves)
  layer_params = sum(math.prod(s) for s, n in leaves if n and n[0] == "layers") / cfg.n_layers
  d, L, h = cfg.d_model, cfg.n_layers, cfg.head_dim
  n_l, k_l, f_l = cfg.n_heads / tp, max(cfg.n_kv_heads / tp, 1), cfg.d_ff / tp

  grads = p_dev * pb * (GRAD_BUFFERS + (1 if grad_accum > 1 else 0))
  per_tok_layer = (2 * d + (2 * n_l + 2 * k_l) * h + 3 * f_l)  # norms' outputs, q/k/v/o, SwiGLU
  # Sequence parallelism (sharding/rules.py act_res_length): with tensor > 1 the saved residual
  # stream splits its length over context x tensor, so a layer input is d / tp per local token.
  d_res = d / tp
  saved = {"nothing_saveable": d_res, "dots_saveable": d_res + (2 * n_l + 2 * k_l) * h + 3 * f_l,
           "dots_with_no_batch_dims_saveable": d_res + (2 * n_l + 2 * k_l) * h + 3 * f_l}
  per_tok_saved = saved.get(cfg.remat_policy, d_res + per_tok_layer)
  residuals = RESIDUAL_BUFFERS * L * b * t * per_tok_saved * ab
  gathered = layer_params / tp * pb  # this layer's weights, all-gathered over fsdp, and their grads
  layer = LAYER_BUFFERS * b * t * per_tok_layer * ab + gathered
  if cfg.attention_impl in FLASH_IMPLS:
    blk = min(getattr(cfg, "attention_block", 512), t)
    attention = FLASH_TILE_BUFFERS * b * n_l * blk * blk * 4 + 2 * b * n_l * t * 4
  else:
    attention = SCORE_BUFFERS * b * n_l * t * seq_len * 4
  if cfg.remat_policy == "none":
    attention *= L
  chunk = getattr(cfg, "loss_chunk", 0)
  gathered_hidden = 0.0
  if chunk and seq_len > chunk and seq_len % chunk == 0:  # chunked_xent
    logit_tokens = CHUNK_BUFFERS * b * chunk
    if cp > 1:  # chunks of a context-sharded sequence: the whole sequence's hidden states on every device
      gathered_hidden = CP_HIDDEN_BUFFERS * b * seq_len * d * 4
  else:
    logit_tokens = (LOGIT_BUFFERS if logit_buffers is None else logit_buffers) * b * t
  logits = (logit_tokens * cfg.vocab_size / tp * 4 + gathered_hidden
            + EMBED_BUFFERS * cfg.vocab_size * d / tp * pb)
  kv = 2 * L * kv_cache_seqs / dp * seq_len * k_l * h * ab
  return Memory(params=p_dev * pb, opt_state=2 * p_dev * pb, grads=grads, residuals=residuals,
                layer=layer, attention=attention, logits=logits, kv_cache=kv)


def _layer_terms(cfg: ModelConfig, mesh: Mapping[str, int]):
  leaves = param_leaves(cfg)
  p_dev = sum(shard_count(s, n, mesh) for s, n in leaves)
  layer_params = sum(math.prod(s) for s, n in leaves if n and n[0] == "layers") / cfg.n_layers
  return p_dev, layer_params


def engine_memory(cfg: ModelConfig, mesh: Mapping[str, int], prompts: int, samples: int, prompt_len: int,
                  new_tokens: int, rollout_axes) -> dict[str, Memory]:
  """Per-device bytes of the rollout engine's pieces (infer/engine.py, in the rollout layout), as
  plan/programs.py lowers them (`Engine.pieces`), each with the buffers of the call live beside it:
    prefill  the training shards, the decode parameters (a compute-dtype copy of 1/ways of the
             model), every prompt's KV (`prompts` rows, once each), the prefill's working set;
    decode   + the generated KV of every row (prompts x samples) at its largest (new_tokens - 1
             slots, the group layout), the row state, the gathered last logits;
    compact  the first compaction at that size: its input and output generated KV (rows halve),
             and the prompt KV copied per kept row.
    reshard  the training shards in, the decode parameters out, and the reshard's temporaries."""
  from granite_jax.sharding.rules import RULES, tensor_ways
  pb, ab = dtype_bytes(cfg.param_dtype), dtype_bytes(cfg.dtype)
  p_dev, _ = _layer_terms(cfg, mesh)
  n_params = sum(math.prod(s) for s, _ in param_leaves(cfg))
  tp = tensor_ways(mesh, rollout_axes)
  dp = math.prod(mesh.get(a, 1) for a in dict(RULES)["act_batch"] if a not in rollout_axes)
  pr = -(-prompts // dp)  # prompts per data shard (a call pads the batch)
  rows = pr * samples
  k_l = max(cfg.n_kv_heads / tp, 1)
  slot = 2 * cfg.n_layers * k_l * cfg.head_dim * ab  # K and V of one token, every layer
  dparams = n_params * ab / tp
  weights = p_dev * pb + ENGINE_WEIGHT_COPIES * dparams
  prompt_kv, gen_kv = pr * prompt_len * slot, rows * (new_tokens - 1) * slot
  state = ENGINE_STATE_BUFFERS * rows * new_tokens * 4  # tokens, log-probs: the state's and the output's
  attention = prefill_attention(cfg, pr, cfg.n_heads / tp, prompt_len)
  prefill_act = (ROLLOUT_HIDDEN_BUFFERS * pr * prompt_len * cfg.d_model * ab
                 + LAYER_BUFFERS * pr * prompt_len * (2 * cfg.d_model + 3 * cfg.d_ff / tp) * ab)
  kept = _next_pow2(rows) // 2  # the most rows a compaction keeps (none with one row per shard)
  zero = dict(opt_state=0.0, grads=0.0, residuals=0.0)
  temps = ENGINE_WEIGHT_TEMPS * dparams
  pieces = dict(
      reshard=Memory(params=weights, layer=RESHARD_TEMPS * dparams, attention=0.0, logits=0.0, **zero),
      prefill=Memory(params=weights, layer=prefill_act + temps, attention=attention,
                     logits=pr * cfg.vocab_size * 4, kv_cache=prompt_kv, **zero),
      decode=Memory(params=weights, layer=state + temps, attention=0.0,
                    logits=ENGINE_LOGIT_BUFFERS * rows * cfg.vocab_size * 4,
                    kv_cache=prompt_kv + gen_kv, **zero),
      compact=Memory(params=weights, layer=state * 1.5, attention=0.0, logits=0.0,
                     kv_cache=prompt_kv + gen_kv * 1.5 + kept * prompt_len * slot, **zero))
  if kept < 1:
    del pieces["compact"]
  return pieces


def prefill_attention(cfg: ModelConfig, rows: float, heads: float, prompt_len: int) -> float:
  """Bytes of a prefill's attention over the prompt with the training kernel: flash kernels hold
  score tiles, dense ones f32 scores [rows, heads, prompt, prompt]."""
  if cfg.attention_impl in FLASH_IMPLS:
    blk = min(getattr(cfg, "attention_block", 512), prompt_len)
    return FLASH_TILE_BUFFERS * rows * heads * blk * blk * 4 + 2 * rows * heads * prompt_len * 4
  return PREFILL_SCORE_BUFFERS * rows * heads * prompt_len * prompt_len * 4


def _next_pow2(n: int) -> int:
  return 1 << max(int(n) - 1, 0).bit_length()


def sampler_memory(cfg: ModelConfig, mesh: Mapping[str, int], rows: int, prompt_len: int,
                   new_tokens: int, split_layers: bool = True, rollout_axes=(),
                   prompts: int | None = None) -> Memory:
  """Per-device bytes of the rollout sampler: parameters (and the per-layer compute-dtype copy
  `split_layers` makes), the KV cache of every row, one layer's gathered weights, last logits.

  `rollout_axes` (configs/gb200.py ROLLOUT_AXES): the rollout layout, those axes' devices as
  tensor-parallel ways and the batch over the other batch axes (sharding/rules.py rollout_rules):
  the training shards come in, plus ROLLOUT_COPIES compute-dtype copies of 1/ways of the model
  (the resharded weights and their per-layer split), and nothing is gathered whole."""
  from granite_jax.sharding.rules import RULES, tensor_ways
  if rollout_axes and prompts:  # the engine rl/loop.py runs in this layout: its highest piece
    return max(engine_memory(cfg, mesh, prompts, rows // prompts, prompt_len, new_tokens,
                             rollout_axes).values(), key=lambda m: m.total)
  pb, ab = dtype_bytes(cfg.param_dtype), dtype_bytes(cfg.dtype)
  p_dev, layer_params = _layer_terms(cfg, mesh)
  n_params = sum(math.prod(s) for s, _ in param_leaves(cfg))
  if rollout_axes:
    tp = tensor_ways(mesh, rollout_axes)
    dp = math.prod(mesh.get(a, 1) for a in dict(RULES)["act_batch"] if a not in rollout_axes)
    weights = p_dev * pb + ROLLOUT_COPIES * n_params * ab / tp
    layer = ROLLOUT_HIDDEN_BUFFERS * rows / dp * prompt_len * cfg.d_model * ab  # no gathered layer
  else:
    dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
    tp = mesh.get("tensor", 1)
    gathered = SAMPLER_GATHERED_BYTES * n_params / tp
    weights = p_dev * (pb + (ab if split_layers else 0)) + gathered
    layer = layer_params / tp * ab
  b = rows / dp
  k_l = max(cfg.n_kv_heads / tp, 1)
  kv = 2 * cfg.n_layers * b * (prompt_len + new_tokens - 1) * k_l * cfg.head_dim * ab
  prefill = LAYER_BUFFERS * b * prompt_len * (2 * cfg.d_model + 3 * cfg.d_ff / tp) * ab
  logits = LOGIT_BUFFERS * b * cfg.vocab_size / tp * 4
  # The prefill attends over the prompt only, with the training kernel (model/attention.py):
  # flash kernels hold score tiles, dense ones f32 scores [b, heads, prompt, prompt], masked,
  # exponentiated and normalized. A 1-token decode step's scores [b, heads, 1, cache] are small.
  attention = prefill_attention(cfg, b, cfg.n_heads / tp, prompt_len)
  return Memory(params=weights, opt_state=0.0, grads=0.0, residuals=0.0, layer=layer + prefill,
                attention=attention, logits=logits, kv_cache=kv)


def forward_memory(cfg: ModelConfig, mesh: Mapping[str, int], rows: int, seq_len: int,
                   logits: bool = True) -> Memory:
  """Per-device bytes of a forward-only pass over [rows, seq_len] (no gradients, no saved
  residuals): the RL log-prob pass (full f32 [b, t, V] logits and their log-softmax) or, with
  logits=False, reward-model scoring (final hidden states only)."""
  dp = mesh.get("data", 1) * mesh.get("fsdp", 1)
  tp, cp = mesh.get("tensor", 1), mesh.get("context", 1)
  pb, ab = dtype_bytes(cfg.param_dtype), dtype_bytes(cfg.dtype)
  p_dev, layer_params = _layer_terms(cfg, mesh)
  b, t = rows / dp, seq_len / cp
  n_l, k_l, f_l = cfg.n_heads / tp, max(cfg.n_kv_heads / tp, 1), cfg.d_ff / tp
  per_tok = 2 * cfg.d_model + (2 * n_l + 2 * k_l) * cfg.head_dim + 3 * f_l
  act = LAYER_BUFFERS * b * t * per_tok * ab + RESIDUAL_BUFFERS * b * t * cfg.d_model * ab
  # XLA fuses the log-softmax and the target gather into one pass over one f32 logits buffer.
  out = FORWARD_LOGIT_BUFFERS * b * t * cfg.vocab_size / tp * 4 if logits else b * t * cfg.d_model * 4
  return Memory(params=p_dev * pb, opt_state=0.0, grads=0.0, residuals=0.0,
                layer=act + layer_params / tp * pb, attention=0.0, logits=out)

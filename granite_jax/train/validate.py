"""Checks a whole config at start, before anything is compiled or read.

Every message names the field, the value and what is allowed, so a typo on
the command line fails in a second rather than deep inside a jitted function.
"""
from __future__ import annotations

import math
import os

from ml_collections import ConfigDict

from granite_jax.data.pipeline import resolve_sources
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.model.config import PRESETS, ModelConfig
from granite_jax.ops.attention import check_supported
from granite_jax.sharding.mesh import resolve_shape
from granite_jax.train.steps import steps_from_data


def _positive_int(c: ConfigDict, section: str, field: str, minimum: int = 1) -> int:
  v = c[section][field]
  if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
    raise ValueError(f"{section}.{field}={v!r} must be an integer >= {minimum}")
  return v


def validate(c: ConfigDict, n_devices: int, process_count: int = 1, data: bool = True) -> ModelConfig:
  """`data=False` (the dry run) skips the data sources and tokenizer: nothing is read or built."""
  if c.preset not in PRESETS:
    raise ValueError(f"preset={c.preset!r} is not one of {sorted(PRESETS)}")
  model = ModelConfig.from_dict(c.model.to_dict())
  for f in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
    if getattr(model, f) < 1:
      raise ValueError(f"model.{f}={getattr(model, f)!r} must be >= 1")
  if model.n_heads % model.n_kv_heads:
    raise ValueError(f"model.n_heads={model.n_heads} must be a multiple of model.n_kv_heads={model.n_kv_heads}")

  seq_len = _positive_int(c, "train", "seq_len", 2)
  global_batch = _positive_int(c, "train", "global_batch")
  grad_accum = _positive_int(c, "train", "grad_accum")
  _positive_int(c, "train", "steps", 0 if steps_from_data(c) else 1)  # SFT: 0 = count from the data
  _positive_int(c, "train", "log_every")
  _positive_int(c, "train", "eval_every")
  _positive_int(c, "train", "eval_batches", 0)
  _positive_int(c, "ckpt", "every_steps")
  _positive_int(c, "ckpt", "max_to_keep")
  for f in ("async_save", "verify_checksums"):
    if not isinstance(c.ckpt.get(f, True), bool):
      raise ValueError(f"ckpt.{f}={c.ckpt[f]!r} must be true or false")
  if c.train.tokens < 0:
    raise ValueError(f"train.tokens={c.train.tokens!r} must be >= 0 (0 = use train.steps)")
  if c.train.on_nonfinite not in ("skip", "stop"):
    raise ValueError(f"train.on_nonfinite={c.train.on_nonfinite!r} must be 'skip' or 'stop'")
  shape = dict(zip(c.mesh.axes, resolve_shape(c.mesh.shape, n_devices, c.mesh.axes)))
  check_supported(model.attention_impl, seq_len=seq_len, head_dim=model.head_dim,
                  dtype=model.dtype, max_seq_len=model.max_seq_len,
                  block=model.attention_block, context=shape.get("context", 1))
  dp = shape.get("data", 1) * shape.get("fsdp", 1)
  if global_batch % (dp * grad_accum):
    raise ValueError(f"train.global_batch={global_batch} must be divisible by the data-parallel size "
                     f"(data x fsdp = {dp}) times train.grad_accum={grad_accum}")
  if global_batch % process_count:
    raise ValueError(f"train.global_batch={global_batch} must be divisible by the {process_count} processes")
  for axis, heads in (("tensor", model.n_kv_heads),):
    if heads % shape.get(axis, 1):
      raise ValueError(f"mesh {axis}={shape[axis]} must divide model.n_kv_heads={heads}")
  if shape.get("context", 1) > 1 and seq_len % shape["context"]:
    raise ValueError(f"train.seq_len={seq_len} must be divisible by mesh context={shape['context']}")

  if data:
    _check_data(c, model)
  check_model_chain(c, model)
  if not math.isfinite(c.optim.peak_lr):
    raise ValueError(f"optim.peak_lr={c.optim.peak_lr!r} must be finite")
  return model


def _check_data(c: ConfigDict, model: ModelConfig) -> None:
  if c.data.get("kind", "pretrain") == "sft":
    from granite_jax.data.chat_pipeline import sft_sources
    for split in ("train", "eval") if c.train.eval_batches else ("train",):
      sft_sources(c.data, split)
  elif c.data.get("kind", "pretrain") == "pretrain":
    resolve_sources(c.data, "train")  # mixture weights, source paths (builds the demo corpus once)
    if c.train.eval_batches:
      resolve_sources(c.data, "eval")
  else:
    raise ValueError(f"data.kind={c.data.kind!r} must be 'pretrain' or 'sft'")
  vocab = get_tokenizer(c.data).get_vocab_size()
  if vocab > model.vocab_size:
    raise ValueError(f"data.tokenizer has {vocab} tokens, more than model.vocab_size={model.vocab_size}")


def check_model_chain(c: ConfigDict, model: ModelConfig) -> None:
  """Checkpoints the stage starts from (init_from, rl.ref_from) hold the model it runs, apart from
  the fields the stage changes on purpose (`model_changes`); a reward model shares the vocabulary."""
  from granite_jax.ckpt.model_config import check_inherits, read
  declared, ours = c.get("model_changes", ""), model.to_dict()
  rl = c.get("rl") or {}
  for what, ckpt in (("init_from", c.get("init_from", "")), ("rl.ref_from", rl.get("ref_from", ""))):
    if ckpt and not os.path.isdir(ckpt):
      raise ValueError(f"{what}={ckpt!r}: no such checkpoint directory")
    if ckpt:
      check_inherits(ckpt, ours, declared, what)
  rm = rl.get("reward_model", "")
  if rm:  # its own network, but it scores our tokens
    got = read(os.path.join(rm, "ckpt"))
    if got and got[1].get("vocab_size") != model.vocab_size:
      raise ValueError(f"rl.reward_model={rm!r} has vocab_size={got[1].get('vocab_size')} ({got[0]}), "
                       f"the policy model.vocab_size={model.vocab_size}: it must score the same tokens")

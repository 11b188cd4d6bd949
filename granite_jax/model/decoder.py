"""The Granite decoder: embedding, a scanned stack of blocks, tied LM head.

Layers run under `nn.scan` (one compiled block, so compile time does not grow
with depth) wrapped in `nn.remat` with a configurable checkpoint policy.
Parameters of the stack carry a leading `layers` axis.

Decoding passes a KV cache (granite_jax.model.cache) and returns
`(logits, new_cache)`. That path is inference only (no remat) and runs the
layers as a Python loop, each layer reading its own parameters and cache
arrays, so a decode step inside a `lax.while_loop` updates the cache in place
instead of re-stacking it. The parameters may be the stacked ones (each call
then slices them) or `decode_params(cfg, params)`: split per layer and cast to
the compute dtype once, outside the decode loop. `last_only=True` computes the
logits (or hidden states) of the last position only: what a prefill needs.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model.attention import Attention
from granite_jax.model.config import ModelConfig
from granite_jax.model.layers import Embed, RMSNorm
from granite_jax.model.mlp import MLP

REMAT_POLICIES = {
    "none": None,  # no rematerialization: keep every activation
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}

_ACT_BTD = ("act_batch", "act_length", "act_embed")
# The residual stream (embedding output, residual adds, the scanned carry): with tensor > 1 its
# length is split over tensor too (sequence parallelism, sharding/rules.py `act_res_length`).
_RES_BTD = ("act_batch", "act_res_length", "act_embed")


def sequence_parallel(axes) -> bool:
  """Whether the current logical axis rules split the residual stream's length further than the
  other activations' (sequence parallelism: tensor > 1)."""
  if axes != _RES_BTD:
    return False
  return nn.logical_to_mesh_axes(_RES_BTD) != nn.logical_to_mesh_axes(_ACT_BTD)


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, segment_ids_BT, positions_BT, cache_kv=None,
               kv_segment_ids_BS=None, cache_index=None):
    c = self.cfg
    # The cache path (prefill / decode) keeps the length unsplit over tensor.
    res = _ACT_BTD if cache_kv is not None else _RES_BTD
    sp = sequence_parallel(res)

    def norm(name, x_BTD):
      # Sequence parallel: normalize 1/tensor of the positions, all-gather them over tensor.
      y_BTD = RMSNorm(c.rms_eps, c.dtype, c.param_dtype, name=name)(x_BTD)
      return nn.with_logical_constraint(y_BTD, _ACT_BTD) if sp else y_BTD

    h_BTD = Attention(c, name="attn")(norm("attn_norm", x_BTD), segment_ids_BT, positions_BT,
                                      cache_kv, kv_segment_ids_BS, cache_index)
    new_kv = None
    if cache_kv is not None:
      h_BTD, new_kv = h_BTD
    x_BTD = x_BTD + c.residual_multiplier * h_BTD
    if sp:  # the residual add after attention on 1/tensor of the positions (a reduce-scatter)
      x_BTD = nn.with_logical_constraint(x_BTD, res)
    h_BTD = MLP(c, name="mlp")(norm("mlp_norm", x_BTD))
    x_BTD = x_BTD + c.residual_multiplier * h_BTD
    return nn.with_logical_constraint(x_BTD, res), new_kv


class Granite(nn.Module):
  """`apply({"params": p}, tokens_BT, segment_ids=..., positions=...) -> logits_BTV` (float32).

  With `cache=` and `cache_index=` (decode) it returns `(logits_BTV, new_cache)`.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BT, segment_ids=None, positions=None, return_hidden=False,
               cache=None, cache_index=None, last_only=False):
    c = self.cfg
    if c.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"model.remat_policy={c.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}")
    B, T = tokens_BT.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    embed = Embed(c.vocab_size, c.d_model, c.init_std, c.dtype, c.param_dtype, name="embed")
    x_BTD = embed(tokens_BT) * c.embedding_multiplier
    x_BTD = nn.with_logical_constraint(x_BTD, _ACT_BTD if cache is not None else _RES_BTD)

    if cache is not None:
      x_BTD, new_cache = self._cached_stack(x_BTD, segment_ids, positions, cache, cache_index)
      out = self._head(embed, x_BTD, return_hidden, last_only)
      return out, new_cache

    block = Block
    if c.remat_policy != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[c.remat_policy], prevent_cse=False)
    stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast), length=c.n_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x_BTD, _ = stack(c, name="layers")(x_BTD, segment_ids, positions)
    return self._head(embed, x_BTD, return_hidden, last_only)

  def _cached_stack(self, x_BTD, segment_ids, positions, cache, cache_index):
    c = self.cfg
    if cache_index is None:
      raise ValueError("Granite: cache_index is required with cache")
    if segment_ids is None:
      segment_ids = jnp.ones(x_BTD.shape[:2], jnp.int32)
    kv_segment_ids_BS = jax.lax.dynamic_update_slice(
        cache["segment_ids"], segment_ids.astype(jnp.int32), (0, cache_index))
    if "params" not in self.variables or "layers" not in self.variables["params"]:
      raise ValueError("Granite: the cache path needs initialized parameters (init without a cache)")
    layers = self.variables["params"]["layers"]
    if not isinstance(layers, (tuple, list)):  # stacked: slice (a copy per call on CPU)
      layers = split_layers(layers, c.n_layers)
    if len(layers) != c.n_layers or len(cache["k"]) != c.n_layers:
      raise ValueError(f"Granite: {len(layers)} layer parameter trees and {len(cache['k'])} "
                       f"cache layers for n_layers={c.n_layers}")
    block = Block(c, parent=None)
    new_k, new_v = [], []
    for p, k, v in zip(layers, cache["k"], cache["v"]):
      x_BTD, (k, v) = block.apply({"params": p}, x_BTD, segment_ids, positions, (k, v),
                                  kv_segment_ids_BS, cache_index)
      new_k.append(k)
      new_v.append(v)
    return x_BTD, dict(k=tuple(new_k), v=tuple(new_v), segment_ids=kv_segment_ids_BS)

  def _head(self, embed, x_BTD, return_hidden, last_only=False):
    c = self.cfg
    if last_only:
      x_BTD = x_BTD[:, -1:]
    x_BTD = RMSNorm(c.rms_eps, c.dtype, c.param_dtype, name="final_norm")(x_BTD)
    if return_hidden:
      return x_BTD
    if c.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      w_DV = self.param("lm_head", nn.with_logical_partitioning(
          nn.initializers.normal(c.init_std), ("embed", "vocab")), (c.d_model, c.vocab_size), c.param_dtype)
      logits_BTV = jnp.einsum("btd,dv->btv", x_BTD, w_DV.astype(c.dtype),
                              preferred_element_type=jnp.float32)
    logits_BTV = logits_BTV / c.logits_scaling
    return nn.with_logical_constraint(logits_BTV, ("act_batch", "act_length", "act_vocab"))


def split_layers(stacked, n_layers: int) -> tuple:
  """The stacked `layers` parameter tree (leading layer axis) -> one tree per layer."""
  return tuple(jax.tree.map(lambda a: a[i], stacked) for i in range(n_layers))


def decode_params(cfg: ModelConfig, params):
  """Parameters for repeated KV-cache calls (a decode loop): `layers` split per layer and
  every array cast to the compute dtype, once. The model casts each weight to that dtype
  before use, so the outputs are the same; the loop then neither slices the stacked
  layers nor casts weights at every step. Costs one copy of the weights (in model dtype).
  """
  cast = lambda a: a.astype(cfg.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
  out = {k: jax.tree.map(cast, v) for k, v in params.items() if k != "layers"}
  out["layers"] = split_layers(jax.tree.map(cast, params["layers"]), cfg.n_layers)
  return out

"""Scalar reward model: the Granite backbone plus a linear head on the last real token.

params = {"backbone": Granite params, "head": {"w": [D], "b": []}}; the backbone's final-normed
hidden state at each sequence's last real token (its <|end_of_text|>) goes through the head.
Trained on preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected)
(rl/reward_model_train.py). In RL (rl/rm_scorer.py) it scores whole rollout batches with
`jit_rm_score`, the one sharded scoring program, which the dry run (plan/programs.py) also lowers.
"""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from granite_jax.model import Granite, ModelConfig
from granite_jax.sharding.jit import with_mesh
from granite_jax.sharding.rules import rules_for
from granite_jax.train import state as state_lib
from granite_jax.train.step import batch_sharding


def init_head(cfg: ModelConfig) -> dict:
  return {"w": jnp.zeros((cfg.d_model,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def init_rm_params(cfg: ModelConfig, rng: jax.Array) -> dict:
  return {"backbone": state_lib.init_params(cfg, rng), "head": init_head(cfg)}


def rm_scores(params, tokens_BT, segment_ids_BT, *, cfg: ModelConfig) -> jax.Array:
  """Rows are right-padded single sequences (segment 1 = real) -> scores [B] (float32)."""
  B, T = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  hidden_BTD = Granite(cfg).apply({"params": params["backbone"]}, tokens_BT, segment_ids=segment_ids_BT,
                                  positions=positions_BT, return_hidden=True)
  last_B = jnp.maximum(jnp.sum(segment_ids_BT > 0, axis=-1) - 1, 0)
  h_BD = jnp.take_along_axis(hidden_BTD, last_B[:, None, None], axis=1)[:, 0].astype(jnp.float32)
  return h_BD @ params["head"]["w"] + params["head"]["b"]


def rm_token_scores(params, tokens_BT, segment_ids_BT, positions_BT, *, cfg: ModelConfig) -> jax.Array:
  """Packed rows (segments 1, 2, ... with positions restarting at each; 0 = padding) -> the head
  at every token [B, T] float32. A sequence's score is the value at its last token: the host
  knows where each one ends, so the program has one output shape however many a row holds."""
  hidden_BTD = Granite(cfg).apply({"params": params["backbone"]}, tokens_BT, segment_ids=segment_ids_BT,
                                  positions=positions_BT, return_hidden=True)
  return hidden_BTD.astype(jnp.float32) @ params["head"]["w"] + params["head"]["b"]


def bt_loss(r_chosen_B, r_rejected_B):
  """Bradley-Terry: mean -log sigmoid(r_c - r_r) -> (loss, accuracy = mean(r_c > r_r))."""
  d_B = r_chosen_B - r_rejected_B
  return -jnp.mean(jax.nn.log_sigmoid(d_B)), jnp.mean((d_B > 0).astype(jnp.float32))


def pad_rows(rows: list[list[int]], seq_len: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads (keeping the *end* of over-long rows: the score reads the last token)."""
  tokens = np.full((len(rows), seq_len), pad_id, np.int32)
  seg = np.zeros((len(rows), seq_len), np.int32)
  for i, r in enumerate(rows):
    r = list(r)[-seq_len:]
    tokens[i, :len(r)], seg[i, :len(r)] = r, 1
  return tokens, seg


def rm_param_shardings(cfg: ModelConfig, mesh: Mesh) -> dict:
  """The backbone sharded as the LM's (the stage's logical-axis rules); the head replicated."""
  rep = NamedSharding(mesh, P())
  return {"backbone": state_lib.param_shardings(cfg, mesh), "head": {"w": rep, "b": rep}}


def jit_rm_score(cfg: ModelConfig, mesh: Mesh):
  """`(params, tokens_BT, segment_ids_BT, positions_BT) -> scores_BT`: the scoring program of RL
  (rl/rm_scorer.py) and of the dry run (plan/programs.py). Rows split over the data axes like a
  train batch; the per-token scores come back replicated (small: 4 bytes a token), so every
  process reads all of them. `.jitted` is the jax.jit object the dry run lowers."""
  rows = batch_sharding(mesh)

  def score(params, tokens_BT, segment_ids_BT, positions_BT):
    with nn.logical_axis_rules(rules_for(mesh)):
      return rm_token_scores(params, tokens_BT, segment_ids_BT, positions_BT, cfg=cfg)

  jitted = jax.jit(score, in_shardings=(rm_param_shardings(cfg, mesh), rows, rows, rows),
                   out_shardings=NamedSharding(mesh, P()))
  return with_mesh(jitted, mesh)


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch axis of a scoring call is split (the data-parallel size)."""
  axes = batch_sharding(mesh).spec[0] or ()
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh.shape[a] for a in axes]))


def score_rows(c, shards: int) -> int:
  """Rows per scoring call: the RL train step's micro-batch (train.global_batch / grad_accum), so
  scoring fits wherever the step does, rounded up to a multiple of the batch `shards`."""
  rows = c.train.global_batch // max(int(c.train.get("grad_accum", 1)), 1)
  return max(shards, -(-rows // shards) * shards)


def read_rm_config(workdir: str) -> tuple[ModelConfig, int]:
  """(backbone ModelConfig, longest sequence scored: its train.seq_len) of a reward-model workdir."""
  path = os.path.join(workdir, "model_config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"rl.reward_model={workdir!r}: no model_config.json (train one with "
                            "configs/reward_model.py, or import one: python -m granite_jax.ckpt.hf "
                            "import HF_DIR WORKDIR)")
  with open(path) as f:
    cfg = ModelConfig.from_dict(json.load(f))
  with open(os.path.join(workdir, "config.json")) as f:
    return cfg, int(json.load(f)["train"]["seq_len"])

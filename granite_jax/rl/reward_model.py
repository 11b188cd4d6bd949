"""Scalar reward model: the Granite backbone plus a linear head on the last real token.

params = {"backbone": Granite params, "head": {"w": [D], "b": []}}; the backbone's final-normed
hidden state at each sequence's last real token (its <|end_of_text|>) goes through the head.
Trained on preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected)
(rl/reward_model_train.py); `load_scorer` turns a trained one into the `chat` reward hook.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from granite_jax.model import Granite, ModelConfig
from granite_jax.train import state as state_lib


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


def load_scorer(workdir: str, tok):
  """A reward model's workdir -> `score(prompt, response) -> float` for the chat reward.

  `prompt` is the rendered chat prompt (ending in the assistant generation prompt). A model trained
  here scores prompt + response + <|end_of_text|> in the policy's tokenizer `tok`; one imported from
  Hugging Face (ckpt/hf_reward.py) scores prompt + response in its own tokenizer.json.
  """
  from granite_jax.ckpt.manager import restore_params
  from granite_jax.data.chat_template import EOT

  path = os.path.join(workdir, "model_config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"rl.reward_model={workdir!r}: no model_config.json (train one with "
                            "configs/reward_model.py, or import one: python -m granite_jax.ckpt.hf "
                            "import HF_DIR WORKDIR)")
  with open(path) as f:
    cfg = ModelConfig.from_dict(json.load(f))
  with open(os.path.join(workdir, "config.json")) as f:
    seq_len = json.load(f)["train"]["seq_len"]
  suffix = EOT
  meta = os.path.join(workdir, "reward_model.json")
  if os.path.isfile(meta):
    with open(meta) as f:
      suffix = json.load(f).get("suffix", EOT)
  if os.path.isfile(os.path.join(workdir, "tokenizer.json")):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(workdir, "tokenizer.json"))
  abstract = jax.eval_shape(lambda: init_rm_params(cfg, jax.random.PRNGKey(0)))
  params = restore_params(os.path.join(workdir, "ckpt"), abstract)
  fn = jax.jit(lambda p, t, s: rm_scores(p, t, s, cfg=cfg))

  def score(prompt: str, response: str) -> float:
    ids = tok.encode(prompt + response + suffix).ids
    tokens, seg = pad_rows([ids], seq_len)
    return float(fn(params, tokens, seg)[0])
  return score

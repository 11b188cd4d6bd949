"""The reward model scoring a rollout batch: packed rows through one sharded program.

`load(workdir, tok, mesh=..., rows=..., template=...)` restores the reward model with the stage's
mesh shardings (rl/reward_model.py `rm_param_shardings`) and returns a `RewardModelScorer`:
`score_batch(prompts, responses) -> scores [N]` tokenizes every sequence, packs them by length into
rows of the model's `seq_len` (best fit, longest first; several sequences per row, each its own
segment with positions from 0), and runs the rows `rows` at a time through `jit_rm_score`, the
program the dry run compiles. Every call has the same shape: one compile per run.

What is scored, per sequence (its last `seq_len` tokens):
  trained here (rl/reward_model_train.py)   prompt + response + <|end_of_text|> in the policy's tokenizer
  imported (ckpt/hf_reward.py), template    its own chat template over the prompt's messages + the
                                            response as the assistant turn, in its own tokenizer
                                            (template="auto" and its tokenizer_config.json has one)
  imported, no template (or template="none") prompt + response text in its own tokenizer
"""
from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from granite_jax.rl import reward_model as rm_lib

TEMPLATES = ("auto", "none")


def pack(lengths: Sequence[int], row_len: int) -> list[list[int]]:
  """Best-fit decreasing: sequence indices per row, longest first; each row sums to <= row_len."""
  rows: list[list[int]] = []
  free: list[tuple[int, int]] = []  # (room left, row), sorted
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    n = lengths[i]
    k = bisect.bisect_left(free, (n, -1))
    if k < len(free):
      room, r = free.pop(k)
    else:
      room, r = row_len, len(rows)
      rows.append([])
    rows[r].append(i)
    if room - n > 0:
      bisect.insort(free, (room - n, r))
  return rows


def packed_rows(ids: Sequence[Sequence[int]], rows: list[list[int]], row_len: int, pad_id: int = 0):
  """-> tokens, segment_ids, positions int32 [R, row_len] and ends [N, 2] = (row, column of the last
  token) of each sequence."""
  R = len(rows)
  tokens = np.full((R, row_len), pad_id, np.int32)
  seg, pos = np.zeros((R, row_len), np.int32), np.zeros((R, row_len), np.int32)
  ends = np.zeros((len(ids), 2), np.int64)
  for r, members in enumerate(rows):
    at = 0
    for s, i in enumerate(members, start=1):
      n = len(ids[i])
      tokens[r, at:at + n], seg[r, at:at + n], pos[r, at:at + n] = ids[i], s, np.arange(n)
      ends[i] = (r, at + n - 1)
      at += n
  return tokens, seg, pos, ends


def chat_messages(prompt: str) -> list[dict]:
  """The policy's rendered prompt (data/chat_template.py's Granite format, ending in the assistant
  generation prompt) -> its messages; text in another form -> one user message."""
  from granite_jax.data.chat_template import END_ROLE, EOT, GENERATION_PROMPT, START
  body = prompt.removesuffix(GENERATION_PROMPT)
  if not body.startswith(START):
    return [{"role": "user", "content": prompt}]
  out = []
  for turn in body.split(START)[1:]:
    role, _, rest = turn.partition(END_ROLE)
    for end in (EOT + "\n", EOT):
      if rest.endswith(end):
        rest = rest[:-len(end)]
        break
    out.append({"role": role, "content": rest})
  return out


def encoder(workdir: str, tok, template: str = "auto") -> Callable[[str, str], list[int]]:
  """`encode(prompt, response) -> token ids` for the reward model in `workdir` (see the module doc)."""
  from granite_jax.data.chat_template import EOT, load_chat_tokenizer
  if template not in TEMPLATES:
    raise ValueError(f"rl.reward_model_template={template!r}: choose one of {list(TEMPLATES)}")
  meta = os.path.join(workdir, "reward_model.json")
  suffix = EOT
  if os.path.isfile(meta):
    with open(meta) as f:
      suffix = json.load(f).get("suffix", EOT)
  if not os.path.isfile(os.path.join(workdir, "tokenizer.json")):
    if tok is None:
      raise ValueError(f"rl.reward_model={workdir!r} has no tokenizer.json: it scores in the policy's "
                       "tokenizer, and none was given")
    return lambda p, r: tok.encode(p + r + suffix).ids
  own = load_chat_tokenizer(workdir)
  if template == "auto" and own.chat_template:
    def encode(p, r):  # as transformers' apply_chat_template(messages, tokenize=True)
      msgs = chat_messages(p) + [{"role": "assistant", "content": r}]
      return own.tokenizer.encode(own.render(msgs), add_special_tokens=False).ids
    return encode
  return lambda p, r: own.tokenizer.encode(p + r + suffix).ids


class RewardModelScorer:
  """Scores rollout batches with a restored reward model; `program` is `jit_rm_score`'s."""

  def __init__(self, params, cfg, encode, *, mesh, rows: int, seq_len: int, pad_id: int = 0):
    shards = rm_lib.batch_shards(mesh)
    if rows % shards:
      raise ValueError(f"reward-model scoring: {rows} rows per call must divide over the batch's "
                       f"{shards} shards")
    self.params, self.cfg, self.encode, self.mesh = params, cfg, encode, mesh
    self.rows, self.seq_len, self.pad_id = rows, seq_len, pad_id
    self.program = rm_lib.jit_rm_score(cfg, mesh)
    self.stats = dict(calls=0, rows=0, tokens=0)  # cumulative: packing efficiency, for the bench

  def score_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Token id lists (their last seq_len tokens are scored) -> scores [N] float32."""
    # An empty text (no suffix, nothing rendered) scores one padding token rather than failing the batch.
    ids = [list(x)[-self.seq_len:] or [self.pad_id] for x in ids]
    if not ids:
      return np.zeros(0, np.float32)
    rows = pack([len(x) for x in ids], self.seq_len)
    n_calls = -(-len(rows) // self.rows)
    rows += [[]] * (n_calls * self.rows - len(rows))  # the last call's spare rows: padding
    tokens, seg, pos, ends = packed_rows(ids, rows, self.seq_len, self.pad_id)
    sharding = rm_lib.batch_sharding(self.mesh)
    put = lambda x: jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])  # noqa: E731
    outs = []
    for k in range(n_calls):  # dispatched back to back; read once all are queued
      sl = slice(k * self.rows, (k + 1) * self.rows)
      outs.append(self.program(self.params, put(tokens[sl]), put(seg[sl]), put(pos[sl])))
    scores_RT = np.concatenate([np.asarray(o) for o in jax.device_get(outs)])
    self.stats["calls"] += n_calls
    self.stats["rows"] += n_calls * self.rows
    self.stats["tokens"] += sum(len(x) for x in ids)
    return scores_RT[ends[:, 0], ends[:, 1]].astype(np.float32)

  def score_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    return self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)])

  def __call__(self, prompt: str, response: str) -> float:
    return float(self.score_batch([prompt], [response])[0])


def default_mesh():
  """Every device on the data axis: scoring outside a stage (tools, tests)."""
  from granite_jax.sharding.mesh import make_mesh
  return make_mesh((-1, 1, 1), ("data", "fsdp", "tensor"))


def load(workdir: str, tok, *, mesh=None, rows: int | None = None, template: str = "auto") -> RewardModelScorer:
  """A reward model's workdir -> its RewardModelScorer on `mesh` (default: every device on data),
  `rows` rows per call (default: one per batch shard)."""
  from granite_jax.ckpt.manager import abstract_like, restore_params
  cfg, seq_len = rm_lib.read_rm_config(workdir)
  encode = encoder(workdir, tok, template)
  mesh = mesh if mesh is not None else default_mesh()
  abstract = jax.eval_shape(lambda: rm_lib.init_rm_params(cfg, jax.random.PRNGKey(0)))
  params = restore_params(os.path.join(workdir, "ckpt"), abstract_like(abstract, rm_lib.rm_param_shardings(cfg, mesh)))
  return RewardModelScorer(params, cfg, encode, mesh=mesh, rows=rows or rm_lib.batch_shards(mesh),
                           seq_len=seq_len)

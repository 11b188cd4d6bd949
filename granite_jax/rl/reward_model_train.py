"""Reward-model training on preference pairs (Bradley-Terry), `run_reward_model(config, workdir)`.

Pairs: `reward_model.pairs` JSONL of {"prompt"|"messages", "chosen", "rejected"} (+ "tools"),
or "" for generated demo pairs: a correct "The answer is N." over a wrong number or an
unformatted reply, the requested upper-case word over a wrong or lower-case one, a correct
<tool_call> over prose. Held-out pairs use the demo set's held-out operands and words.
The backbone starts from `init_from` (the SFT checkpoint), the head from zero. Checkpoints,
resume, preemption, the non-finite guard and the metrics are the run scaffold's (train/session.py).
"""
from __future__ import annotations

import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from granite_jax.ckpt.manager import abstract_like, restore_params
from granite_jax.data import demo_chat as demo_data
from granite_jax.data.chat_template import EOT, _tool_call, encode_chat
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.rl.reward_model import bt_loss, init_head, init_rm_params, pad_rows, rm_scores
from granite_jax.train import session
from granite_jax.train.guards import apply_if_finite
from granite_jax.train.state import TrainState
from granite_jax.train.step import batch_sharding


def demo_pairs(n: int, split: str, seed: int = 0) -> list[dict]:
  rng, out = random.Random(f"{seed}-pairs-{split}"), []
  for s in demo_data.generate(n, split, seed=seed + 7):
    prompt, ans = s["messages"][:-1], s["answer"]
    if s["kind"] == "arithmetic":
      wrong = str(int(ans) + rng.choice([-10, -2, -1, 1, 2, 10]))
      rejected = rng.choice([f"The answer is {wrong}.", ans, f"{ans} is what I think"])
      chosen = f"The answer is {ans}."
    elif s["kind"] == "tool":
      chosen = _tool_call(json.loads(ans))
      rejected = rng.choice(["I cannot check that.", "Sure, here it is."])
    else:
      other = rng.choice([w for w in demo_data.WORDS if w.upper() != ans])
      chosen, rejected = ans, rng.choice([ans.lower(), other.upper(), f"Here: {ans.lower()}"])
    out.append(dict(messages=prompt, tools=s.get("tools"), chosen=chosen, rejected=rejected))
  return out


def read_pairs(path: str) -> list[dict]:
  out = []
  with open(path) as f:
    for i, line in enumerate(f):
      if line.strip():
        r = json.loads(line)
        if "chosen" not in r or "rejected" not in r or ("prompt" not in r and "messages" not in r):
          raise ValueError(f"reward_model.pairs={path!r}: record {i} needs prompt|messages, chosen, rejected")
        out.append(dict(r, messages=r.get("messages") or [{"role": "user", "content": r["prompt"]}]))
  return out


def encode_pairs(tok, pairs: list[dict], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """-> tokens, segment_ids [2N, T]: chosen rows then rejected rows (tokenized like rl/rm_scorer.py scores them)."""
  rows = {"chosen": [], "rejected": []}
  for p in pairs:
    ids, _ = encode_chat(tok, p["messages"], p.get("tools"), add_generation_prompt=True)
    prompt = tok.decode(ids.tolist(), skip_special_tokens=False)
    for k in rows:
      rows[k].append(tok.encode(prompt + p[k] + EOT).ids)
  return pad_rows(rows["chosen"] + rows["rejected"], seq_len)


def _loss(params, tokens, seg, cfg):
  r = rm_scores(params, tokens, seg, cfg=cfg)
  n = tokens.shape[0] // 2
  return bt_loss(r[:n], r[n:])


def rm_step(state, batch, *, cfg, tx, schedule):
  (loss, acc), g = jax.value_and_grad(_loss, has_aux=True)(state.params, batch["tokens"],
                                                          batch["segment_ids"], cfg)
  new, grad_norm, skipped = apply_if_finite(state, g, loss, tx)
  return new, dict(loss=loss, accuracy=acc, grad_norm=grad_norm, lr=schedule(state.step), skipped=skipped)


def rm_shardings(job) -> TrainState:
  """Backbone and its optimizer moments as the LM's; the head replicated."""
  rep = NamedSharding(job.mesh, P())
  p_shard = {"backbone": job.shardings.params, "head": {"w": rep, "b": rep}}
  abstract_p = jax.eval_shape(lambda: init_rm_params(job.model_cfg, jax.random.PRNGKey(0)))
  opt_shard = optax.tree_map_params(job.tx, lambda _, s: s, jax.eval_shape(job.tx.init, abstract_p), p_shard,
                                    transform_non_params=lambda _: rep)
  return TrainState(step=rep, params=p_shard, opt_state=opt_shard)


def trainer(job, tok) -> session.Trainer:
  c, rm, cfg = job.config, job.config.reward_model, job.model_cfg
  shardings = rm_shardings(job)
  make = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, job.tx.init(p)), out_shardings=shardings)
  abstract_p = jax.eval_shape(lambda: init_rm_params(cfg, jax.random.PRNGKey(0)))

  def fresh_state():
    if c.init_from:
      backbone = restore_params(c.init_from, abstract_like(abstract_p["backbone"], job.shardings.params))
      return make({"backbone": backbone, "head": init_head(cfg)}), f"backbone from {c.init_from}"
    return make(init_rm_params(cfg, jax.random.PRNGKey(c.train.seed))), "fresh init"

  T, n = c.train.seq_len, c.train.global_batch
  train = read_pairs(rm.pairs) if rm.pairs else demo_pairs(rm.n_pairs, "train", c.train.seed)
  held = read_pairs(rm.eval_pairs) if rm.eval_pairs else demo_pairs(rm.n_eval_pairs, "eval", c.train.seed)
  rows = batch_sharding(job.mesh)
  # Every process builds the whole (small) pair batch; rows are split over the data axes.
  to_rows = lambda t, s: dict(tokens=session.global_from_full(t, rows), segment_ids=session.global_from_full(s, rows))
  held_rows = to_rows(*encode_pairs(tok, held, T))
  eval_fn = session.mesh_jit(lambda p, b: _loss(p, b["tokens"], b["segment_ids"], cfg), job.mesh,
                             in_shardings=(shardings.params, rows))

  def next_batch(state, position, step):
    i = position.state["next"]
    position.state["next"] = i + 1
    idx = np.random.default_rng([c.train.seed, i]).choice(len(train), n, replace=len(train) < n)
    return to_rows(*encode_pairs(tok, [train[j] for j in idx], T)), {}

  def done_line(s):
    first, last = s["first_eval"], s["final_eval"]
    if not (first and last):
      return None
    return (f"done: held-out pair accuracy {first['eval_accuracy']:.3f} -> {last['eval_accuracy']:.3f} "
            f"(loss {first['eval_loss']:.4f} -> {last['eval_loss']:.4f})")

  return session.Trainer(
      step_fn=lambda state, batch: rm_step(state, batch, cfg=cfg, tx=job.tx, schedule=job.schedule),
      batch_shardings=rows, make_data=lambda step, stop_requested: session.Position(next=step),
      next_batch=next_batch,
      fresh_state=fresh_state, state_shardings=shardings,
      abstract_state=abstract_like(jax.eval_shape(make, abstract_p), shardings),
      evaluate=lambda p: dict(zip(("eval_loss", "eval_accuracy"), map(float, eval_fn(p, held_rows)))),
      eval_at_start=True, log_every=1,
      banner={"pairs": f"{len(train)} train pairs ({rm.pairs or 'demo'}), {len(held)} held out "
                       f"({rm.eval_pairs or 'demo'})",
              "batch": f"{n} pairs x {T} tokens per step, {job.steps:,} steps"},
      postfix=lambda r: dict(loss=f"{r['loss']:.4f}", acc=f"{r['accuracy']:.3f}"),
      log_line=lambda r: (f"step {r['step']}: loss {r['loss']:.4f} acc {r['accuracy']:.3f}"
                          if r["step"] % c.train.log_every == 0 else None),
      done_line=done_line)


def run_reward_model(config, workdir: str, *, progress: bool = True) -> dict:
  job = session.build(config)
  return session.run(job, workdir, trainer(job, get_tokenizer(config.data)), progress=progress)

"""Reward-model training on preference pairs (Bradley-Terry), `run_reward_model(config, workdir)`.

Pairs: `reward_model.pairs` JSONL of {"prompt"|"messages", "chosen", "rejected"} (+ "tools"),
or "" for generated demo pairs: a correct "The answer is N." over a wrong number or an
unformatted reply, the requested upper-case word over a wrong or lower-case one, a correct
<tool_call> over prose. Held-out pairs use the demo set's held-out operands and words.
The backbone starts from `init_from` (the SFT checkpoint), the head from zero.
"""
from __future__ import annotations

import json
import os
import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from granite_jax.ckpt.manager import Checkpointer, abstract_like, restore_params
from granite_jax.data import demo_chat as demo_data
from granite_jax.data.chat_template import EOT, _tool_call, encode_chat
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.rl.reward_model import bt_loss, init_head, init_rm_params, pad_rows, rm_scores
from granite_jax.sharding.rules import rules_for
from granite_jax.train import loop as train_loop
from granite_jax.train.metrics import MetricsWriter
from granite_jax.train.state import TrainState


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
  """-> tokens, segment_ids [2N, T]: chosen rows then rejected rows (tokenized like load_scorer)."""
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


def run_reward_model(config, workdir: str, *, progress: bool = True) -> dict:
  c, rm = config, config.reward_model
  job = train_loop.build(c)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    train_loop.write_run_files(c, job, workdir)
  tok, cfg, mesh = get_tokenizer(c.data), job.model_cfg, job.mesh
  rep = NamedSharding(mesh, P())
  p_shard = {"backbone": job.shardings.params, "head": {"w": rep, "b": rep}}
  abstract_p = jax.eval_shape(lambda: init_rm_params(cfg, jax.random.PRNGKey(0)))
  opt_shard = optax.tree_map_params(job.tx, lambda _, s: s, jax.eval_shape(job.tx.init, abstract_p), p_shard,
                                    transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=p_shard, opt_state=opt_shard)
  make = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, job.tx.init(p)), out_shardings=shardings)
  ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=c.ckpt.max_to_keep, async_save=False)
  found = ckpt.restore_latest_good(abstract_like(jax.eval_shape(make, abstract_p), shardings), lambda: None) \
      if ckpt.all_steps() else None
  if found:
    state, start = found[1], f"resumed from step {found[0]}"
  elif c.init_from:
    backbone = restore_params(c.init_from, abstract_like(abstract_p["backbone"], job.shardings.params))
    state, start = make({"backbone": backbone, "head": init_head(cfg)}), f"backbone from {c.init_from}"
  else:
    state, start = make(init_rm_params(cfg, jax.random.PRNGKey(c.train.seed))), "fresh init"

  T, n = c.train.seq_len, c.train.global_batch
  train = read_pairs(rm.pairs) if rm.pairs else demo_pairs(rm.n_pairs, "train", c.train.seed)
  held = read_pairs(rm.eval_pairs) if rm.eval_pairs else demo_pairs(rm.n_eval_pairs, "eval", c.train.seed)
  eval_tok, eval_seg = encode_pairs(tok, held, T)

  def step_fn(state, tokens, seg):
    with nn.logical_axis_rules(rules_for(mesh)):
      (loss, acc), g = jax.value_and_grad(_loss, has_aux=True)(state.params, tokens, seg, cfg)
    updates, opt = job.tx.update(g, state.opt_state, state.params)
    new = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt)
    return new, dict(loss=loss, accuracy=acc, grad_norm=optax.global_norm(g), lr=job.schedule(state.step))

  train_fn = jax.jit(step_fn, in_shardings=(shardings, None, None), out_shardings=(shardings, rep),
                     donate_argnums=(0,))
  eval_fn = jax.jit(lambda p, t, s: _loss(p, t, s, cfg))
  evaluate = lambda p: dict(zip(("eval_loss", "eval_accuracy"), map(float, eval_fn(p, eval_tok, eval_seg))))
  writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
  step = int(jax.device_get(state.step))
  writer.truncate_after(step)
  first = evaluate(state.params) if step == 0 else None
  if first:
    writer.write(dict(step=0, **first))
  print(f"granite_jax | {c.name} | workdir {workdir} | {len(train)} pairs, {len(held)} held out | {start}",
        flush=True)
  last = first
  while step < job.steps:
    idx = np.random.default_rng([c.train.seed, step]).choice(len(train), n, replace=len(train) < n)
    tokens, seg = encode_pairs(tok, [train[i] for i in idx], T)
    state, m = train_fn(state, tokens, seg)
    step += 1
    record = dict(step=step, **{k: float(v) for k, v in jax.device_get(m).items()})
    if step % c.train.eval_every == 0 or step == job.steps:
      last = evaluate(state.params)
      record.update(last)
    writer.write(record)
    if progress and step % c.train.log_every == 0:
      print(f"step {step}: loss {record['loss']:.4f} acc {record['accuracy']:.3f}", flush=True)
    if step % c.ckpt.every_steps == 0 or step == job.steps:
      ckpt.save(step, state)
  ckpt.close()
  writer.close()
  if first and last:
    print(f"done: held-out pair accuracy {first['eval_accuracy']:.3f} -> {last['eval_accuracy']:.3f} "
          f"(loss {first['eval_loss']:.4f} -> {last['eval_loss']:.4f})", flush=True)
  return dict(first_eval=first, final_eval=last, workdir=workdir)

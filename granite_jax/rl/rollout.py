"""Rollout: prompts -> G samples each -> rewards -> group advantages -> one on-policy train batch.

Per group of G samples of one prompt:
  raw reward (rl/rewards, by domain) + overlong shaping (DAPO: a linear penalty from 0 to
  -overlong_penalty over the last `overlong_buffer` tokens before max_response_len);
  advantages = group_advantages(shaped rewards);
  overlong filtering (optional): truncated samples (no stop token) are masked out of the loss;
  dynamic sampling (optional, off in the report): groups whose rewards are all equal carry no
  signal; sample more prompts, up to `max_extra_batches` more batches, and keep informative groups.
  If still short, the batch is filled with uninformative groups whose mask is zeroed (a fixed
  batch shape: one compile).
The train batch (rl/step.py): each prompt + response sequence whole in a row of
T = max_prompt_len + max_response_len tokens, packed first-fit decreasing several to a row
(rl.pack, rl/packing.py; segment ids 1, 2, ... and positions restarting per sequence; the row
count bucketed, padding rows all mask 0) or one to a row, right-padded (rl.pack=False, P*G rows).
The advantages are per token (a sequence's own on its tokens), the sampler's log-probs ride
along (the step's logp_diff check, and the off-policy importance weights). Reference log-probs
(kl_coef != 0) come from the frozen reference params, old log-probs (ppo_epochs > 1 or off-policy
rollouts; else the step uses its own) from the current params: one forward each over the rows.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from granite_jax import metric_names as M
from granite_jax.data.chat_template import EOT
from granite_jax.rl import packing
from granite_jax.rl.grpo import group_advantages
from granite_jax.rl.step import LAYOUT_FIELDS, needs_old_logp
from granite_jax.infer.sampler import left_pad
from granite_jax.rl.rewards.scorer import as_scorer  # [rewards] RewardScorer (bounded, batched)


def overlong_penalty(lengths_N, max_len: int, buffer: int, penalty: float = 1.0) -> np.ndarray:
  """DAPO soft overlong punishment: 0 up to max_len - buffer, then linear down to -penalty at max_len."""
  lengths_N = np.asarray(lengths_N, np.float32)
  if buffer <= 0:
    return np.zeros_like(lengths_N)
  return penalty * np.clip((max_len - buffer - lengths_N) / buffer, -1.0, 0.0)


def decode_response(tok, tokens_N, length: int) -> str:
  return tok.decode([int(t) for t in tokens_N[:length]], skip_special_tokens=False).split(EOT)[0].strip()


def sample_and_score(params, tasks, *, sample_fn, tok, rewards, rl, rng, samples_per_prompt: int,
                     temperature: float) -> dict:
  """One sampler call over `tasks` -> numpy dict (rows prompt-major)."""
  eot = tok.token_to_id(EOT)
  prompts_BP, plen_B = left_pad([t["prompt_ids"] for t in tasks], pad_id=0, bucket=rl.max_prompt_len)
  out = jax.device_get(sample_fn(params, prompts_BP, plen_B, rng, np.float32(temperature),
                                 np.float32(rl.top_p), np.int32(rl.top_k)))
  tokens, logprobs, lengths = (np.asarray(out[k]) for k in ("tokens", "logprobs", "lengths"))
  G = samples_per_prompt
  # [rewards] one bounded, parallel scoring call per rollout batch (rl/rewards/scorer.py)
  texts = [decode_response(tok, row, int(n)) for row, n in zip(tokens, lengths)]
  rows = [tasks[i // G] for i in range(len(tokens))]
  raw, _ = as_scorer(rewards).score([t["prompt"] for t in rows], texts, [t["reference"] for t in rows],
                                    [t["domain"] for t in rows], [t.get("record") for t in rows])
  stopped = np.array([n > 0 and row[n - 1] == eot for row, n in zip(tokens, lengths)])
  return dict(tokens=tokens, logprobs=logprobs, lengths=lengths, raw=raw, truncated=~stopped,
              texts=texts, tasks=[t for t in tasks for _ in range(G)])


def _take(s: dict, rows) -> dict:
  return {k: ([v[i] for i in rows] if isinstance(v, list) else v[rows]) for k, v in s.items()}


def _cat(parts: list[dict]) -> dict:
  return {k: (sum((p[k] for p in parts), []) if isinstance(parts[0][k], list)
              else np.concatenate([p[k] for p in parts])) for k in parts[0]}


def collect_groups(params, draw_tasks: Callable[[int], list[dict]], *, sample_fn, tok, rewards, rl,
                   rng) -> tuple[dict, dict]:
  """Samples prompts_per_step groups (with dynamic sampling when enabled) -> (samples, stats)."""
  P, G = rl.prompts_per_step, rl.samples_per_prompt
  keep, spare, gen = [], [], 0
  while True:
    s = sample_and_score(params, draw_tasks(P), sample_fn=sample_fn, tok=tok, rewards=rewards, rl=rl,
                         rng=jax.random.fold_in(rng, gen), samples_per_prompt=G,
                         temperature=rl.temperature)
    gen += 1
    s["shaped"] = s["raw"] + overlong_penalty(s["lengths"], rl.max_response_len, rl.overlong_buffer,
                                              rl.overlong_penalty)
    s["live"] = np.ones(len(s["raw"]), bool)
    groups = [_take(s, np.arange(g * G, (g + 1) * G)) for g in range(P)]
    if not rl.dynamic_sampling:
      keep = groups
      break
    for g in groups:
      (keep if np.ptp(g["shaped"]) > 0 else spare).append(g)
    if len(keep) >= P or gen > rl.max_extra_batches:
      break
  informative = min(len(keep), P) if rl.dynamic_sampling else P
  for g in spare[: P - len(keep)]:  # fillers: in the batch for its shape, out of the loss
    g["live"] = np.zeros(G, bool)
  samples = _cat((keep + spare)[:P])
  return samples, dict(gen_batches=gen, groups_kept=informative / P)


def build_batch(samples: dict, rl, *, pad_id: int = 0, dp: int = 1, grad_accum: int = 1) -> dict:
  """Prompt + response sequences in the train layout (see rl/step.py): packed (rl.pack) into
  bucketed rows (`dp`, `grad_accum`: the data-parallel size and micro-batches, packing.bucket_rows),
  else one right-padded sequence a row."""
  P, G = rl.prompts_per_step, rl.samples_per_prompt
  T = rl.max_prompt_len + rl.max_response_len
  N = P * G
  adv = np.asarray(group_advantages(samples["shaped"].reshape(P, G), scale_by_std=rl.scale_by_std)).reshape(N)
  adv = np.where(samples["live"], adv, 0.0).astype(np.float32)
  live = samples["live"] & ~samples["truncated"] if rl.overlong_filter else samples["live"]
  plen = np.array([len(t["prompt_ids"]) for t in samples["tasks"]])
  lengths = plen + samples["lengths"]
  if getattr(rl, "pack", False):
    rows = packing.first_fit_decreasing(lengths, T)
    R = packing.bucket_rows(len(rows), total=N, micro=N // grad_accum, dp=dp,
                            buckets=getattr(rl, "pack_buckets", 8))
  else:
    rows, R = [[n] for n in range(N)], N
  tokens = np.full((R, T), pad_id, np.int32)
  seg, positions = np.zeros((R, T), np.int32), np.zeros((R, T), np.int32)
  mask, adv_RT, sampler_logp = (np.zeros((R, T), np.float32) for _ in range(3))
  for r, seqs in enumerate(rows):
    at = 0
    for k, n in enumerate(seqs):
      p, resp = samples["tasks"][n]["prompt_ids"], int(samples["lengths"][n])
      L, o = len(p) + resp, at + len(p)  # o: the first response token's column
      tokens[r, at:o] = p
      tokens[r, o:o + resp] = samples["tokens"][n, :resp]
      seg[r, at:at + L] = k + 1
      positions[r, at:at + L] = np.arange(L)
      if live[n] and resp:
        mask[r, o - 1:o + resp - 1] = 1.0  # position t predicts response token t+1
      adv_RT[r, at:at + L] = adv[n]
      sampler_logp[r, o - 1:o + resp - 1] = samples["logprobs"][n, :resp]
      at += L
  if not getattr(rl, "pack", False):  # one sequence a row: positions run on over the padding, as before
    positions = np.broadcast_to(np.arange(T, dtype=np.int32), (R, T)).copy()
  return dict(tokens=tokens, segment_ids=seg, positions=positions, mask=mask, advantages=adv_RT,
              sampler_logp=sampler_logp)


def reward_stats(samples: dict, rl, prefix: str = "") -> dict:
  raw, lengths = samples["raw"], samples["lengths"]
  # Names shared with plot.py (metric_names): a rename here moves the plot with it.
  out = {prefix + M.REWARD_MEAN: float(raw.mean()), f"{prefix}reward_std": float(raw.std()),
         prefix + M.ACCURACY: float((raw >= rl.correct_threshold).mean()),
         prefix + M.RESPONSE_LEN: float(lengths.mean()),
         f"{prefix}truncated_frac": float(samples["truncated"].mean())}
  for d in sorted({t["domain"] for t in samples["tasks"]}):
    rows = np.array([t["domain"] == d for t in samples["tasks"]])
    out[f"{prefix}reward/{d}"] = float(raw[rows].mean())
  return out


def generate(params, draw_tasks, *, sample_fn, tok, rewards, rl, rng, dp: int = 1,
             grad_accum: int = 1) -> tuple[dict, dict]:
  """Sampling, scoring and the train layout, without log-prob passes -> (numpy batch, stats).
  Host work and the sampler only: safe to run beside a train step (rl/off_policy.py)."""
  samples, stats = collect_groups(params, draw_tasks, sample_fn=sample_fn, tok=tok, rewards=rewards,
                                  rl=rl, rng=rng)
  batch = build_batch(samples, rl, pad_id=tok.token_to_id("<|pad|>") or 0, dp=dp, grad_accum=grad_accum)
  stats.update(reward_stats(samples, rl))
  stats.update(as_scorer(rewards).pop_metrics())  # [rewards] reward_failures/<domain>, timeouts, ...
  stats["example"] = samples["texts"][0][:120]
  m = batch["mask"]
  stats["packed_rows"] = float(len(m))
  stats["pad_frac"] = float(1.0 - (batch["segment_ids"] > 0).mean())  # row slots without a token
  return batch, stats


def add_logprobs(batch: dict, params, ref_params, *, logp_fn, rl) -> dict:
  """The log-prob passes over the batch's rows: ref_logp (kl_coef != 0) and old_logp (when
  step.needs_old_logp: ppo_epochs > 1 or off-policy; else the train step uses its own)."""
  layout = {k: batch[k] for k in LAYOUT_FIELDS}
  if needs_old_logp(rl):
    batch["old_logp"] = np.asarray(jax.device_get(logp_fn(params, layout)))
  if rl.kl_coef:
    batch["ref_logp"] = np.asarray(jax.device_get(logp_fn(ref_params, layout)))
  return batch


def rollout(params, ref_params, draw_tasks, *, sample_fn, logp_fn, tok, rewards, rl, rng,
            dp: int = 1, grad_accum: int = 1) -> tuple[dict, dict]:
  """-> (train batch as numpy arrays, stats), on-policy. `logp_fn(params, layout) -> logp [B, T]`."""
  batch, stats = generate(params, draw_tasks, sample_fn=sample_fn, tok=tok, rewards=rewards, rl=rl,
                          rng=rng, dp=dp, grad_accum=grad_accum)
  return add_logprobs(batch, params, ref_params, logp_fn=logp_fn, rl=rl), stats


def evaluate(params, tasks, *, sample_fn, tok, rewards, rl) -> dict:
  """Greedy held-out reward and accuracy; `sample_fn` built with samples_per_prompt=1."""
  s = sample_and_score(params, tasks, sample_fn=sample_fn, tok=tok, rewards=rewards, rl=rl,
                       rng=jax.random.PRNGKey(0), samples_per_prompt=1, temperature=0.0)
  out = reward_stats(s, rl, prefix="eval_")
  out.update({f"eval_{k}": v for k, v in as_scorer(rewards).pop_metrics().items()})  # [rewards]
  return out

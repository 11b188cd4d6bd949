"""The RL step on paper: rollout (prefill + decode), scoring, log-probs and train, per GPU.

`rl_step(c, hw, train_s=..., score_s=...)` (estimate.rl_step fills those in) splits one on-policy
RL step of a laid-out RL config (stages.load) into its phases, run one after another on the same
GPUs. Estimates from peak and bandwidth figures, not measurements; the assumptions:

- **Rollout layout.** `rl.rollout_axes` (configs/gb200.py ROLLOUT_AXES): those mesh axes' GPUs are
  tensor-parallel ways, the batch goes over the other batch axes. Without it (the training layout)
  the decode loop reads the whole model gathered over fsdp on every GPU (XLA hoists the
  all-gathers, plan/memory.py), so the ways are the mesh's `tensor` only.
- **Prefill** (compute-bound): with rollout axes the fast engine runs (infer/engine.py, what
  rl/loop.py builds in that layout): each prompt is prefilled once at the full `max_prompt_len`
  (`prompts_per_step` rows; its KV is shared by its `samples_per_prompt` samples); without (the
  single mesh program) every sample row prefills its prompt (the program repeats each prompt
  `samples_per_prompt` times and left-pads to the longest). Forward FLOPs (2 x matmul parameters
  + attention over the prompt, PaLM convention, logits of the last position only) spread over every
  GPU, at peak x `Hardware.efficiency`. Before it, the weights move once: the reshard to the rollout
  layout (each GPU receives its compute-dtype shard over NVLink) or, in the training layout, the
  hoisted all-gather of the whole model.
- **Decode** (bandwidth-bound): `decode_steps` 1-token steps, by default `max_response_len` (the
  full length, conservative: the batch runs until its last row stops, and among 1,024
  long-tailed samples one reaches the cap; the engine's compaction drops finished rows but cannot
  shorten the longest). Each step every GPU reads its weight shard (parameters x compute-dtype
  bytes / ways) and its share of the KV cache at HBM bandwidth. The cache share read: with the
  engine (`filled_cache`, the default with rollout axes) the filled cache, on average the prompt
  plus half the steps per row (its chunks attend over length-bucketed generated KV); the single
  program (`filled_cache=False`, the default without) attends over the whole preallocated cache
  (prompt + response slots) at every step. A step takes max(bytes / HBM bandwidth, FLOPs /
  (peak x efficiency)) plus its tensor-parallel all-reduces (two per layer and one for the
  vocabulary: latency `Hardware.collective_s` each, plus their bytes over NVLink).
- **Scoring**: a reward model's forward over every rollout token (RLHF, `estimate.score_time`);
  0 for verifiable rewards (CPU workers, rl/rewards).
- **Log-probs**: forward passes over the `global_batch x seq_len` train batch: the reference's
  when `kl_coef` > 0, and the policy's old log-probs when rl/step.py needs them (`ppo_epochs` > 1
  or off-policy rollouts), at full length (packing only removes padding). Each takes max(FLOPs / (peak x
  efficiency), its FSDP all-gather of the weights over NVLink).
- **Train**: the planner's train step (estimate.plan_config), its compute at peak x efficiency.
"""
from __future__ import annotations

import dataclasses
import math

from granite_jax import flops
from granite_jax.plan import stages
from granite_jax.plan.memory import dtype_bytes

PHASES = ("prefill", "decode", "score", "logprobs", "train")


@dataclasses.dataclass(frozen=True)
class RLStep:
  """Seconds of each phase of one RL step, and the decode model's inputs (per GPU)."""
  reshard_s: float          # weights to the rollout layout (or the hoisted all-gather), once
  prefill_s: float
  decode_s: float
  score_s: float
  logprobs_s: float
  train_s: float
  decode_steps: int
  decode_step_s: float
  weight_read: float        # bytes per GPU per decode step
  cache_read: float         # bytes per GPU per decode step
  ways: int                 # tensor-parallel ways of the rollout
  rows_per_rank: float      # sample rows per rollout batch rank
  logprob_passes: int

  @property
  def rollout_s(self) -> float:
    return self.reshard_s + self.prefill_s + self.decode_s

  @property
  def total_s(self) -> float:
    return self.rollout_s + self.score_s + self.logprobs_s + self.train_s

  def as_dict(self) -> dict:
    return dict(dataclasses.asdict(self), rollout_s=self.rollout_s, total_s=self.total_s)


def rollout_layout(c) -> tuple[int, int]:
  """(tensor-parallel ways, batch ranks) of the RL stage's rollout on its mesh."""
  from granite_jax.plan.programs import rollout_axes
  from granite_jax.sharding.rules import RULES, tensor_ways
  mesh, axes = stages.mesh_sizes(c), rollout_axes(c)
  if not axes:  # training layout: batch over data x fsdp, ways = tensor
    return mesh.get("tensor", 1), mesh.get("data", 1) * mesh.get("fsdp", 1)
  ranks = math.prod(mesh.get(a, 1) for a in dict(RULES)["act_batch"] if a not in axes)
  return tensor_ways(mesh, axes), ranks


def forward_flops_per_token(cfg, seq_len: int, head: bool = True) -> float:
  """Forward FLOPs of one token attending over `seq_len` (PaLM convention), with or without the
  LM head."""
  matmul = flops.matmul_params(cfg) - (0 if head else cfg.d_model * cfg.vocab_size)
  return 2 * matmul + flops.attention_flops_per_token(cfg, seq_len) / 3


def prefill_time(cfg, rows: int, prompt_len: int, gpus: int, hw) -> float:
  """Every row's prompt through the stack, the last position's logits; compute-bound."""
  f = rows * (prompt_len * forward_flops_per_token(cfg, prompt_len, head=False)
              + 2 * cfg.d_model * cfg.vocab_size)
  return f / gpus / (hw.peak_flops * hw.efficiency)


def decode_step(cfg, rows_per_rank: float, ways: int, slots: int, hw) -> tuple[float, float, float]:
  """(seconds, weight bytes, cache bytes) of one 1-token decode step on one GPU."""
  ab = dtype_bytes(cfg.dtype)
  weights = cfg.num_params() * ab / ways
  kv_heads = max(cfg.n_kv_heads / ways, 1)
  cache = 2 * cfg.n_layers * rows_per_rank * slots * kv_heads * cfg.head_dim * ab
  f = rows_per_rank * (2 * flops.matmul_params(cfg) + 4 * cfg.n_layers * slots * cfg.n_heads * cfg.head_dim) / ways
  body = max((weights + cache) / (hw.hbm_tbs * 1e12), f / (hw.peak_flops * hw.efficiency))
  comm = 0.0
  if ways > 1:
    n = 2 * cfg.n_layers + 1
    bytes_ = 2 * cfg.n_layers * rows_per_rank * cfg.d_model * ab * 2 * (ways - 1) / ways
    comm = n * hw.collective_s + bytes_ / (hw.nvlink_gbs * 1e9)
  return body + comm, weights, cache


def logprob_passes(rl) -> int:
  """Forward passes over the train batch for log-probs: the reference (kl_coef > 0) and the old
  policy's where rl/step.py needs a separate one."""
  from granite_jax.rl import step as rl_step
  return int(rl_step.needs_old_logp(rl)) + int(bool(rl.kl_coef))


def forward_pass_time(cfg, tokens: int, seq_len: int, mesh: dict, hw) -> float:
  """One log-prob forward over `tokens` train tokens on the training layout."""
  gpus = math.prod(mesh.values())
  f = tokens * forward_flops_per_token(cfg, seq_len) / gpus
  tp, fs = mesh.get("tensor", 1), mesh.get("fsdp", 1)
  gather = cfg.num_params() / tp * dtype_bytes(cfg.param_dtype) * (fs - 1) / fs
  return max(f / (hw.peak_flops * hw.efficiency), gather / (hw.nvlink_gbs * 1e9))


def reshard_time(cfg, mesh: dict, ways: int, rollout: bool, hw) -> float:
  """Weights into the decode loop, once per rollout: each GPU receives its compute-dtype shard of
  the rollout layout, or (training layout) the whole model gathered over fsdp."""
  ab = dtype_bytes(cfg.dtype)
  if rollout:
    moved = cfg.num_params() * ab / ways
  else:
    fs = mesh.get("fsdp", 1)
    moved = cfg.num_params() * ab / mesh.get("tensor", 1) * (fs - 1) / fs
  return moved / (hw.nvlink_gbs * 1e9)


def rl_step(c, hw, *, train_s: float, score_s: float = 0.0, decode_steps: int | None = None,
            filled_cache: bool | None = None) -> RLStep:
  """The RL step of laid-out config `c` (stages.load(stage, preset)) split into its phases.
  `decode_steps`: default max_response_len. `filled_cache`: a decode that reads only the filled
  cache (infer/engine.py's), on average the prompt plus half the steps, instead of the mesh
  program's whole preallocated cache; default: the engine's when the stage has rollout axes
  (rl/loop.py runs the engine then, which also prefills each prompt once). `hw`: estimate.Hardware;
  `train_s`, `score_s`: the train step's and the reward model's scoring time (estimate.rl_step
  computes them with the planner's step model and calls this)."""
  from granite_jax.plan.programs import rollout_axes
  rl, cfg, mesh = c.rl, stages.model(c), stages.mesh_sizes(c)
  gpus = math.prod(mesh.values())
  ways, ranks = rollout_layout(c)
  rows = rl.prompts_per_step * rl.samples_per_prompt
  engine = bool(rollout_axes(c))  # rl/loop.py: the fast engine in the rollout layout
  filled_cache = engine if filled_cache is None else filled_cache
  steps = rl.max_response_len if decode_steps is None else decode_steps
  slots = rl.max_prompt_len + (steps / 2 if filled_cache else rl.max_response_len - 1)
  step_s, w, kv = decode_step(cfg, rows / ranks, ways, slots, hw)
  passes = logprob_passes(rl)
  fwd = forward_pass_time(cfg, c.train.global_batch * c.train.seq_len, c.train.seq_len, mesh, hw)
  return RLStep(reshard_s=reshard_time(cfg, mesh, ways, engine, hw),
                prefill_s=prefill_time(cfg, rl.prompts_per_step if engine else rows, rl.max_prompt_len,
                                       gpus, hw),
                decode_s=steps * step_s, score_s=score_s, logprobs_s=passes * fwd,
                train_s=train_s, decode_steps=steps,
                decode_step_s=step_s, weight_read=w, cache_read=kv, ways=ways,
                rows_per_rank=rows / ranks, logprob_passes=passes)

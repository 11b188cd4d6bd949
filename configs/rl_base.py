"""Shared RL settings: on-policy GRPO with the DAPO loss and a k3 KL-loss term against the SFT model.

Report scale: 64 prompts x 16 samples = a train batch of 1024 sequences, context 8192
(prompt + response), asymmetric clip (0.2, 0.28), token-mean aggregation, dynamic sampling off.
`tiny`: 8 prompts x 8 samples of the demo tasks with 32-token responses, runs on a CPU in minutes;
its LR is far above the report's because a 4M-parameter model moves too little at 5e-7.
Stages chain with `--config.init_from=<previous stage>/ckpt`; `--config.rl.ref_from=<sft>/ckpt`.
"""
from ml_collections import ConfigDict

from configs import base
from configs.lce_32k import post_lce_model

REPORT_SAMPLES, REPORT_BATCH, REPORT_CONTEXT = 16, 1024, 8192


def rl_config(arg, *, name: str, lr: float, kl_coef: float, steps: int, tiny_steps: int,
              demo_tasks: str, tiny_lr: float = 1e-4):
  c = post_lce_model(base.get_config(arg))  # SFT's network: RoPE theta 1e7, post-LCE length
  c.name = name
  c.data.kind = "sft"  # only the tokenizer (and the demo SFT files) are read from `data`
  c.data.sft = ConfigDict(dict(sources="", eval_sources=""))
  tiny = base.is_tiny(c.preset)
  c.rl = ConfigDict(dict(
      prompts="", eval_prompts="",      # JSONL of {"prompt"|"messages", "domain", "reference"}; "" = demo
      demo_tasks=demo_tasks,            # multidomain | math | chat | identity (rl/tasks.py)
      ref_from="",                      # reference (SFT) checkpoint; needed at real sizes; tiny: "" = init_from
      reward_model="",                  # reward-model workdir for the chat domain (RLHF)
      samples_per_prompt=8 if tiny else REPORT_SAMPLES,
      prompts_per_step=8 if tiny else REPORT_BATCH // REPORT_SAMPLES,
      max_prompt_len=96 if tiny else 2048,
      max_response_len=32 if tiny else REPORT_CONTEXT - 2048,
      temperature=1.0, top_p=1.0, top_k=0,
      kl_coef=kl_coef, eps_low=0.2, eps_high=0.28, agg="token-mean", dual_clip=0.0,  # 0 = off
      scale_by_std=True,
      ppo_epochs=1,                     # optimizer steps per rollout batch (1 = on-policy, no old-logp pass)
      pack=True,                        # train/log-prob rows packed with sequences (rl/packing.py); False: one a row
      pack_buckets=8,                   # row-count buckets up to one micro-batch (few compiled shapes)
      off_policy_steps=0,               # 1: step k+1's rollout generated while step k trains (rl/off_policy.py)
      tis_cap=2.0,                      # off-policy: truncated importance weight min(p_old / p_sampler, cap)
      rollout_rows=0,                   # rows the rollout engine decodes at once (0: every sample of the call);
                                        # fewer: the rest wait and refill finished rows (infer/engine.py)
      overlong_buffer=8 if tiny else 1024, overlong_penalty=1.0, overlong_filter=False,
      dynamic_sampling=False, max_extra_batches=2,
      correct_threshold=1.0,            # a sample counts as accurate when its reward >= this
      eval_prompts_n=32 if tiny else 256,
      # --- rewards (granite_jax/rl/rewards/scorer.py; README "Rewards") ---
      reward_fns="",                    # 'domain=package.module:function[@batched],...' (own verifiers)
      reward_url="",                    # reward service: a URL for every other domain, or 'domain=URL,...'
      reward_weights="",                # 'domain=w,...': reward = w * raw reward (default 1)
      reward_min="",                    # 'domain=r,...': score of a failed call (default 0; chat -10)
      reward_workers=2 if tiny else 8,  # worker processes (0 = in this process, no time/memory limit)
      reward_timeout_s=10.0,            # per call (one response; one batch of a batched reward)
      reward_memory_mb=2048,            # address-space limit of each worker (RLIMIT_AS)
      reward_batch_size=32,             # responses per call of a batched reward
      reward_service=ConfigDict(dict(timeout_s=30.0, concurrency=4, retries=2, backoff_s=0.5,
                                     batch_size=32, max_consecutive_failures=0)),  # 0 = never stop
  ))
  c.train.global_batch = c.rl.prompts_per_step * c.rl.samples_per_prompt
  c.train.seq_len = c.rl.max_prompt_len + c.rl.max_response_len
  c.train.steps = tiny_steps if tiny else steps
  c.train.eval_every = 10 if tiny else 50
  c.train.eval_batches = 1              # 0 turns the held-out greedy eval off
  c.train.log_every = 5 if tiny else 10
  c.train.grad_accum = 1 if tiny else 16
  c.ckpt.every_steps = 10 if tiny else 50
  c.optim.schedule = "constant"
  c.optim.peak_lr = tiny_lr if tiny else lr
  c.optim.warmup_steps = 0 if tiny else 10
  c.optim.weight_decay = 0.0
  return c

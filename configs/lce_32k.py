"""Phase 5a: long-context extension 4K -> 32K on the phase-4 mixture.

Start from phase 4: `--config.init_from=runs/phase4/ckpt`. LR decays exponentially
from 1e-4 to 0; at the end the result is merged with the starting checkpoint
(`merge.*`) so short-context quality survives. `tiny` scales 32K down to 1024.
"""
from configs import base, phase4

# RoPE theta per stage: pretraining uses 1e4; the LCE stages raise it
# (ABF-style) and end at 1e7, the value released Granite checkpoints carry.
ROPE_THETA = {"lce_32k": 1e6, "lce_128k": 1e7, "lce_512k": 1e7}
TINY_LENGTH = {"lce_32k": 1024, "lce_128k": 2048, "lce_512k": 4096}
REAL_LENGTH = {"lce_32k": 32_768, "lce_128k": 131_072, "lce_512k": 524_288}
# Context-parallel degree for the real sizes (sequence split over this many GPUs of one NVLink domain).
REAL_CONTEXT = {"lce_32k": 1, "lce_128k": 4, "lce_512k": 8}  # 512K: 96 GiB/GPU for 8B (docs/long_context.md)
# Token budgets: the report does not give them; these are our defaults.
REAL_TOKENS = {"lce_32k": 60e9, "lce_128k": 30e9, "lce_512k": 10e9}
# The last long-context stage of each size (the report takes 3B to 128K only): the base model
# every later stage (SFT, reward model, RL) starts from, and so the network they must run.
LAST_LCE = {"3b": "lce_128k", "8b": "lce_512k", "30b": "lce_512k"}


def post_lce_model(c):
  """SFT / reward model / RL at real sizes run the post-LCE network: RoPE theta 1e7 and the
  length the base model was extended to (`max_seq_len` >= their sequence). `tiny` chains from
  the pretraining phases (README), so it keeps their theta and length."""
  if not base.is_tiny(c.preset):
    last = LAST_LCE[c.preset]
    c.model.rope_theta = ROPE_THETA[last]
    c.model.max_seq_len = REAL_LENGTH[last]
  return c


def lce_config(name: str, arg: str | None):
  c = phase4.get_config(arg)
  c.name = name
  tiny = base.is_tiny(c.preset)
  length = TINY_LENGTH[name] if tiny else REAL_LENGTH[name]
  c.train.seq_len = length
  c.model.max_seq_len = length
  c.model.rope_theta = ROPE_THETA[name]
  c.model_changes = "rope_theta,max_seq_len"  # on purpose: the point of the stage
  # ~4M tokens per step at every length (tiny: 8K tokens per step).
  c.train.global_batch = max(1, (8192 if tiny else 4 * 1024 * 1024) // length)
  c.optim.schedule = "exponential"
  c.optim.peak_lr = 1e-4
  c.optim.final_lr = 0.0
  c.optim.warmup_steps = 0
  c.train.eval_every = 10 if tiny else 200
  if tiny:
    c.train.steps = 40
    c.model.attention_impl = "blockwise"  # never a T x T score matrix
    c.model.attention_block = 256
  else:
    c.train.tokens = REAL_TOKENS[name]
    c.model.attention_impl = "cudnn" if REAL_CONTEXT[name] == 1 else "allgather"
    c.mesh.axes = ("data", "fsdp", "tensor", "context")
    # FSDP=8 inside a node/NVLink domain: params + AdamW state of 8B replicated would not fit.
    c.mesh.shape = (-1, 8, 1, REAL_CONTEXT[name])
  c.merge = base.merge_config(enabled=True, weight=0.5)
  return c


def get_config(arg: str | None = None):
  return lce_config("lce_32k", arg)

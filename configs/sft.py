"""SFT on chat data: 3 epochs, LR 5e-6 with linear warmup over 3% of steps and linear decay,
sequence 16,384, 256 packed sequences per step (~4.2M tokens), as in the report. The step count
is the data's: packed rows x 3 epochs / 256 (train.steps=0; an explicit train.steps wins).

Data: `--config.data.sft.sources=/data/sft/*.jsonl` (and `eval_sources`), conversations in
the `messages` format, rendered with the Granite chat template; only assistant tokens train.
Start from the base model: `--config.init_from=runs/lce_512k/merged/ckpt` (3B: lce_128k), whose
network (RoPE theta 1e7, its max length) the real sizes run (`post_lce_model`).
`tiny` trains on a generated demo set (arithmetic, tool calls, instructions).
"""
from ml_collections import ConfigDict

from configs import base
from configs.lce_32k import post_lce_model

REPORT_STEPS = 25_000  # "linear decay over ~25K steps" for ~4.1M samples x 3 epochs (reference only)


def get_config(arg: str | None = None):
  c = post_lce_model(base.get_config(arg))  # starts from the last LCE stage's merged model
  c.name = "sft"
  c.data.kind = "sft"
  c.data.sft = ConfigDict(dict(sources="", eval_sources=""))  # "" = the demo SFT set
  c.train.epochs = 3
  c.optim.schedule = "linear_to_zero"
  c.optim.weight_decay = 0.0
  if base.is_tiny(c.preset):
    c.train.seq_len = 512  # a tool-calling sample (tool list in the system turn) is ~350 tokens
    c.train.global_batch = 8
    c.train.steps = 200
    c.train.epochs = 0  # tiny: as many passes as train.steps needs
    c.train.eval_every = 50
    c.optim.peak_lr = 1e-3  # a tiny model from a 2-minute pretraining needs a larger step than 5e-6
  else:
    c.train.seq_len = 16_384
    c.train.global_batch = 256
    c.train.steps = 0  # derived: packed rows of the data x 3 epochs / 256 (~REPORT_STEPS for the report)
    c.optim.peak_lr = 5e-6
  c.optim.warmup_fraction = 0.03  # 3% of the steps, also when they are derived from the data
  return c

"""Reward model for RLHF: the Granite backbone + a scalar head, Bradley-Terry loss on preference pairs.
The report gives no RM hyper-parameters; these are common choices (1 epoch-scale, LR 1e-6, batch 256 pairs).

  python launch/run.py --config=configs/reward_model.py --config.init_from=runs/sft/ckpt \
      --config.reward_model.pairs=/data/prefs.jsonl --config.reward_model.eval_pairs=/data/prefs_eval.jsonl
`tiny`: generated pairs (correct vs wrong/unformatted answers), 60 steps on a CPU; LR 3e-4, far
above the real one, because a 4M-parameter model from a short SFT needs the larger step.
"""
from ml_collections import ConfigDict

from configs import base
from configs.lce_32k import post_lce_model


def get_config(arg: str | None = None):
  c = post_lce_model(base.get_config(arg))  # starts from SFT: the post-LCE network
  c.name = "reward_model"
  tiny = base.is_tiny(c.preset)
  c.data.kind = "sft"  # only the tokenizer is read from `data`
  c.data.sft = ConfigDict(dict(sources="", eval_sources=""))
  c.reward_model = ConfigDict(dict(pairs="", eval_pairs="", n_pairs=2000, n_eval_pairs=128))
  # It scores RL sequences (prompt + response, context 8192 in the report), so it trains at that length.
  c.train.seq_len = 128 if tiny else 8192
  c.train.global_batch = 16 if tiny else 256  # pairs per step
  c.train.steps = 60 if tiny else 2000
  c.train.eval_every = 20 if tiny else 200
  c.train.log_every = 10
  c.ckpt.every_steps = 60 if tiny else 500
  c.optim.schedule = "constant"
  c.optim.peak_lr = 3e-4 if tiny else 1e-6
  c.optim.warmup_steps = 5 if tiny else 50
  c.optim.weight_decay = 0.0
  return c

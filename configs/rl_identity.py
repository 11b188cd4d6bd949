"""RL stage 3, identity and knowledge calibration: the model names itself (Granite) and abstains on
questions it cannot know while still answering answerable ones. LR 3e-7, KL 0.09, ~40 steps (report).

  python launch/run.py --config=configs/rl_identity.py --config.init_from=runs/rlhf/ckpt \
      --config.rl.ref_from=runs/sft/ckpt
"""
from configs.rl_base import rl_config


def get_config(arg: str | None = None):
  return rl_config(arg, name="rl_identity", lr=3e-7, kl_coef=0.09, steps=40, tiny_steps=10,
                   demo_tasks="identity")

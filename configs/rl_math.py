"""RL stage 4, math: verifiable answers (final-answer equivalence, granite_jax/rl/rewards/math_answer.py).
LR 5e-7, KL 0.05 (report). Steps are not in the report; 300 is ours.

  python launch/run.py --config=configs/rl_math.py --config.init_from=runs/rl_identity/ckpt \
      --config.rl.ref_from=runs/sft/ckpt
`tiny`: the demo arithmetic ("What is a + b?"), held-out operands for the eval.
"""
from configs.rl_base import rl_config


def get_config(arg: str | None = None):
  return rl_config(arg, name="rl_math", lr=5e-7, kl_coef=0.05, steps=300, tiny_steps=40,
                   demo_tasks="math")

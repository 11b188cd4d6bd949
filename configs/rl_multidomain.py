"""RL stage 1, multi-domain: math, science, logic, instruction following, structured output,
text2sql, temporal, ICL and tool use, each with its programmatic reward (granite_jax/rl/rewards).
LR 5e-7, KL 0.05 (report). Steps are not in the report; 500 is our choice.

  python launch/run.py --config=configs/rl_multidomain.py --config.init_from=runs/sft/ckpt
`tiny`: the demo arithmetic / tool-call / instruction prompts.
"""
from configs.rl_base import rl_config


def get_config(arg: str | None = None):
  return rl_config(arg, name="rl_multidomain", lr=5e-7, kl_coef=0.05, steps=500, tiny_steps=20,
                   demo_tasks="multidomain")

"""RL stage 2, RLHF: general chat prompts scored by a scalar reward model (configs/reward_model.py)
through the `chat` reward hook. LR 3e-7, KL 0.09 (report). Steps are not in the report; 300 is ours.

  python launch/run.py --config=configs/rlhf.py --config.init_from=runs/rl_multidomain/ckpt \
      --config.rl.ref_from=runs/sft/ckpt --config.rl.reward_model=runs/reward_model
A released Hugging Face reward model (`*ForSequenceClassification`, one label) works too:
  python -m granite_jax.ckpt.hf import HF_RM_DIR runs/hf_rm   then --config.rl.reward_model=runs/hf_rm
`tiny`: the demo prompts, scored by the tiny reward model.
"""
from configs.rl_base import rl_config


def get_config(arg: str | None = None):
  c = rl_config(arg, name="rlhf", lr=3e-7, kl_coef=0.09, steps=300, tiny_steps=15, demo_tasks="chat")
  c.rl.correct_threshold = 0.0  # reward-model scores are logits: "accurate" = scored above 0
  # An imported HF reward model renders prompt + response with its own chat template when its
  # tokenizer_config.json has one ("auto"); "none": the policy-rendered text as is.
  c.rl.reward_model_template = "auto"
  return c

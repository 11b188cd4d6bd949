"""Rewards of the multi-domain RL stage: one pure `(prompt, response, reference) -> float` per domain.

The RL loop scores through `build_rewards(config, tok) -> RewardScorer` (scorer.py): bounded worker
processes (pool.py), user functions by import path (registry.py), a reward service (service.py).
`make_rewards(chat_model=None)` builds the in-process registry of counted, crash-proof
`Reward`s; `score(rewards, domain, prompt, response, reference)` looks one up.
"""
from __future__ import annotations

from collections.abc import Callable

from granite_jax.rl.rewards.base import Reward, RewardDataError
from granite_jax.rl.rewards.chat import make_chat_reward
from granite_jax.rl.rewards.choice import choice_reward
from granite_jax.rl.rewards.icl import icl_reward
from granite_jax.rl.rewards.identity import calibration_reward, identity_reward
from granite_jax.rl.rewards.instruction import instruction_reward
from granite_jax.rl.rewards.math_answer import math_reward
from granite_jax.rl.rewards.structured import structured_reward
from granite_jax.rl.rewards.temporal import temporal_reward
from granite_jax.rl.rewards.text2sql import text2sql_reward

REWARD_FNS = {
    "math": math_reward,
    "science": choice_reward,
    "logic": choice_reward,
    "instruction_following": instruction_reward,
    "structured_output": structured_reward,
    "text2sql": text2sql_reward,
    "temporal": temporal_reward,
    "icl": icl_reward,
    "identity": identity_reward,
    "calibration": calibration_reward,
}


def make_rewards(chat_model: Callable[..., float] | None = None,
                 chat_min_reward: float = 0.0) -> dict[str, Reward]:
  rewards = {name: Reward(name, fn) for name, fn in REWARD_FNS.items()}
  if chat_model is not None:
    rewards["chat"] = Reward("chat", make_chat_reward(chat_model), min_reward=chat_min_reward)
  return rewards


def score(rewards: dict[str, Reward], domain: str, prompt: str, response: str, reference) -> float:
  if domain not in rewards:
    raise RewardDataError(f"reward domain {domain!r} is not one of {sorted(rewards)}")
  return rewards[domain](prompt, response, reference)


from granite_jax.rl.rewards.scorer import RewardScorer, build_rewards  # noqa: E402 -- needs base first

__all__ = ["REWARD_FNS", "Reward", "RewardDataError", "RewardScorer", "build_rewards", "make_chat_reward",
           "make_rewards", "score"]

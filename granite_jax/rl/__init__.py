"""Reinforcement learning (GRPO / DAPO): advantages, policy loss, rewards, rollouts (sampling: infer/)."""

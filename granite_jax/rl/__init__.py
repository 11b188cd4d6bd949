"""Reinforcement learning (GRPO / DAPO): sampler, advantages, policy loss, rewards."""

"""Tool calls of the demo tasks: half for a well-formed <tool_call> naming a known tool, half for the
exact call. No JAX import (it runs in the reward worker processes)."""
from __future__ import annotations

from granite_jax.data.demo_chat import check


def tool_call_reward(prompt: str, response: str, reference) -> float:
  fmt, ok = check("tool", response, str(reference))
  return 0.5 * fmt + 0.5 * ok

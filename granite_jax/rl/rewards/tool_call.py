"""Tool calls of the demo tasks: half for a well-formed <tool_call> naming a known tool, half for the
exact call. Same scoring as rl/tasks.py `tool_call_reward`, without importing JAX (worker processes)."""
from __future__ import annotations

import json
import re

from granite_jax.data.demo_chat import TOOLS

_CALL = re.compile(r"^<tool_call>\s*(\{.*\})\s*</tool_call>$", re.S)


def tool_call_reward(prompt: str, response: str, reference) -> float:
  m = _CALL.match(response)
  if not m:
    return 0.0
  try:
    call = json.loads(m.group(1))
  except ValueError:
    return 0.0
  ok = isinstance(call, dict) and call.get("name") in {t["name"] for t in TOOLS}
  return 0.5 * ok + 0.5 * (ok and json.dumps(call, sort_keys=True) == str(reference))

"""Schema validation: message fields, role order, non-empty assistant turns, tool calls.

Valid order: an optional system turn first, then user -> assistant, where an
assistant turn with tool_calls is followed by one or more tool turns and then
an assistant turn; a conversation ends with an assistant turn that has content.
Tool calls are {"name", "arguments"} (OpenAI's {"function": {...}} form and
JSON-string arguments are accepted and rewritten to that form, a recorded fix);
the name must be in the sample's `tools` and the arguments must validate
against that tool's `parameters` JSON schema.
"""
from __future__ import annotations

import json
from typing import Any

import jsonschema

ROLES = ("system", "user", "assistant", "tool")
# Role -> roles that may follow it ("assistant+calls" is an assistant turn with tool_calls).
_NEXT = {"start": {"system", "user"}, "system": {"user"}, "user": {"assistant"},
         "assistant": {"user"}, "assistant+calls": {"tool"}, "tool": {"tool", "assistant"}}

_validators: dict[str, Any] = {}  # schema JSON -> validator; samples share a few tool schemas


class SchemaError(Exception):
  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason, self.detail = reason, detail


def _validator(schema: Any, where: str):
  key = json.dumps(schema, sort_keys=True)
  v = _validators.get(key)
  if v is None:
    try:
      cls = jsonschema.validators.validator_for(schema)
      cls.check_schema(schema)
    except jsonschema.SchemaError as e:
      raise SchemaError("invalid_tool_schema", f"{where}: {e.message}") from None
    v = _validators[key] = cls(schema)
  return v


def _canonical_call(call: Any, where: str) -> tuple[dict, bool]:
  """Returns ({"name", "arguments": dict}, changed)."""
  if not isinstance(call, dict):
    raise SchemaError("bad_tool_call", f"{where} must be an object")
  changed = False
  if "function" in call and isinstance(call["function"], dict):
    call, changed = call["function"], True
  name, args = call.get("name"), call.get("arguments", {})
  if not isinstance(name, str) or not name:
    raise SchemaError("bad_tool_call", f"{where}.name must be a non-empty string")
  if isinstance(args, str):
    try:
      args, changed = json.loads(args) if args.strip() else {}, True
    except json.JSONDecodeError as e:
      raise SchemaError("bad_tool_call", f"{where}.arguments is not valid JSON ({e.msg})") from None
  if not isinstance(args, dict):
    raise SchemaError("bad_tool_call", f"{where}.arguments must be an object")
  return {**call, "name": name, "arguments": args}, changed


def _tools(sample: dict) -> dict[str, dict]:
  tools = sample.get("tools") or []
  if not isinstance(tools, list):
    raise SchemaError("bad_tools", "field 'tools' must be a list")
  out = {}
  for i, tool in enumerate(tools):
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
      tool = tool["function"]  # OpenAI {"type": "function", "function": {...}}
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
      raise SchemaError("bad_tools", f"tools[{i}] needs a string 'name'")
    out[tool["name"]] = tool
  return out


def validate_sample(sample: dict, min_assistant_chars: int = 1) -> list[dict]:
  """Raises SchemaError on the first problem; returns the format fixes applied in place."""
  fixes, tools, state = [], _tools(sample), "start"
  messages = sample["messages"]
  for i, msg in enumerate(messages):
    where = f"messages[{i}]"
    if not isinstance(msg, dict) or msg.get("role") not in ROLES:
      role = msg.get("role") if isinstance(msg, dict) else msg
      raise SchemaError("bad_role", f"{where}.role={role!r} is not one of {ROLES}")
    role, content = msg["role"], msg.get("content")
    if content is None and role == "assistant" and msg.get("tool_calls"):
      content = msg["content"] = ""
    if not isinstance(content, str):
      raise SchemaError("bad_content", f"{where}.content must be a string")
    if role not in _NEXT[state]:
      prev = messages[i - 1]["role"] if i else "start"
      raise SchemaError("role_order", f"{where}: {role!r} may not follow {prev!r}")
    calls = msg.get("tool_calls") or []
    if role == "assistant" and not calls and len(content.strip()) < min_assistant_chars:
      raise SchemaError("empty_assistant", f"{where}: assistant content has {len(content.strip())} "
                        f"chars (< min_assistant_chars={min_assistant_chars})")
    if calls:
      if role != "assistant" or not isinstance(calls, list):
        raise SchemaError("bad_tool_call", f"{where}.tool_calls must be a list on an assistant turn")
      for j, call in enumerate(calls):
        call, changed = _canonical_call(call, f"{where}.tool_calls[{j}]")
        if changed:
          calls[j] = call
          fixes.append(dict(fix="tool_call_format", field=f"{where}.tool_calls[{j}]"))
        tool = tools.get(call["name"])
        if tool is None:
          raise SchemaError("unknown_tool", f"{where}.tool_calls[{j}] calls {call['name']!r}, not in "
                            f"the sample's tools {sorted(tools)}")
        validator = _validator(tool.get("parameters") or {"type": "object"}, f"tool {call['name']!r}")
        error = jsonschema.exceptions.best_match(validator.iter_errors(call["arguments"]))
        if error is not None:
          path = "".join(f"[{p!r}]" for p in error.absolute_path) or "(root)"
          raise SchemaError("tool_args_schema", f"{where}.tool_calls[{j}] {call['name']!r} arguments"
                            f"{path}: {error.message}")
    state = "assistant+calls" if calls else role
  if state != "assistant":
    raise SchemaError("role_order", f"conversation must end with an assistant turn with content, "
                      f"ends with {messages[-1].get('role')!r}" + (" tool call" if state == "assistant+calls" else ""))
  return fixes

"""The Granite 4.x chat format: rendering, Jinja templates and the SFT loss mask.

Each turn is `<|start_of_role|>{role}<|end_of_role|>{content}<|end_of_text|>`
plus a newline. Tools go in the system turn inside <tools></tools>, documents
inside <documents></documents>, assistant tool calls inside
<tool_call></tool_call>, and tool results come back as one user turn of
<tool_response></tool_response> blocks. `render` is the Python renderer;
`GRANITE_CHAT_TEMPLATE` is the same format as Jinja (exported into
tokenizer_config.json); `render_jinja` renders any tokenizer_config template
the way transformers' `apply_chat_template` does. `encode_chat` returns token
ids plus the loss mask SFT trains on: assistant content and its
<|end_of_text|> are trainable, everything else is masked.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

START, END_ROLE, EOT = "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"
GENERATION_PROMPT = f"{START}assistant{END_ROLE}"
TOOLS_PREFIX = ("You are a helpful assistant with access to the following tools. You may call one or more "
                "tools to assist with the user query.\n\nYou are provided with function signatures within "
                "<tools></tools> XML tags:\n<tools>")
TOOLS_SUFFIX = ("\n</tools>\n\nFor each tool call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                "\"arguments\": <args-json-object>}\n</tool_call>. If a tool does not exist in the provided "
                "list of tools, notify the user that you do not have the ability to fulfill the request.")
DOCS_PREFIX = ("You are a helpful assistant with access to the following documents. You may use one or more "
               "documents to assist with the user query.\n\nYou are given a list of documents within "
               "<documents></documents> XML tags:\n<documents>")
DOCS_SUFFIX = ("\n</documents>\n\nWrite the response to the user's input by strictly aligning with the facts "
               "in the provided documents. If the information needed to answer the question is not "
               "available in the documents, inform the user that the question cannot be answered based on "
               "the available data.")

Segment = tuple[str, bool]  # text, trainable


def _json(x: Any) -> str:
  return json.dumps(x, ensure_ascii=False)


def _content(m: dict[str, Any]) -> str:
  c = m.get("content")
  if c is None:
    return ""
  if isinstance(c, str):
    return c
  return "".join(part.get("text", "") for part in c if part.get("type") == "text")


def _tool_call(call: dict[str, Any]) -> str:
  f = call.get("function", call)
  args = f.get("arguments", {})
  return f'<tool_call>\n{{"name": "{f["name"]}", "arguments": {args if isinstance(args, str) else _json(args)}}}\n</tool_call>'


def segments(messages: Sequence[dict[str, Any]], tools: Sequence[dict] | None = None,
             documents: Sequence[dict] | None = None, add_generation_prompt: bool = False) -> list[Segment]:
  """The rendered conversation as (text, trainable) pieces."""
  extra = [TOOLS_PREFIX + "".join("\n" + _json(t) for t in tools) + TOOLS_SUFFIX] if tools else []
  extra += [DOCS_PREFIX + "".join("\n" + _json(d) for d in documents) + DOCS_SUFFIX] if documents else []
  has_system = bool(messages) and messages[0]["role"] == "system"
  system = "\n\n".join(([_content(messages[0])] if has_system else []) + extra)
  out: list[Segment] = []
  if system:
    out.append((f"{START}system{END_ROLE}{system}{EOT}\n", False))
  for i, m in enumerate(messages):
    role = m["role"]
    if role == "user" or (role == "system" and i > 0):
      out.append((f"{START}{role}{END_ROLE}{_content(m)}{EOT}\n", False))
    elif role == "assistant":
      text = _content(m)
      for j, call in enumerate(m.get("tool_calls") or []):
        text += ("\n" if j > 0 or text else "") + _tool_call(call)
      out += [(f"{START}assistant{END_ROLE}", False), (text + EOT, True), ("\n", False)]
    elif role == "tool":
      first = i == 0 or messages[i - 1]["role"] != "tool"
      last = i == len(messages) - 1 or messages[i + 1]["role"] != "tool"
      out.append(((f"{START}user{END_ROLE}" if first else "") +
                  f"\n<tool_response>\n{_content(m)}\n</tool_response>" + (f"{EOT}\n" if last else ""), False))
    elif role != "system":
      raise ValueError(f"message {i}: unknown role {role!r} (system, user, assistant or tool)")
  if add_generation_prompt:
    out.append((GENERATION_PROMPT, False))
  return out


def render(messages, tools=None, documents=None, add_generation_prompt=False) -> str:
  return "".join(t for t, _ in segments(messages, tools, documents, add_generation_prompt))


GRANITE_CHAT_TEMPLATE = (
    "{%- set ns = namespace(extra=[], s='') %}"
    "{%- if tools %}{%- set ns.s = " + _json(TOOLS_PREFIX) + " %}"
    "{%- for t in tools %}{%- set ns.s = ns.s + '\\n' + (t | tojson) %}{%- endfor %}"
    "{%- set ns.extra = ns.extra + [ns.s + " + _json(TOOLS_SUFFIX) + "] %}{%- endif %}"
    "{%- if documents %}{%- set ns.s = " + _json(DOCS_PREFIX) + " %}"
    "{%- for d in documents %}{%- set ns.s = ns.s + '\\n' + (d | tojson) %}{%- endfor %}"
    "{%- set ns.extra = ns.extra + [ns.s + " + _json(DOCS_SUFFIX) + "] %}{%- endif %}"
    "{%- macro text(m) %}{%- if m.content is string %}{{- m.content }}{%- elif m.content %}"
    "{%- for p in m.content %}{%- if p.type == 'text' %}{{- p.text }}{%- endif %}{%- endfor %}"
    "{%- endif %}{%- endmacro %}"
    "{%- if messages and messages[0].role == 'system' %}{%- set ns.extra = [text(messages[0])] + ns.extra %}"
    "{%- endif %}"
    "{%- if ns.extra %}{{- '<|start_of_role|>system<|end_of_role|>' + ns.extra | join('\\n\\n') + "
    "'<|end_of_text|>\\n' }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or (m.role == 'system' and not loop.first) %}"
    "{{- '<|start_of_role|>' + m.role + '<|end_of_role|>' + text(m) + '<|end_of_text|>\\n' }}"
    "{%- elif m.role == 'assistant' %}{%- set c = text(m) %}"
    "{{- '<|start_of_role|>assistant<|end_of_role|>' + c }}"
    "{%- for call in (m.tool_calls or []) %}{%- if not loop.first or c %}{{- '\\n' }}{%- endif %}"
    "{%- set f = call.function if call.function is defined else call %}"
    "{{- '<tool_call>\\n{\"name\": \"' + f.name + '\", \"arguments\": ' }}"
    "{%- if f.arguments is string %}{{- f.arguments }}{%- else %}{{- (f.arguments or {}) | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}{%- endfor %}"
    "{{- '<|end_of_text|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|start_of_role|>user<|end_of_role|>' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + text(m) + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|end_of_text|>\\n' }}{%- endif %}"
    "{%- elif m.role != 'system' %}{{- raise_exception('unknown role ' + m.role) }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
)


def render_jinja(template: str, messages, tools=None, documents=None, add_generation_prompt=False,
                 **kwargs: Any) -> str:
  """Renders a tokenizer_config.json chat template as transformers' apply_chat_template does."""
  import jinja2
  import jinja2.ext
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[jinja2.ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals.update(raise_exception=raise_exception,
                     strftime_now=lambda fmt: datetime.now().strftime(fmt))
  return env.from_string(template).render(messages=list(messages), tools=tools, documents=documents,
                                          add_generation_prompt=add_generation_prompt, **kwargs)


@dataclasses.dataclass
class ChatTokenizer:
  """A tokenizer.json plus its tokenizer_config.json (chat template, special tokens by name)."""
  tokenizer: Any
  config: dict[str, Any]

  @property
  def chat_template(self) -> str | None:
    t = self.config.get("chat_template")
    if isinstance(t, list):  # [{"name": "default", "template": ...}, ...]
      t = next((x["template"] for x in t if x.get("name") == "default"), None)
    return t

  def special_token(self, name: str) -> str | None:
    """`name` like "eos_token" -> its string, from tokenizer_config.json."""
    v = self.config.get(name)
    return v.get("content") if isinstance(v, dict) else v

  def token_id(self, token: str) -> int:
    tid = self.tokenizer.token_to_id(token)
    if tid is None:
      raise KeyError(f"tokenizer has no token {token!r}")
    return tid

  def render(self, messages, tools=None, documents=None, add_generation_prompt=False) -> str:
    """With the folder's Jinja template when it has one, else the built-in Granite format."""
    if self.chat_template is None:
      return render(messages, tools, documents, add_generation_prompt)
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    specials = {n: self.special_token(n) for n in names if self.special_token(n) is not None}
    return render_jinja(self.chat_template, messages, tools, documents, add_generation_prompt, **specials)


def load_chat_tokenizer(path: str) -> ChatTokenizer:
  """A folder with tokenizer.json (+ tokenizer_config.json), or a tokenizer.json file."""
  import tokenizers
  path = os.path.expanduser(path)
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise FileNotFoundError(f"tokenizer {path!r}: no tokenizer.json")
  config: dict[str, Any] = {}
  cfg_file = os.path.join(folder, "tokenizer_config.json")
  if os.path.isfile(cfg_file):
    with open(cfg_file) as f:
      config = json.load(f)
  return ChatTokenizer(tokenizers.Tokenizer.from_file(file), config)


def encode_chat(tokenizer: Any, messages, tools=None, documents=None,
                add_generation_prompt=False) -> tuple[np.ndarray, np.ndarray]:
  """(token ids int32 [T], loss mask bool [T]) in the Granite format.

  The whole text is tokenized once (so ids equal tokenizing the rendered
  string); a token is trainable when it starts inside a trainable segment.
  Segment edges sit next to special tokens, so no token straddles one.
  """
  tok = tokenizer.tokenizer if isinstance(tokenizer, ChatTokenizer) else tokenizer
  segs = segments(messages, tools, documents, add_generation_prompt)
  text = "".join(t for t, _ in segs)
  char_mask = np.zeros(len(text) + 1, bool)
  pos = 0
  for t, trainable in segs:
    char_mask[pos:pos + len(t)] = trainable
    pos += len(t)
  enc = tok.encode(text, add_special_tokens=False)
  starts = np.array([s for s, _ in enc.offsets], np.int64).reshape(-1)
  return np.asarray(enc.ids, np.int32), char_mask[starts]

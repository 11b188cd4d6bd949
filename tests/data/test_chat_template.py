"""Granite chat format: exact rendering, parity with transformers' apply_chat_template, loss mask."""
import json

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from granite_jax.data import chat_template as ct
from granite_jax.data.tokenizer import SPECIAL_TOKENS

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
DOCS = [{"doc_id": 1, "title": "Zürich", "text": "Zürich has a lake."}]
CONVERSATIONS = {
    "plain": dict(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]),
    "system_gen_prompt": dict(messages=[{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "2+2?"}], add_generation_prompt=True),
    "tools": dict(tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "content": "18C"}, {"role": "tool", "content": "24C"},
        {"role": "assistant", "content": "Paris 18C, Rome 24C."}]),
    "tools_system_docs": dict(tools=TOOLS, documents=DOCS, messages=[
        {"role": "system", "content": "Sys."}, {"role": "user", "content": [{"type": "text", "text": "Lake?"}]},
        {"role": "assistant", "content": "Yes.", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
        {"role": "tool", "content": "9C"}, {"role": "system", "content": "late system"}],
        add_generation_prompt=True),
    "documents": dict(documents=DOCS, messages=[{"role": "user", "content": "Lake?"}]),
}
# A template unlike Granite's (ChatML-ish, bos token, tojson with indent) for the generic Jinja path.
TEST_TEMPLATE = (
    "{{ bos_token }}{% if tools %}TOOLS {{ tools | tojson(indent=1) }}\n{% endif %}"
    "{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %} CALL {{ c.function | tojson }}{% endfor %}{% endif %}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}")


@pytest.fixture(scope="module")
def tok():
  t = tokenizers.Tokenizer(models.BPE())
  t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  t.decoder = decoders.ByteLevel()
  text = [json.dumps(CONVERSATIONS), ct.TOOLS_PREFIX, ct.DOCS_PREFIX] * 20
  t.train_from_iterator(text, trainers.BpeTrainer(
      vocab_size=600, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return t


def _hf_folder(tok, tmp_path, template):
  from granite_jax.ckpt import hf_tokenizer
  hf_tokenizer.write(tok, str(tmp_path), 128)
  cfg_file = tmp_path / "tokenizer_config.json"
  cfg = json.loads(cfg_file.read_text())
  cfg["chat_template"] = template
  cfg_file.write_text(json.dumps(cfg))
  return str(tmp_path)


def test_turn_format_exact():
  text = ct.render(**CONVERSATIONS["plain"])
  assert text == ("<|start_of_role|>user<|end_of_role|>Hi<|end_of_text|>\n"
                  "<|start_of_role|>assistant<|end_of_role|>Hello!<|end_of_text|>\n")
  assert ct.render(**CONVERSATIONS["system_gen_prompt"]).endswith(
      "2+2?<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>")
  tools = ct.render(**CONVERSATIONS["tools"])
  assert tools.startswith("<|start_of_role|>system<|end_of_role|>" + ct.TOOLS_PREFIX + "\n{\"type\": \"function\"")
  assert ('<|start_of_role|>assistant<|end_of_role|><tool_call>\n{"name": "get_weather", "arguments": '
          '{"city": "Paris"}}\n</tool_call>\n<tool_call>') in tools
  assert ("<|start_of_role|>user<|end_of_role|>\n<tool_response>\n18C\n</tool_response>\n<tool_response>\n"
          "24C\n</tool_response><|end_of_text|>\n") in tools


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_granite_template_matches_transformers(tok, tmp_path, name):
  transformers = pytest.importorskip("transformers")
  hf_tok = transformers.AutoTokenizer.from_pretrained(_hf_folder(tok, tmp_path, ct.GRANITE_CHAT_TEMPLATE))
  conv = CONVERSATIONS[name]
  want = hf_tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), documents=conv.get("documents"),
                                    add_generation_prompt=conv.get("add_generation_prompt", False), tokenize=False)
  assert ct.render(**conv) == want
  assert ct.load_chat_tokenizer(str(tmp_path)).render(**conv) == want  # the Jinja path, same template


@pytest.mark.parametrize("name", ["tools", "system_gen_prompt"])
def test_custom_jinja_template_matches_transformers(tok, tmp_path, name):
  transformers = pytest.importorskip("transformers")
  folder = _hf_folder(tok, tmp_path, TEST_TEMPLATE)
  conv = CONVERSATIONS[name]
  want = transformers.AutoTokenizer.from_pretrained(folder).apply_chat_template(
      conv["messages"], tools=conv.get("tools"), add_generation_prompt=conv.get("add_generation_prompt", False),
      tokenize=False)
  chat = ct.load_chat_tokenizer(folder)
  got = chat.render(conv["messages"], tools=conv.get("tools"),
                    add_generation_prompt=conv.get("add_generation_prompt", False))
  assert got == want and got.startswith("<|end_of_text|>") and "[USER]" in got
  assert chat.token_id(chat.special_token("pad_token")) == SPECIAL_TOKENS.index("<|pad|>")


def test_loss_mask_covers_assistant_content_and_eot(tok):
  conv = CONVERSATIONS["tools"]
  ids, mask = ct.encode_chat(tok, conv["messages"], tools=conv["tools"])
  assert ids.tolist() == tok.encode(ct.render(**conv), add_special_tokens=False).ids
  assert mask.dtype == bool and mask.shape == ids.shape
  trained = tok.decode(ids[mask].tolist(), skip_special_tokens=False)
  calls = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
           '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
  assert trained == calls + "<|end_of_text|>" + "Paris 18C, Rome 24C.<|end_of_text|>"
  eot = tok.token_to_id("<|end_of_text|>")
  role = tok.token_to_id("<|start_of_role|>")
  assert not mask[ids == role].any()
  assert mask[ids == eot].sum() == 2 and (ids == eot).sum() > 2  # user/system/tool EOTs stay masked


def test_unknown_role_is_a_clear_error():
  with pytest.raises(ValueError, match="message 0: unknown role 'bot'"):
    ct.render([{"role": "bot", "content": "x"}])

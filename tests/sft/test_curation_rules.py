"""Rule stage: normalization fixes, schema checks, length/truncation, leakage, malformed lines."""
import json

import pytest

from granite_jax.sft.curation.config import CurationConfig
from granite_jax.sft.curation.leakage import LeakageIndex
from granite_jax.sft.curation.normalize import normalize_text
from granite_jax.sft.curation.records import parse_line
from granite_jax.sft.curation.rules import RuleStage

TOOL = {"name": "add", "description": "adds", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"]}}


def chat(*turns, **extra):
  return dict(messages=[dict(role=r, content=c) for r, c in turns], **extra)


def run(sample, eval_texts=(), **cfg):
  rec = parse_line(json.dumps(sample), 0)
  RuleStage(CurationConfig(**cfg).validate(), eval_texts=list(eval_texts))(rec)
  return rec


def reason(rec):
  return rec.reasons[0].split(":")[0] if rec.reasons else None


def tool_sample(call):
  return dict(tools=[TOOL], messages=[
      dict(role="user", content="2+3?"), dict(role="assistant", content="", tool_calls=[call]),
      dict(role="tool", content="5"), dict(role="assistant", content="5")])


def test_normalize_text_fixes_are_named_and_idempotent():
  text, changes = normalize_text("  Cafe\u0301\x00 ok  \r\n\r\n\r\n\r\nnext\u200b  ")
  assert text == "Caf\u00e9 ok\n\nnext"
  assert changes == ["nfc", "crlf", "control_chars", "whitespace"]
  assert normalize_text(text) == (text, [])
  assert normalize_text("def f():\n    return 1")[1] == []  # indentation is kept


def test_clean_sample_passes_and_fix_is_recorded():
  rec = run(chat(("user", "hi\x07 "), ("assistant", "hello  \n\n\n\nthere")))
  assert rec.alive and rec.reasons == []
  assert rec.sample["messages"][1]["content"] == "hello\n\nthere"
  assert {f["field"] for f in rec.fixes} == {"messages[0].content", "messages[1].content"}
  assert rec.sample["id"] == 0  # a sample without an id gets its line index


@pytest.mark.parametrize("sample,why", [
    (chat(("assistant", "hi"), ("user", "yo")), "role_order"),
    (chat(("user", "a"), ("user", "b"), ("assistant", "c")), "role_order"),
    (chat(("user", "a"), ("assistant", "b"), ("system", "c"), ("user", "d"), ("assistant", "e")),
     "role_order"),
    (chat(("user", "a")), "role_order"),
    (chat(("user", "a"), ("assistant", " \x00 ")), "empty_assistant"),
    (chat(("user", "a"), ("wizard", "b")), "bad_role"),
    (dict(messages=[dict(role="user", content=3), dict(role="assistant", content="b")]), "bad_content"),
    (tool_sample({"name": "sub", "arguments": {"a": 1, "b": 2}}), "unknown_tool"),
    (tool_sample({"name": "add", "arguments": {"a": 1}}), "tool_args_schema"),
    (tool_sample({"name": "add", "arguments": {"a": "1", "b": 2}}), "tool_args_schema"),
    (tool_sample({"name": "add", "arguments": "{not json"}), "bad_tool_call"),
])
def test_schema_rejections(sample, why):
  rec = run(sample)
  assert rec.bucket == "rejected" and reason(rec) == why, rec.reasons


def test_tool_call_ok_and_openai_form_is_canonicalised():
  rec = run(tool_sample({"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}))
  assert rec.alive, rec.reasons
  assert rec.sample["messages"][1]["tool_calls"][0] == {"name": "add", "arguments": {"a": 2, "b": 3}}
  assert rec.fixes == [{"fix": "tool_call_format", "field": "messages[1].tool_calls[0]"}]
  rec = run(tool_sample({"name": "add", "arguments": {"a": 1, "b": 2}}) | {"tools": [
      {**TOOL, "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}]})
  assert reason(rec) == "invalid_tool_schema"


def test_length_truncates_at_turn_boundary_or_rejects():
  long = " ".join(["word"] * 100)
  rec = run(chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", long)), max_tokens=50)
  assert rec.alive and len(rec.sample["messages"]) == 2
  assert rec.fixes[-1]["fix"] == "truncate" and rec.fixes[-1]["dropped_messages"] == 2
  rec = run(chat(("user", "q"), ("assistant", long)), max_tokens=50)
  assert rec.bucket == "rejected" and reason(rec) == "too_long"
  rec = run(chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", long)), max_tokens=50,
            truncate=False)
  assert reason(rec) == "too_long"


def test_demo_tokenizer_counts(demo_cache_dir):
  from granite_jax.sft.curation.length import TokenCounter
  counter = TokenCounter("demo", demo_cache_dir)
  n = counter.count(["hello world, this is a test"])[0]
  assert 3 <= n <= 20 and counter.name == "demo"


def test_leakage_containment_and_threshold():
  ev = "the quick brown fox jumps over the lazy dog near the river bank today"
  idx = LeakageIndex([ev, "tiny"], n=5, threshold=0.5)
  assert idx.score("Please answer: " + ev + " thanks")[0] == 1.0
  assert idx.score("the quick brown fox jumps over a cat")[0] < 0.5
  assert idx.score("a tiny thing") == (1.0, 1)  # short eval texts match verbatim
  rec = run(chat(("user", f"Q: {ev.upper()}?"), ("assistant", "ok")), eval_texts=[ev], leakage_n=5)
  assert rec.bucket == "rejected" and reason(rec) == "leakage"
  assert run(chat(("user", "Something else entirely"), ("assistant", "ok")), eval_texts=[ev]).alive


@pytest.mark.parametrize("line,why", [("{not json", "malformed_json"), ("[1, 2]", "malformed_json"),
                                      ('{"id": 1, "messages": []}', "missing_messages"),
                                      ('{"text": "x"}', "missing_messages")])
def test_malformed_lines_are_rejected_not_raised(line, why):
  rec = parse_line(line, 7)
  assert rec.bucket == "rejected" and reason(rec) == why and rec.raw == line
  assert "line 8" in rec.reasons[0]


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="max_tokens"):
    CurationConfig(max_tokens=0).validate()
  with pytest.raises(ValueError, match="weights"):
    CurationConfig(weights={"charm": 1.0}).validate()
  with pytest.raises(ValueError, match="judge_url"):
    CurationConfig(judge="openai").validate()
  with pytest.raises(ValueError, match="accept_threshold"):
    CurationConfig(accept_threshold=4.0, borderline_threshold=6.0).validate()

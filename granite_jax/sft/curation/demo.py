"""A demo dataset with planted defects, and a scripted judge for it.

  python -m granite_jax.sft.curation.demo OUT_DIR   # writes demo files, curates them against
                                                    # the fake judge, checks every planted defect

`write_demo(dir)` writes demo.jsonl and eval_texts.txt; EXPECTED maps each
sample id (line index for lines without one) to its (bucket, reason).
`demo_judge_reply` is the judge's script: it recognises the judge cases by
their content, and gives every other sample high scores.
"""
from __future__ import annotations

import json
import os
import sys

from granite_jax.sft.curation.config import DIMENSIONS
from granite_jax.sft.curation.fake_judge import reply_json

EVAL_TEXT = ("A train leaves Lisbon at nine in the morning travelling at eighty kilometres per hour "
             "while a second train leaves Porto at ten travelling at one hundred kilometres per hour; "
             "at what time do they meet if the cities are three hundred kilometres apart?")
_WEATHER_TOOL = {"name": "get_weather", "description": "Current weather for a city",
                 "parameters": {"type": "object", "properties": {
                     "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                     "required": ["city"], "additionalProperties": False}}
_PHOTOSYNTHESIS = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light into "
    "chemical energy. In the chloroplasts, chlorophyll absorbs mostly red and blue light. The light "
    "reactions split water, release oxygen and produce ATP and NADPH. The Calvin cycle then uses that "
    "ATP and NADPH to fix carbon dioxide from the air into three-carbon sugars, which the plant builds "
    "into glucose, sucrose and starch. Because it removes carbon dioxide and releases oxygen, "
    "photosynthesis underpins almost every food chain on Earth and shaped the composition of the "
    "atmosphere over billions of years. Its rate depends on light intensity, temperature and the "
    "concentration of carbon dioxide, and it slows when any one of them becomes limiting.")
_LONG_ANSWER = " ".join(f"Step {i}: keep going through the list carefully." for i in range(700))


def _chat(user: str, answer: str, system: str | None = None) -> list[dict]:
  head = [dict(role="system", content=system)] if system else []
  return head + [dict(role="user", content=user), dict(role="assistant", content=answer)]


def _tool_sample(sid: str, call: dict) -> dict:
  return dict(id=sid, tools=[_WEATHER_TOOL], messages=[
      dict(role="user", content="What's the weather in Oslo right now?"),
      dict(role="assistant", content="", tool_calls=[call]),
      dict(role="tool", content='{"temp": 3, "unit": "celsius", "sky": "overcast"}'),
      dict(role="assistant", content="It is 3 °C and overcast in Oslo.")])


def demo_samples() -> list[dict | str]:
  """The demo lines in order; a str is written verbatim (the malformed lines)."""
  return [
      dict(id="clean", messages=_chat("How do I reverse a list in Python?",
                                      "Use `xs.reverse()` to reverse in place, or `xs[::-1]` for a "
                                      "reversed copy.")),
      dict(id="fix_whitespace", messages=_chat(
          "Name three   primary colours.\x07\r\n\r\n\r\n\r\n",
          "  Red, yellow and blue \x00are the traditional primary colours.\u200b   \n\n\n\nIn light "
          "(RGB) they are red, green and blue.  ")),
      dict(id="wrong_role_order", messages=[dict(role="assistant", content="Hello! How can I help?"),
                                            dict(role="user", content="Tell me a joke.")]),
      dict(id="empty_assistant", messages=_chat("What is the capital of Peru?", "   ")),
      _tool_sample("unknown_tool", {"name": "get_forecast", "arguments": {"city": "Oslo"}}),
      _tool_sample("tool_args_invalid", {"name": "get_weather", "arguments": {"city": "Oslo",
                                                                             "unit": "kelvin"}}),
      _tool_sample("tool_ok", {"name": "get_weather", "arguments": '{"city": "Oslo"}'}),
      dict(id="leaked_eval", messages=_chat(f"Solve this: {EVAL_TEXT}",
                                            "They meet at about 11:17, about 1.9 hours after nine.")),
      dict(id="exact_duplicate", messages=_chat("How do I reverse a list in   python?",
                                                "Use `xs.reverse()` to reverse in place, or `xs[::-1]` "
                                                "for a reversed copy.")),
      dict(id="photosynthesis", messages=_chat("Explain photosynthesis.", _PHOTOSYNTHESIS)),
      dict(id="near_duplicate", messages=_chat("Explain photosynthesis.",
                                               _PHOTOSYNTHESIS.replace("billions", "millions"))),
      dict(id="over_long", messages=_chat("List the steps.", _LONG_ANSWER)),
      dict(id="truncated_ok", messages=_chat("Give me a fun fact about octopuses.",
                                             "Octopuses have three hearts and blue blood.") + [
          dict(role="user", content="List the steps again."),
          dict(role="assistant", content=_LONG_ANSWER)]),
      dict(id="judge_hallucination", messages=_chat(
          "When was the Eiffel Tower built?",
          "The Eiffel Tower was built in 1650 by Leonardo da Vinci for the coronation of Louis XIV.")),
      dict(id="judge_borderline", messages=_chat("Summarise the causes of the First World War.",
                                                 "Alliances, militarism and nationalism, mostly.")),
      dict(id="judge_malformed", messages=_chat("Write a haiku about autumn rain.",
                                                "Cold rain on the eaves / maple leaves drown in the "
                                                "gutter / the kettle whistles")),
      dict(id="rag_ok", documents=[dict(title="Handbook", text="Staff get 25 days of paid leave "
                                                               "per year, plus public holidays.")],
           messages=_chat("How many days of paid leave do I get?",
                          "25 days per year, plus public holidays (Handbook).")),
      dict(id="multilingual_ok", language="es", messages=_chat("¿Cuál es la montaña más alta de España?",
                                                "El Teide, en Tenerife, con 3.715 metros.")),
      '{"id": "broken_json", "messages": [',
      json.dumps({"id": "no_messages", "prompt": "hi", "completion": "hello"}),
  ]


# id -> (bucket, reason code); the malformed line has no readable id: its line index (18).
EXPECTED = {
    "clean": ("accepted", ""), "fix_whitespace": ("accepted", ""),
    "wrong_role_order": ("rejected", "role_order"), "empty_assistant": ("rejected", "empty_assistant"),
    "unknown_tool": ("rejected", "unknown_tool"), "tool_args_invalid": ("rejected", "tool_args_schema"),
    "tool_ok": ("accepted", ""), "leaked_eval": ("rejected", "leakage"),
    "exact_duplicate": ("rejected", "duplicate_exact"), "photosynthesis": ("accepted", ""),
    "near_duplicate": ("rejected", "duplicate_near"), "over_long": ("rejected", "too_long"),
    "truncated_ok": ("accepted", ""), "judge_hallucination": ("rejected", "judge_hard_reject"),
    "judge_borderline": ("borderline", "judge_borderline"),
    "judge_malformed": ("borderline", "judge_failure"), "rag_ok": ("accepted", ""),
    "multilingual_ok": ("accepted", ""), 18: ("rejected", "malformed_json"),
    "no_messages": ("rejected", "missing_messages"),
}
DEMO_MAX_TOKENS = 1024  # the long answer is ~6,300 words: over; the truncated prefix fits


def write_demo(out_dir: str) -> dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  paths = dict(data=os.path.join(out_dir, "demo.jsonl"), eval_texts=os.path.join(out_dir, "eval_texts.txt"))
  with open(paths["data"], "w", encoding="utf-8") as f:
    for s in demo_samples():
      f.write((s if isinstance(s, str) else json.dumps(s, ensure_ascii=False)) + "\n")
  with open(paths["eval_texts"], "w", encoding="utf-8") as f:
    f.write(EVAL_TEXT + "\nWhat is the boiling point of water at sea level in kelvin?\n")
  return paths


def demo_judge_reply(request: dict) -> str:
  prompt = request["messages"][1]["content"]
  good = {d: 9 for d in DIMENSIONS}
  if "1650" in prompt:
    return reply_json(good, ["hallucination"], "Wrong date and builder.")
  if "First World War" in prompt:
    return reply_json({**good, "completeness": 3, "correctness": 6, "instruction_following": 5},
                      rationale="Too thin.")
  if "haiku" in prompt:
    return "Looks great to me! Score: 9/10"
  return reply_json(good)


def check(out_dir: str) -> list[str]:
  """Mismatches between the audit in out_dir and EXPECTED (empty: all planted defects caught)."""
  with open(os.path.join(out_dir, "audit.jsonl")) as f:
    audit = {a["id"]: a for a in map(json.loads, f)}
  problems = []
  for sid, (bucket, reason) in EXPECTED.items():
    a = audit.get(sid)
    got = (a["bucket"], a["reasons"][0].split(":")[0] if a["reasons"] else "") if a else None
    if got != (bucket, reason):
      problems.append(f"{sid!r}: expected {(bucket, reason)}, got {got}")
  return problems


def main(argv: list[str]) -> int:
  from granite_jax.sft import curate
  from granite_jax.sft.curation.fake_judge import FakeJudgeServer
  if len(argv) != 1:
    print("usage: python -m granite_jax.sft.curation.demo OUT_DIR", file=sys.stderr)
    return 2
  paths = write_demo(argv[0])
  with FakeJudgeServer(demo_judge_reply) as server:
    rc = curate.main([paths["data"], os.path.join(argv[0], "curated"), "--judge-url", server.url,
                      "--judge-model", "fake-judge", "--eval-texts", paths["eval_texts"],
                      "--max-tokens", str(DEMO_MAX_TOKENS)])
  problems = check(os.path.join(argv[0], "curated"))
  print("\n".join(problems) or f"all {len(EXPECTED)} planted cases landed in the expected bucket")
  return rc or int(bool(problems))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""LLM-as-judge: strict parsing, retries, thresholds, hard rejects, prompts, bounded concurrency.

The OpenAI-compatible judge talks to a scripted fake server on 127.0.0.1.
"""
import json

import pytest

from granite_jax.sft.curation.config import DIMENSIONS, CurationConfig
from granite_jax.sft.curation.fake_judge import FakeJudgeServer, reply_json
from granite_jax.sft.curation.judges import ModelJudge, OpenAIJudge, make_judge
from granite_jax.sft.curation.pipeline import Curator
from granite_jax.sft.curation.prompts import build_prompt, sample_type
from granite_jax.sft.curation.records import parse_line
from granite_jax.sft.curation.verdict import MalformedReply, decide, parse_reply

SAMPLE = dict(id="s", messages=[dict(role="system", content="Be brief."),
                                dict(role="user", content="What is 2+2?"),
                                dict(role="assistant", content="4")])


def scores(v):
  return {d: v for d in DIMENSIONS}


def test_parse_reply_is_strict():
  assert parse_reply(reply_json(scores(8)), DIMENSIONS)[0] == {d: 8.0 for d in DIMENSIONS}
  assert parse_reply("```json\n" + reply_json(scores(8)) + "\n```", DIMENSIONS)[1] == []
  bad = ["Sure! " + reply_json(scores(8)), "[]", json.dumps({"scores": scores(11)}),
         json.dumps({"scores": {**scores(8), "charm": 5}}), json.dumps({"scores": scores(True)}),
         json.dumps({"scores": {d: 8 for d in DIMENSIONS[1:]}}),
         json.dumps({"scores": scores(8), "flags": ["rude"]}), json.dumps({"scores": scores(8), "flags": "x"})]
  for text in bad:
    with pytest.raises(MalformedReply):
      parse_reply(text, DIMENSIONS)


@pytest.mark.parametrize("value,bucket,reason", [(8, "accepted", ""), (7, "accepted", ""),
                                                 (6, "borderline", "judge_borderline"),
                                                 (5, "borderline", "judge_borderline"),
                                                 (4.9, "rejected", "judge_low_score")])
def test_thresholds(value, bucket, reason):
  with FakeJudgeServer(lambda req: reply_json(scores(value))) as server:
    v = OpenAIJudge(server.url, "m", DIMENSIONS)(SAMPLE)
  assert v.ok and v.attempts == 1
  got = decide(v, CurationConfig(accept_threshold=7.0, borderline_threshold=5.0))
  assert got[:2] == (bucket, reason) and got[3] == value


def test_weights_shape_the_score():
  s = {**scores(9), "correctness": 1}
  cfg = CurationConfig(weights={d: 0.0 for d in DIMENSIONS} | {"correctness": 1.0})
  from granite_jax.sft.curation.verdict import JudgeVerdict
  assert decide(JudgeVerdict(ok=True, scores=s), cfg)[:2] == ("rejected", "judge_low_score")
  # Default weights: 9 - 0.25 * 8 = 7.0, exactly the accept threshold.
  assert decide(JudgeVerdict(ok=True, scores=s), CurationConfig())[::3] == ("accepted", 7.0)


def test_hard_reject_flag_overrides_a_perfect_score():
  with FakeJudgeServer(lambda req: reply_json(scores(10), ["incorrect_computation"])) as server:
    v = OpenAIJudge(server.url, "m", DIMENSIONS)(SAMPLE)
  assert decide(v, CurationConfig())[:3] == ("rejected", "judge_hard_reject", "incorrect_computation")


def test_malformed_reply_is_retried_then_recorded_as_failure():
  replies = iter(["not json", reply_json(scores(9))])
  with FakeJudgeServer(lambda req: next(replies)) as server:
    v = OpenAIJudge(server.url, "m", DIMENSIONS, max_retries=2)(SAMPLE)
    assert v.ok and v.attempts == 2
    # The retry shows the model its bad reply and what was wrong with it.
    assert server.requests[1]["messages"][2] == {"role": "assistant", "content": "not json"}
    assert "invalid" in server.requests[1]["messages"][3]["content"]
  with FakeJudgeServer(lambda req: '{"scores": {}}') as server:
    v = OpenAIJudge(server.url, "m", DIMENSIONS, max_retries=2)(SAMPLE)
    assert len(server.requests) == 3
  assert not v.ok and v.attempts == 3 and "malformed reply" in v.error
  bucket, reason, _, _ = decide(v, CurationConfig())
  assert (bucket, reason) == ("borderline", "judge_failure")
  assert decide(v, CurationConfig(judge_failure_bucket="rejected"))[0] == "rejected"


def test_http_errors_and_unreachable_server_are_failures():
  with FakeJudgeServer(lambda req: None) as server:  # HTTP 500
    v = OpenAIJudge(server.url, "m", DIMENSIONS, max_retries=1)(SAMPLE)
  assert not v.ok and "HTTP 500" in v.error and v.attempts == 2
  v = OpenAIJudge(server.url, "m", DIMENSIONS, max_retries=0, timeout_s=2)(SAMPLE)  # closed now
  assert not v.ok and "request failed" in v.error


def test_request_shape_and_api_key(monkeypatch):
  monkeypatch.setenv("MY_JUDGE_KEY", "sekret")
  seen = []
  with FakeJudgeServer(lambda req: seen.append(req) or reply_json(scores(9))) as server:
    cfg = CurationConfig(judge="openai", judge_url=server.url + "/", judge_model="judge-7b",
                         judge_api_key_env="MY_JUDGE_KEY")
    judge = make_judge(cfg)
    assert judge.url == server.url + "/chat/completions" and judge.api_key == "sekret"
    assert judge(SAMPLE).ok
  assert seen[0]["model"] == "judge-7b" and seen[0]["temperature"] == 0.0


def test_model_judge_with_scripted_generate_text():
  prompts = []
  replies = iter(["garbage", reply_json(scores(9), ["hallucination"])])
  judge = ModelJudge(lambda p: prompts.append(p) or next(replies), DIMENSIONS, max_retries=1)
  v = judge(SAMPLE)
  assert v.ok and v.attempts == 2 and v.flags == ["hallucination"]
  assert prompts[0].endswith("<|start_of_role|>assistant<|end_of_role|>")
  assert "garbage" in prompts[1]
  crash = ModelJudge(lambda p: 1 / 0, DIMENSIONS, max_retries=1)(SAMPLE)
  assert not crash.ok and "division by zero" in crash.error


def test_prompts_judge_only_assistant_turns_and_specialise_by_type():
  system, user = build_prompt(SAMPLE, DIMENSIONS)
  assert "CONTEXT system:\nBe brief." in user and "CONTEXT user:\nWhat is 2+2?" in user
  assert "RESPONSE 1 (assistant, GRADE THIS):\n4" in user and user.count("RESPONSE") == 1
  assert all(d in system for d in DIMENSIONS) and "MULTI-TURN" in system
  rag = {**SAMPLE, "documents": [{"title": "T", "text": "doc body"}]}
  assert sample_type(rag) == "rag" and "CONTEXT document 1 (T):\ndoc body" in build_prompt(rag, DIMENSIONS)[1]
  tool = {**SAMPLE, "tools": [{"name": "calc"}]}
  assert sample_type(tool) == "tool_calling" and "TOOL-CALLING" in build_prompt(tool, DIMENSIONS)[0]
  ml = dict(messages=[dict(role="user", content="Что такое фотосинтез?"),
                      dict(role="assistant", content="Это процесс превращения света в энергию.")])
  assert sample_type(ml) == "multilingual" and "MULTILINGUAL" in build_prompt(ml, DIMENSIONS)[0]
  cfg = CurationConfig(weights={**CurationConfig().weights, "critical_thinking": 0.1})
  assert "critical_thinking" in build_prompt(SAMPLE, cfg.active_dimensions())[0]


def test_judge_pool_is_bounded_and_results_stay_in_order():
  def script(req):
    user = req["messages"][1]["content"]
    return reply_json(scores(9 if "even" in user else 3))
  records = [parse_line(json.dumps(dict(id=i, messages=[
      dict(role="user", content=f"question number {i} {'even' if i % 2 == 0 else 'odd'} " * 3),
      dict(role="assistant", content=f"answer {i} " * (i + 1))])), i) for i in range(12)]
  from concurrent.futures import ThreadPoolExecutor
  with FakeJudgeServer(script, delay_s=0.05) as server:
    cfg = CurationConfig(judge="openai", judge_url=server.url, judge_model="m", concurrency=3,
                         dedup_near_threshold=0.99)
    with ThreadPoolExecutor(cfg.concurrency) as pool:
      Curator(cfg).process(records, pool)
  assert 2 <= server.max_in_flight <= 3
  assert [r.bucket for r in records] == ["accepted" if i % 2 == 0 else "rejected" for i in range(12)]

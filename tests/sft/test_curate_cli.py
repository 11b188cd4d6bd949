"""End to end: the curate CLI on the demo file with planted defects, against the fake judge."""
import json
import os
import subprocess
import sys

import pytest

from granite_jax.sft import curate
from granite_jax.sft.curation import demo
from granite_jax.sft.curation.fake_judge import FakeJudgeServer


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_every_planted_defect_lands_in_its_bucket_with_its_reason(tmp_path, capsys):
  paths = demo.write_demo(str(tmp_path))
  out = str(tmp_path / "out")
  with FakeJudgeServer(demo.demo_judge_reply) as server:
    rc = curate.main([paths["data"], out, "--judge-url", server.url, "--judge-model", "fake",
                      "--eval-texts", paths["eval_texts"], "--max-tokens", str(demo.DEMO_MAX_TOKENS),
                      "--concurrency", "4"])
  assert rc == 0
  assert demo.check(out) == []
  audit = {a["id"]: a for a in _read(os.path.join(out, "audit.jsonl"))}
  assert len(audit) == len(demo.demo_samples())
  # The kept twin is recorded for duplicates; fixes are recorded for fixed samples.
  assert audit["exact_duplicate"]["verdicts"]["dedup"]["kept_twin"] == "clean"
  assert audit["near_duplicate"]["verdicts"]["dedup"]["kept_twin"] == "photosynthesis"
  assert {f["fix"] for f in audit["fix_whitespace"]["fixes"]} == {"normalize"}
  assert audit["truncated_ok"]["fixes"][-1]["fix"] == "truncate"
  assert audit["judge_malformed"]["verdicts"]["judge"]["attempts"] == 3
  assert audit["rag_ok"]["verdicts"]["judge"]["sample_type"] == "rag"
  assert audit["multilingual_ok"]["verdicts"]["judge"]["sample_type"] == "multilingual"
  assert audit["tool_ok"]["verdicts"]["judge"]["sample_type"] == "tool_calling"
  # Bucket files: accepted holds the fixed samples, the others carry their reasons.
  accepted = {s["id"]: s for s in _read(os.path.join(out, "accepted.jsonl"))}
  assert set(accepted) == {k for k, (b, _) in demo.EXPECTED.items() if b == "accepted"}
  assert "\x00" not in json.dumps(accepted["fix_whitespace"])
  assert len(accepted["truncated_ok"]["messages"]) == 2
  rejected = {r["id"]: r for r in _read(os.path.join(out, "rejected.jsonl"))}
  assert rejected[18]["raw"].startswith('{"id": "broken_json"') and rejected[18]["reasons"]
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["buckets"] == {"accepted": 7, "borderline": 2, "rejected": 11}
  assert "accepted 7" in capsys.readouterr().out


def test_without_judge_rule_and_dedup_verdicts_still_hold(tmp_path):
  paths = demo.write_demo(str(tmp_path))
  out = str(tmp_path / "out")
  assert curate.main([paths["data"], out, "--eval-texts", paths["eval_texts"],
                      "--max-tokens", str(demo.DEMO_MAX_TOKENS)]) == 0
  audit = {a["id"]: a for a in _read(os.path.join(out, "audit.jsonl"))}
  for sid, (bucket, reason) in demo.EXPECTED.items():
    if not reason.startswith("judge"):
      assert audit[sid]["bucket"] == bucket, sid
  assert audit["judge_hallucination"]["bucket"] == "accepted"  # no judge: rules only


def test_module_entry_point_and_bad_arguments(tmp_path):
  paths = demo.write_demo(str(tmp_path))
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  r = subprocess.run([sys.executable, "-m", "granite_jax.sft.curate", paths["data"], str(tmp_path / "o"),
                      "--max-tokens", "1024"], capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 0, r.stderr
  assert os.path.exists(tmp_path / "o" / "audit.jsonl")
  r = subprocess.run([sys.executable, "-m", "granite_jax.sft.curate", paths["data"], str(tmp_path / "o"),
                      "--max-tokens", "0"], capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 2 and "max_tokens" in r.stderr
  with pytest.raises(OSError, match="missing.jsonl"):  # the command prints it as one line
    curate.main([str(tmp_path / "missing.jsonl"), str(tmp_path / "o")])

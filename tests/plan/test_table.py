"""plan/table.py `--verify`: stored results are kept while their programs lower the same, else compiled again."""
import jax
import jax.numpy as jnp

import importlib

from granite_jax.plan import dry_run

table = importlib.import_module("granite_jax.plan.table")  # the package exports a function `table`


def _lowered(scale):
  return jax.jit(lambda x: jnp.sin(x) * scale).lower(jnp.ones((4,), jnp.float32))


def test_fingerprint_follows_the_program_not_the_call():
  assert dry_run.fingerprint(_lowered(2.0)) == dry_run.fingerprint(_lowered(2.0))
  assert dry_run.fingerprint(_lowered(2.0)) != dry_run.fingerprint(_lowered(3.0))


def test_stale_stages_are_those_whose_programs_changed(monkeypatch):
  now = {"train": dry_run.fingerprint(_lowered(2.0))}
  calls = []

  def fingerprints(c):
    calls.append((c.name, c.preset))
    return dict(now)

  monkeypatch.setattr(dry_run, "fingerprints", fingerprints)
  monkeypatch.setattr(dry_run, "prepare_devices", lambda n: None)
  row = lambda stage, preset, sha: dict(stage=stage, preset=preset, racks=0, program="train",
                                       lowered_sha=sha, xla=1.0)
  old = [row("phase1", "3b", now["train"]),               # unchanged
         row("phase2", "3b", now["train"]),               # its twin (same programs): lowered once
         row("sft", "3b", dry_run.fingerprint(_lowered(3.0))),  # changed
         row("sft", "8b", None),                          # compiled before fingerprints: unknown
         dict(stage="lce_512k", preset="3b", program="-", error="not part of the recipe")]
  assert table.stale_stages(old) == {("sft", "3b"), ("sft", "8b")}
  assert ("phase1", "3b") in calls and ("phase2", "3b") not in calls


def test_collect_verify_keeps_current_rows_and_drops_stale_ones(monkeypatch, tmp_path):
  import json
  sha = dry_run.fingerprint(_lowered(2.0))
  calls = []
  monkeypatch.setattr(dry_run, "fingerprints", lambda c: calls.append(c.name) or {"train": sha})
  monkeypatch.setattr(dry_run, "prepare_devices", lambda n: None)
  path = tmp_path / "stages.jsonl"
  rows = [dict(stage="phase1", preset="3b", racks=0, program="train", lowered_sha=sha, xla=1.0, planner=1.0),
          dict(stage="sft", preset="3b", racks=0, program="train", lowered_sha="old", xla=2.0, planner=1.0)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = table.collect(["phase1", "sft"], ["3b"], str(path), compile_missing=False, verify=True)
  by_stage = {r["stage"]: r for r in out}
  assert by_stage["phase1"]["xla"] == 1.0                   # kept
  assert "xla" not in by_stage["sft"] and "not run" in by_stage["sft"]["error"]  # stale: to compile
  assert sorted(calls) == ["phase1", "sft"]                 # each stage lowered once


def test_rl_step_section_has_a_row_per_compiled_rl_stage():
  from granite_jax.plan import estimate
  rows = [dict(stage="rl_math", preset="8b", program="train", xla=1.0),
          dict(stage="rl_math", preset="8b", program="logprobs", xla=1.0),
          dict(stage="sft", preset="8b", program="train", xla=1.0),
          dict(stage="rlhf", preset="3b", program="-", error="x")]
  lines = table.rl_step_lines(rows)
  body = [ln for ln in lines if ln.startswith("| rl")]
  assert [ln.split(" | ")[0:2] for ln in body] == [["| rl_math", "8b"]]
  s = estimate.rl_step_of("rl_math", "8b")
  assert f"| {s['total_s']:.1f} |" in body[0]
  assert table.rl_step_lines([rows[2]]) == []

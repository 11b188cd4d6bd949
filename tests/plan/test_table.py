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

"""A size manifest per committed checkpoint step, to catch truncated or missing files.

Orbax commits a step atomically (temp dir + rename), so a save cut short by a
crash is never listed. What it cannot see is later damage: a file truncated
or deleted on disk. After a step commits we record every file's size in
`<dir>/integrity/<step>.json`; before restoring we compare. Reading sizes is
cheap even for an 8B checkpoint; restore errors are the second line of defence.
"""
from __future__ import annotations

import json
import os


def _files(step_dir: str) -> dict[str, int]:
  out = {}
  for root, _, names in os.walk(step_dir):
    for n in names:
      p = os.path.join(root, n)
      out[os.path.relpath(p, step_dir)] = os.path.getsize(p)
  return out


def manifest_path(directory: str, step: int) -> str:
  return os.path.join(directory, "integrity", f"{step}.json")


def write_manifest(directory: str, step: int) -> None:
  path = manifest_path(directory, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_files(os.path.join(directory, str(step))), f)
  os.replace(tmp, path)


def verify(directory: str, step: int) -> str | None:
  """None when the step matches its manifest (or has none yet); else what is wrong."""
  path = manifest_path(directory, step)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    want = json.load(f)
  step_dir = os.path.join(directory, str(step))
  have = _files(step_dir)
  for rel, size in sorted(want.items()):
    if rel not in have:
      return f"missing file {os.path.join(step_dir, rel)}"
    if have[rel] != size:
      return f"file {os.path.join(step_dir, rel)} has {have[rel]} bytes, expected {size}"
  return None


def prune(directory: str, keep_steps: list[int]) -> None:
  d = os.path.join(directory, "integrity")
  if not os.path.isdir(d):
    return
  for n in os.listdir(d):
    if n.endswith(".json") and int(n[:-5]) not in keep_steps:
      os.remove(os.path.join(d, n))

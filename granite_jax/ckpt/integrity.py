"""Per-process content manifests of committed checkpoint steps: size and checksum of every file.

Orbax commits a step atomically (temp dir + rename), so a save cut short by a
crash is never listed. What it cannot see is later damage: a file truncated,
deleted or overwritten in place (bit rot, a bad disk, another job). After a
step commits, each process records the size and checksum of the files it
wrote in `<dir>/integrity/<step>/process_<p>-of-<n>.json`; before restoring,
the files are checked against every manifest (each process checks a share of
the manifests, then all agree). Checksums are crc32c when `google_crc32c` is
importable, else zlib's crc32 (~1-2 GB/s in CPython; see
bench/bench_checksum.py). `checksums=False` records and checks sizes only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zlib

_CHUNK = 8 << 20

try:  # hardware crc32c when installed; zlib's crc32 otherwise (both detect any bit flip)
  import google_crc32c as _crc32c  # type: ignore
  ALGO = "crc32c"
except ImportError:  # pragma: no cover - depends on the environment
  _crc32c = None
  ALGO = "crc32"


def checksum(path: str, algo: str = ALGO) -> int:
  with open(path, "rb") as f:
    if algo == "crc32c":
      h = _crc32c.Checksum()
      while chunk := f.read(_CHUNK):
        h.update(chunk)
      return int.from_bytes(h.digest(), "big")
    crc = 0
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
    return crc


def owner(rel: str) -> int:
  """Which process wrote a file: Orbax/Grain put `process_<p>` in per-process paths;
  the shared metadata files are process 0's."""
  m = re.search(r"process_(\d+)", rel)
  return int(m.group(1)) if m else 0


def _files(step_dir: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(r, n), step_dir) for r, _, ns in os.walk(step_dir) for n in ns)


def manifest_dir(directory: str, step: int) -> str:
  return os.path.join(directory, "integrity", str(step))


def manifest_path(directory: str, step: int, process: int, count: int) -> str:
  return os.path.join(manifest_dir(directory, step), f"process_{process}-of-{count}.json")


def write_manifest(directory: str, step: int, process: int = 0, count: int = 1, *,
                   checksums: bool = True) -> str:
  """Records the files of `step` that `process` wrote; returns the manifest path."""
  step_dir = os.path.join(directory, str(step))
  files = {}
  for rel in _files(step_dir):
    if owner(rel) % count == process:
      p = os.path.join(step_dir, rel)
      files[rel] = [os.path.getsize(p), checksum(p) if checksums else None]
  path = manifest_path(directory, step, process, count)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(dict(algo=ALGO if checksums else None, files=files), f)
  os.replace(tmp, path)
  return path


def drop_manifest(directory: str, step: int, process: int = 0, count: int = 1) -> None:
  """Before saving `step` anew: manifests left from an earlier step of that number are stale
  (process 0 drops them all, whatever process count wrote them; no process has written one for
  the new save yet, they do so after it commits)."""
  if process == 0:
    shutil.rmtree(manifest_dir(directory, step), ignore_errors=True)
    return
  path = manifest_path(directory, step, process, count)
  if os.path.exists(path):
    os.remove(path)


def has_manifest(directory: str, step: int) -> bool:
  d = manifest_dir(directory, step)
  return os.path.isdir(d) and any(n.endswith(".json") for n in os.listdir(d))


def verify(directory: str, step: int, process: int = 0, count: int = 1, *,
           checksums: bool = True) -> str | None:
  """None when this process's share of the step's manifests matches the files; else what is wrong.

  Process `process` of `count` checks the manifests i with i % count == process, so the
  processes of a restore split the reading between them whatever the saving run's count was.
  """
  d = manifest_dir(directory, step)
  if not os.path.isdir(d):
    return None
  step_dir = os.path.join(directory, str(step))
  names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
  for i, name in enumerate(names):
    if i % count != process:
      continue
    with open(os.path.join(d, name)) as f:
      manifest = json.load(f)
    algo = manifest.get("algo")
    for rel, (size, crc) in sorted(manifest["files"].items()):
      p = os.path.join(step_dir, rel)
      if not os.path.exists(p):
        return f"missing file {p}"
      have = os.path.getsize(p)
      if have != size:
        return f"file {p} has {have} bytes, expected {size}"
      if checksums and algo and crc is not None:
        got = checksum(p, algo)
        if got != crc:
          return f"file {p} has {algo} {got:08x}, expected {crc:08x} (content changed after the save)"
  return None


def move_aside(directory: str, step: int, dest: str) -> None:
  """The step's manifests follow it to `dest` (.../damaged/<step>) as `dest`.manifest/."""
  d = manifest_dir(directory, step)
  if os.path.isdir(d):
    os.replace(d, dest + ".manifest")


def prune(directory: str, keep_steps: list[int]) -> None:
  """Drops the manifests of steps Orbax has deleted (max_to_keep)."""
  d = os.path.join(directory, "integrity")
  if not os.path.isdir(d):
    return
  for n in os.listdir(d):
    if n.isdigit() and int(n) not in keep_steps:
      shutil.rmtree(os.path.join(d, n), ignore_errors=True)
    elif n.endswith(".json"):  # the older single-file size manifest
      os.remove(os.path.join(d, n))

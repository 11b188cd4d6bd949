"""A reward worker process: `python -m granite_jax.rl.rewards.worker MEMORY_MB`.

Started by `pool.RewardPool` as a plain subprocess (never a fork of the JAX training process),
it sets RLIMIT_AS to MEMORY_MB, then serves requests read from stdin, one at a time:
  request  (fn_path, batched, prompts, responses, references)
  reply    [("ok", reward) | ("error", message) | ("data", message)] per item
framed as an 8-byte little-endian length + a pickle. "error" is bad model output (the reward raised,
ran out of memory or returned a non-float), "data" a RewardDataError (a malformed reference).
Hangs and hard crashes (os.abort, a segfault) are the parent's to detect: it kills the worker on
its deadline and reads EOF from a dead one. Anything the reward prints goes to stderr.
"""
from __future__ import annotations

import importlib
import math
import os
import pickle
import resource
import signal
import struct
import sys

_HEADER = struct.Struct("<Q")


def write_frame(f, obj) -> None:
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  f.write(_HEADER.pack(len(data)) + data)
  f.flush()


def read_exact(f, n: int) -> bytes:
  buf = b""
  while len(buf) < n:
    chunk = f.read(n - len(buf))
    if not chunk:
      raise EOFError("reward worker pipe closed")
    buf += chunk
  return buf


def read_frame(f):
  (n,) = _HEADER.unpack(read_exact(f, _HEADER.size))
  return pickle.loads(read_exact(f, n))


def _value(r) -> tuple[str, object]:
  try:
    v = float(r)
  except (TypeError, ValueError) as e:
    return "error", f"reward returned {type(r).__name__}, not a float ({e})"
  return ("ok", v) if math.isfinite(v) else ("error", f"non-finite reward {v}")


def score_items(fn, batched: bool, prompts, responses, references) -> list[tuple[str, object]]:
  from granite_jax.rl.rewards.base import RewardDataError
  try:
    if batched:
      out = list(fn(list(prompts), list(responses), list(references)))
      if len(out) != len(prompts):
        why = f"batched reward returned {len(out)} values for {len(prompts)} items"
        return [("error", why)] * len(prompts)
      return [_value(r) for r in out]
    results = []
    for p, r, ref in zip(prompts, responses, references):
      try:
        results.append(_value(fn(p, r, ref)))
      except RewardDataError as e:
        results.append(("data", str(e)))
      except Exception as e:  # noqa: BLE001 -- any model output must be scorable
        results.append(("error", f"{type(e).__name__}: {e}"))
    return results
  except RewardDataError as e:
    return [("data", str(e))] * len(prompts)
  except MemoryError:
    return [("error", "MemoryError (rl.reward_memory_mb)")] * len(prompts)
  except Exception as e:  # noqa: BLE001
    return [("error", f"{type(e).__name__}: {e}")] * len(prompts)


def main() -> None:
  memory_mb = int(sys.argv[1])
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
  out = os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)  # a reward's print() must not corrupt the reply stream
  sys.stdout = sys.stderr
  inp = os.fdopen(0, "rb")
  from granite_jax.rl.rewards.registry import resolve
  for module in filter(None, os.environ.get("GRANITE_REWARD_PRELOAD", "").split(",")):
    try:  # before the limit and the first call's clock (sympy alone takes ~1 s)
      importlib.import_module(module)
    except Exception:  # noqa: BLE001 -- the parent resolved these; a failure shows on the call
      pass
  if memory_mb > 0:
    limit = memory_mb * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  cache: dict[str, object] = {}
  write_frame(out, "ready")
  while True:
    try:
      fn_path, batched, prompts, responses, references = read_frame(inp)
    except EOFError:
      return
    try:
      if fn_path not in cache:
        cache[fn_path] = resolve(fn_path)[0]
      results = score_items(cache[fn_path], batched, prompts, responses, references)
    except MemoryError:
      results = [("error", "MemoryError (rl.reward_memory_mb)")] * len(prompts)
    except Exception as e:  # noqa: BLE001 -- import errors are reported by the parent's own resolve
      results = [("error", f"{type(e).__name__}: {e}")] * len(prompts)
    write_frame(out, results)


if __name__ == "__main__":
  main()

"""A pool of reward worker processes: per-call time limit, memory limit, crash isolation.

`RewardPool(workers, timeout_s, memory_mb).run(calls)` scores a list of calls
(fn_path, batched, prompts, responses, references) in parallel and returns, per call, one outcome
per item: ("ok", reward), ("error", why), ("data", why), ("timeout", why) or ("crash", why).
Workers are `python -m granite_jax.rl.rewards.worker` subprocesses (not forks: the training process
holds JAX/XLA threads), each with RLIMIT_AS = memory_mb. A call past its deadline gets its worker
killed; a worker that dies (os.abort, segfault, OOM kill) is detected by EOF; either way the worker
is replaced and the pool goes on. Workers preload the reward modules (and sympy) before taking calls,
so imports do not count against the first call's limit.
"""
from __future__ import annotations

import atexit
import collections
import os
import select
import subprocess
import sys
import time

from granite_jax.rl.rewards.registry import split_path
from granite_jax.rl.rewards.worker import read_frame, write_frame

STARTUP_TIMEOUT_S = 120.0  # a loaded machine may take long to import sympy; not a reward's fault


class RewardWorkerError(RuntimeError):
  """Workers cannot start at all (e.g. the reward module does not import in a subprocess)."""


class _Worker:
  def __init__(self, memory_mb: int, preload: list[str]):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    env["GRANITE_REWARD_PRELOAD"] = ",".join(preload)
    env.pop("XLA_FLAGS", None)
    self.proc = subprocess.Popen([sys.executable, "-m", "granite_jax.rl.rewards.worker", str(memory_mb)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
    self.state, self.call, self.deadline = "starting", None, time.monotonic() + STARTUP_TIMEOUT_S

  def fileno(self) -> int:
    return self.proc.stdout.fileno()

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()
    for f in (self.proc.stdin, self.proc.stdout):
      try:
        f.close()
      except OSError:
        pass


class RewardPool:
  def __init__(self, workers: int = 4, timeout_s: float = 10.0, memory_mb: int = 2048,
               preload: tuple[str, ...] = ()):
    if workers < 1 or timeout_s <= 0:
      raise ValueError(f"reward pool: workers={workers} must be >= 1 and timeout_s={timeout_s} > 0")
    self.n, self.timeout_s, self.memory_mb = workers, float(timeout_s), int(memory_mb)
    self.preload = sorted({split_path(p)[0] for p in preload} | {"sympy"})
    self.workers: list[_Worker] = []
    self.restarts = 0
    atexit.register(self.close)

  def start(self) -> "RewardPool":
    """Starts the workers now (they import while the caller does other work, e.g. compiles)."""
    while len(self.workers) < self.n:
      self.workers.append(self._spawn())
    return self

  def _spawn(self) -> _Worker:
    return _Worker(self.memory_mb, self.preload)

  def _replace(self, w: _Worker) -> None:
    w.kill()
    self.workers[self.workers.index(w)] = self._spawn()
    self.restarts += 1

  def run(self, calls: list[tuple]) -> list[list[tuple[str, object]]]:
    results: list = [None] * len(calls)
    todo = collections.deque(range(len(calls)))
    self.start()
    start_failures = 0
    while todo or any(w.state == "busy" for w in self.workers):
      now = time.monotonic()
      for w in self.workers:
        if w.state == "idle" and todo:
          j = todo.popleft()
          try:
            write_frame(w.proc.stdin, calls[j])
          except (BrokenPipeError, OSError):  # died while idle: retry the call elsewhere
            todo.appendleft(j)
            self._replace(w)
            continue
          w.state, w.call, w.deadline = "busy", j, now + self.timeout_s
      live = [w for w in self.workers if w.state in ("busy", "starting")]
      wait = max(0.0, min(w.deadline for w in live) - time.monotonic()) if live else 0.0
      ready, _, _ = select.select(live, [], [], wait)
      for w in ready:
        try:
          msg = read_frame(w.proc.stdout)
        except (EOFError, OSError):
          msg = None
        if w.state == "starting":
          if msg != "ready":
            start_failures += 1
            if start_failures >= 2 * self.n:
              self.close()
              raise RewardWorkerError(f"reward workers exit at start (exit code {w.proc.poll()}); "
                                      "see the worker's stderr above")
            self._replace(w)
          else:
            w.state = "idle"
          continue
        j, n = w.call, len(calls[w.call][2])
        if msg is None:
          code = w.proc.wait()
          results[j] = [("crash", f"reward worker died (exit code {code})")] * n
          self._replace(w)
        else:
          results[j], w.state, w.call = msg, "idle", None
      now = time.monotonic()
      for w in list(self.workers):
        if w.state == "busy" and now >= w.deadline and w not in ready:
          results[w.call] = [("timeout", f"no reward within rl.reward_timeout_s={self.timeout_s:g}s")] * \
              len(calls[w.call][2])
          self._replace(w)
        elif w.state == "starting" and now >= w.deadline:
          self.close()
          raise RewardWorkerError(f"a reward worker did not start within {STARTUP_TIMEOUT_S:g}s")
    return results

  def close(self) -> None:
    for w in self.workers:
      w.kill()
    self.workers = []

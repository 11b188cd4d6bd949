"""Run `launch/run.py` in a subprocess as a user would (one CPU device, no fake-device flags)."""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, cache, *flags, config="configs/phase2.py"):
  return [sys.executable, os.path.join(ROOT, "launch", "run.py"), f"--config={config}",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache}", *flags]


def env():
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def launch(workdir, cache, *flags, **kw):
  return subprocess.run(command(workdir, cache, *flags, **kw), cwd=ROOT, env=env(),
                        capture_output=True, text=True, timeout=600)


def start(workdir, cache, *flags, **kw):
  return subprocess.Popen(command(workdir, cache, *flags, **kw), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def wait_for_step(proc, workdir, step, timeout=300):
  """Blocks until metrics.jsonl shows `step` (or the process ends)."""
  t0 = time.time()
  while time.time() - t0 < timeout:
    m = metrics(workdir)
    if m and m[-1]["step"] >= step:
      return m[-1]["step"]
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.returncode}\n{proc.stderr.read()[-3000:]}")
    time.sleep(0.05)
  raise TimeoutError(f"step {step} not reached in {timeout}s")

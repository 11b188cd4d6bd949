"""Multi-host on one machine: `python launch/local.py N [--devices=4] [run.py flags...]`.

Starts N copies of launch/run.py, each a JAX process with `--devices` fake CPU
devices, joined by jax.distributed through a coordinator on 127.0.0.1 (CPU
collectives use gloo). Everything multi-host (each process reading its devices'
rows of the global data order, global arrays from them, multi-process Orbax
checkpoints, preemption agreement) runs for real, without a cluster. Process 0 prints to the console;
the others write to <workdir>/local_logs/process_<i>.log (or a temp dir).
If one process fails, the others are stopped (they would wait on collectives).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(i: int, n: int, devices: int, port: int, base: dict | None = None) -> dict:
  env = dict(os.environ if base is None else base)
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  return env


def start(n: int, run_args: list[str], devices: int = 4, log_dir: str | None = None,
          base_env: dict | None = None, capture_main: bool = False) -> list[subprocess.Popen]:
  """Starts the N processes; process 0's output goes to the console unless `capture_main`."""
  port = free_port()
  log_dir = log_dir or tempfile.mkdtemp(prefix="granite_local_")
  os.makedirs(log_dir, exist_ok=True)
  procs = []
  for i in range(n):
    cmd = [sys.executable, os.path.join(ROOT, "launch", "run.py"), *run_args]
    if i == 0 and not capture_main:
      out = None
    else:
      out = open(os.path.join(log_dir, f"process_{i}.log"), "w")
    # cwd inherited: relative paths in the run flags mean what they mean to launch/run.py
    procs.append(subprocess.Popen(cmd, env=process_env(i, n, devices, port, base_env),
                                  stdout=out, stderr=subprocess.STDOUT if out else None))
  procs[0].log_dir = log_dir
  return procs


def wait(procs: list[subprocess.Popen], timeout: float | None = None, settle: float = 10.0) -> int:
  """First non-zero exit code (stopping the rest), else 0.

  After a failure the others get `settle` seconds to exit on their own (bad input fails every
  process alike, and process 0's message should reach the console) before they are stopped.
  """
  t0 = time.time()
  while True:
    codes = [p.poll() for p in procs]
    bad = [c for c in codes if c not in (None, 0)]
    if bad:
      t_bad = time.time()
      while any(p.poll() is None for p in procs) and time.time() - t_bad < settle:
        time.sleep(0.1)
      stop(procs)
      return bad[0]
    if all(c == 0 for c in codes):
      return 0
    if timeout is not None and time.time() - t0 > timeout:
      stop(procs)
      raise TimeoutError(f"local processes still running after {timeout}s")
    time.sleep(0.1)


def stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
  for p in procs:
    if p.poll() is None:
      p.send_signal(sig)
  t0 = time.time()
  for p in procs:
    try:
      p.wait(timeout=max(0.1, grace - (time.time() - t0)))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def main(argv: list[str]) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("n", type=int, help="number of processes")
  ap.add_argument("--devices", type=int, default=4, help="fake CPU devices per process")
  args, run_args = ap.parse_known_args(argv)
  if args.n < 1 or args.devices < 1:
    ap.error("n and --devices must be >= 1")
  workdir = next((a.split("=", 1)[1] for a in run_args if a.startswith("--workdir=")), None)
  procs = start(args.n, run_args, args.devices,
                log_dir=os.path.join(workdir, "local_logs") if workdir else None)
  try:
    rc = wait(procs)
  except KeyboardInterrupt:
    stop(procs)
    rc = 130
  if rc:
    # When process 0 failed on its own, its one-line error is already on stderr: this note is not the error.
    own = procs[0].returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL)
    print(f"launch/local.py: a process exited with {rc}; logs of processes 1..{args.n - 1} in "
          f"{procs[0].log_dir}", file=sys.stdout if own else sys.stderr)
  return rc


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

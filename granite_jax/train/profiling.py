"""XLA profiles of chosen steps (jax.profiler), in the format TensorBoard's profile plugin and
Perfetto open.

  --config.profile.steps=START:END   trace steps START..END-1 (END exclusive, as a Python slice;
                                     several windows: "5:8,100:103")
  --config.profile.processes=0,3     only these processes (default "all")
A running job, without a restart:
  echo 5 > WORKDIR/profile/request   the chosen processes trace their next 5 steps (each new write
                                     of the file is one request, read at log steps; empty
                                     file: profile.request_steps)
  kill -USR1 PID                     that process traces its next profile.request_steps steps
Each process writes each window to its own directory,
WORKDIR/profile/process_<i>/steps_<START>/plugins/profile/<time>/: <host>.xplane.pb
(`tensorboard --logdir WORKDIR/profile`, the profile tab: one run per process and window) and, with
profile.perfetto, perfetto_trace.json.gz (ui.perfetto.dev). Steps carry StepTraceAnnotations, so
the plugin's step view works. A trace stops once its last step's results are ready: the only
wait it adds is at the end of a window.
"""
from __future__ import annotations

import contextlib
import os
import signal

import jax


def parse_windows(spec: str) -> list[tuple[int, int]]:
  """"5:8,100:103" -> [(5, 8), (100, 103)]; ValueError naming the field otherwise."""
  out = []
  for part in str(spec or "").split(","):
    if not part.strip():
      continue
    try:
      start, end = (int(x) for x in part.split(":"))
    except ValueError:
      raise ValueError(f"profile.steps={spec!r} must be START:END step numbers (END exclusive), "
                       "comma-separated for several windows") from None
    if not 1 <= start < end:
      raise ValueError(f"profile.steps={spec!r}: each window needs 1 <= START < END")
    out.append((start, end))
  return out


def chosen(processes: str, index: int) -> bool:
  spec = str(processes or "all").strip()
  if spec == "all":
    return True
  try:
    return index in {int(p) for p in spec.split(",") if p.strip()}
  except ValueError:
    raise ValueError(f"profile.processes={processes!r} must be 'all' or comma-separated process "
                     "indices") from None


class Profiler:
  def __init__(self, cfg, workdir: str):
    index = jax.process_index()
    self.on = chosen(cfg.get("processes", "all"), index)
    self.windows = parse_windows(cfg.get("steps", "")) if self.on else []
    self.dir = os.path.join(workdir, "profile", f"process_{index}")
    self.request = os.path.join(workdir, "profile", "request")
    self.request_steps = int(cfg.get("request_steps", 5))
    self.perfetto = bool(cfg.get("perfetto", True))
    self.active: tuple[int, int] | None = None
    self.written: list[str] = []  # trace directories, newest last
    self._seen = self._request_mtime()  # a request left from an earlier attempt is not new
    self._signalled = False
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
    except ValueError:  # not the main thread: file requests only
      pass

  def _on_signal(self, signum, frame):
    del signum, frame
    self._signalled = True

  def _request_mtime(self) -> int | None:
    try:
      return os.stat(self.request).st_mtime_ns
    except OSError:
      return None

  def poll(self, step: int) -> None:
    """At log steps: a new write of the request file asks for the next N steps."""
    if not self.on:
      return
    mtime = self._request_mtime()
    if mtime is None or mtime == self._seen:
      return
    self._seen = mtime
    try:
      with open(self.request) as f:
        text = f.read().strip()
      n = int(text) if text else self.request_steps
    except (OSError, ValueError):
      n = self.request_steps
    self.windows.append((step + 1, step + 1 + max(n, 1)))

  def begin(self, step: int) -> bool:
    """Before step `step` is dispatched: starts a trace when a window opens. True if it did."""
    if self._signalled:
      self._signalled = False
      self.windows.append((step, step + self.request_steps))
    if self.active is not None or not self.windows:
      return False
    self.windows = [w for w in self.windows if w[1] > step]  # windows a resume went past
    window = next((w for w in self.windows if w[0] <= step), None)
    if window is None:
      return False
    self.windows.remove(window)
    # One directory per window: jax names a trace by the second it starts, so two short windows
    # in the same second would share (and overwrite) one.
    self._run_dir = os.path.join(self.dir, f"steps_{step}")
    os.makedirs(self._run_dir, exist_ok=True)
    try:
      jax.profiler.start_trace(self._run_dir, create_perfetto_trace=self.perfetto)
    except RuntimeError as e:  # another trace is running (a user's own): leave it alone
      print(f"granite_jax: step {step}: no profile: {e}", flush=True)
      return False
    self.active = (step, window[1])
    return True

  def annotation(self, step: int):
    if self.active is None:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def end(self, step: int, outputs) -> bool:
    """After step `step` was dispatched: the last step of the window ends the trace. True if it did."""
    if self.active is None or step < self.active[1] - 1:
      return False
    jax.block_until_ready(outputs)  # the device work of the window's last step belongs in it
    self._stop(step)
    return True

  def _stop(self, step: int) -> None:
    first = self.active[0]
    self.active = None
    jax.profiler.stop_trace()
    runs = os.path.join(self._run_dir, "plugins", "profile")
    newest = max((os.path.join(runs, d) for d in os.listdir(runs)), key=os.path.getmtime, default=runs)
    self.written.append(newest)
    print(f"granite_jax: profile of steps {first}-{step} (process {jax.process_index()}) in {newest}; "
          f"tensorboard --logdir {os.path.dirname(self.dir)}", flush=True)

  def close(self, step: int) -> None:
    """End of the run (or an error): a trace in flight is written with the steps it has."""
    if self.active is not None:
      self._stop(step)
    if self._previous is not None:
      signal.signal(signal.SIGUSR1, self._previous)
      self._previous = None

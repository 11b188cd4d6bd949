"""Bad input, one line: the wrapper every command's main runs under.

A wrong path, an empty or truncated file, a config of another model or a
malformed record is the user's to fix, and the message that names it is all
they need: `run_main` prints `PROG: MESSAGE` as one line on stderr and exits 1.
`--debug` anywhere on the command line (or GRANITE_JAX_DEBUG=1) re-raises, so
the traceback shows. Errors that are not bad input (a bug) keep their traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GRANITE_JAX_DEBUG"
# What bad input raises here: missing/unreadable files (OSError), bad values, JSON and
# text decoding (ValueError: JSONDecodeError, UnicodeDecodeError), missing fields (KeyError).
BAD_INPUT: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)


def pop_debug(argv: list[str]) -> bool:
  """Removes every `--debug` from `argv` (in place); True if there was one or the env var is set."""
  found = DEBUG_FLAG in argv
  argv[:] = [a for a in argv if a != DEBUG_FLAG]
  return found or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(e: BaseException) -> str:
  """The exception as one line: its message (KeyError's repr unquoted), lines joined with '; '."""
  msg = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
  if isinstance(e, OSError) and e.filename is not None and e.strerror:  # [Errno 2] ... -> path: reason
    msg = f"{e.filename}: {e.strerror}"
  parts = [p.strip() for p in msg.splitlines() if p.strip()]
  return "; ".join(parts) or type(e).__name__


def fail(prog: str, e: BaseException | str, code: int = 1):
  """Prints `PROG: MESSAGE` on stderr and exits with `code`."""
  sys.stderr.write(f"{prog}: {e if isinstance(e, str) else one_line(e)}\n")
  sys.stderr.flush()
  raise SystemExit(code)


def run_main(prog: str, main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
             *, debug: bool | None = None) -> int:
  """`main(argv)` with bad input reported as one line; returns main's exit code (not an int -> 0).

  `argv` defaults to sys.argv[1:]; `--debug` is taken out of it before `main` parses it.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  dbg = pop_debug(argv)
  if debug is not None:
    dbg = dbg or debug
  try:
    rc = main(argv)
    return rc if isinstance(rc, int) else 0  # a main may return its result (eval: a dict)
  except BAD_INPUT as e:
    if dbg:
      raise
    fail(prog, e)
  return 1  # not reached


def git_commit() -> str:
  """The checkout's short commit, for reports that say what code produced them ('unknown' outside git)."""
  import subprocess
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"

"""Text2SQL: execute the predicted and the gold SQL on the sample's SQLite database, compare results.

Reference: dict(gold=SQL, db=path to a .sqlite file | schema=SQL script that
builds an in-memory database, ordered=bool (default: gold has ORDER BY)).
The connection is read-only (mode=ro plus an authorizer that allows reads
only) and every query has a wall-clock timeout. Results compare as multisets
of rows (as lists when ordered). Reward 1.0 on equal results, else 0.0; SQL
that fails, writes or times out scores 0.0.
"""
from __future__ import annotations

import collections
import re
import sqlite3
import time

from granite_jax.rl.rewards.base import RewardDataError

TIMEOUT_S = 5.0
MAX_ROWS = 100_000
_FENCE_RE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


class _Timeout(Exception):
  pass


def extract_sql(response: str) -> str | None:
  fenced = _FENCE_RE.findall(response)
  text = fenced[-1] if fenced else response
  m = re.search(r"\b(SELECT|WITH)\b.*", text, re.IGNORECASE | re.DOTALL)
  return m.group(0).split(";")[0].strip() if m else None


def _connect(ref: dict) -> sqlite3.Connection:
  if "db" in ref:
    conn = sqlite3.connect(f"file:{ref['db']}?mode=ro", uri=True, check_same_thread=False)
  elif "schema" in ref:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.executescript(ref["schema"])
  else:
    raise RewardDataError("text2sql reward: reference needs `db` (path) or `schema` (SQL script)")
  conn.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _READ_ACTIONS
                      else sqlite3.SQLITE_DENY)
  return conn


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float = TIMEOUT_S) -> list[tuple]:
  deadline = time.monotonic() + timeout_s
  conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
  try:
    rows = conn.execute(sql).fetchmany(MAX_ROWS)
  except sqlite3.OperationalError as e:
    if time.monotonic() > deadline:
      raise _Timeout(sql) from e
    raise
  return [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]


def same_results(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
  return pred == gold if ordered else collections.Counter(pred) == collections.Counter(gold)


def text2sql_reward(prompt: str, response: str, reference) -> float:
  if not isinstance(reference, dict) or not reference.get("gold"):
    raise RewardDataError(f"text2sql reward: reference must be a dict with `gold` SQL, got {reference!r}")
  timeout_s = float(reference.get("timeout_s", TIMEOUT_S))
  conn = _connect(reference)
  try:
    try:
      gold = run_query(conn, reference["gold"], timeout_s)
    except (sqlite3.Error, _Timeout) as e:
      raise RewardDataError(f"text2sql reward: gold SQL fails: {e}") from None
    sql = extract_sql(response)
    if sql is None:
      return 0.0
    try:
      pred = run_query(conn, sql, timeout_s)
    except (sqlite3.Error, sqlite3.Warning, _Timeout):
      return 0.0
    ordered = reference.get("ordered", re.search(r"\border\s+by\b", reference["gold"], re.IGNORECASE) is not None)
    return float(same_results(pred, gold, ordered))
  finally:
    conn.close()

"""bench/gpu_check.sh: its CPU mode end to end, and the rows that make it exit nonzero."""
import os
import re
import subprocess
import sys

import pytest

from bench import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKS = ("device", "attention fwd", "attention grads", "train MFU", "rollout fast", "rollout program")


def table_rows(text: str) -> dict[str, dict[str, str]]:
  """The markdown table's rows by check, as {column: cell}."""
  lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
  cols = [c.strip() for c in lines[0].strip("|").split("|")]
  rows = [dict(zip(cols, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]
  return {r["check"]: r for r in rows}


@pytest.mark.slow
def test_cpu_mode_prints_every_row_with_numbers(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user has
  env.update(PY=sys.executable, BUDGET_S="600")  # a ceiling for a loaded machine
  r = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu", "--out", str(tmp_path / "check.json")],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=630)
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  rows = table_rows(r.stdout)
  assert tuple(rows) == CHECKS, r.stdout
  assert "blockwise stands in for cuDNN" in r.stdout and "all rows ok" in r.stdout
  for check, row in rows.items():
    assert row["status"] in ("ok", "PASS"), row
    assert re.search(r"\d", row["result"]), row
    if check != "device":
      assert float(row["seconds"]) > 0, row
  assert "blockwise vs xla" in rows["attention fwd"]["result"]
  assert re.search(r"MFU \d+\.\d%", rows["train MFU"]["result"]), rows["train MFU"]
  assert re.match(r"[\d,]+ tokens/s", rows["rollout fast"]["result"]), rows["rollout fast"]
  assert (tmp_path / "check.json").exists()


def test_attention_check_fails_on_a_wrong_implementation():
  xla = gpu_check.attention_fn("xla", 0.25, 16)

  def wrong(*args):  # 10% off: far outside bf16 rounding
    return 1.1 * xla(*args)

  kw = dict(B=1, T=64, N=2, K=1, H=16, docs=2, iters=1)
  rows = gpu_check.compare_attention(wrong, xla, ("wrong", "xla"), **kw)
  assert [(r["check"], r["status"]) for r in rows] == [("attention fwd", "FAIL"), ("attention grads", "FAIL")]
  assert "wrong vs xla" in rows[0]["result"]

  def broken(*args):
    raise ValueError("no such kernel")

  rows = gpu_check.compare_attention(broken, xla, ("broken", "xla"), **kw)
  assert [r["status"] for r in rows] == ["ERROR", "ERROR"] and "no such kernel" in rows[1]["result"]


def test_a_fail_or_timeout_row_makes_the_run_exit_nonzero(monkeypatch, capsys):
  rows, dev = gpu_check.run_child("attention", True, 0.5, "test")  # cannot finish in 0.5 s
  assert rows[0]["status"] == "TIMEOUT" and dev is None
  fail = dict(check="attention fwd", shape="s", result="max abs diff 1", seconds=0.1, status="FAIL")
  monkeypatch.setattr(gpu_check, "run_child", lambda *a: ([fail], None))
  assert gpu_check.main(["--cpu", "--only", "attention"]) == 1
  out = capsys.readouterr().out
  assert table_rows(out)["attention fwd"]["status"] == "FAIL" and "not ok: device, attention fwd" in out

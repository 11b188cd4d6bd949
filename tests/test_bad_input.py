"""Every row of the README's "Bad input: what you see" table, run as written: the command exits
non-zero with exactly the one stderr line the table shows (no traceback), and `--debug` brings
the traceback back. The table is parsed from README.md, so the two cannot drift apart."""
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
TITLE = "### Bad input: what you see"


def readme_rows() -> list[dict]:
  """[{command, fault, exit, line}] of the table under TITLE: the first `...` span of a cell is taken."""
  text = open(README).read()
  if TITLE not in text:
    return []
  rows = []
  for line in text.split(TITLE, 1)[1].split("\n## ", 1)[0].splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
    if len(cells) != 4 or cells[0] == "command" or set(cells[0]) <= set("-: "):
      continue
    code = [re.search(r"`([^`]*)`", c) for c in (cells[0], cells[3])]
    rows.append(dict(command=code[0].group(1), fault=cells[1], exit=int(cells[2]), line=code[1].group(1)))
  return rows


def _token_stores(d: str) -> None:
  """other_store/: a token store of another tokenizer; half_store/: a store whose job never finished."""
  import shutil

  from granite_jax.data import store_io
  from granite_jax.data.store import build_store
  from granite_jax.data.tok_spec import load_tokenizer_spec
  from tests.data.store_helpers import make_tokenizer
  spec = load_tokenizer_spec(make_tokenizer(os.path.join(d, "other_tok.json")))
  src = os.path.join(d, "text", "one.jsonl")
  os.makedirs(os.path.dirname(src))
  with open(src, "w") as f:
    f.write('{"text": "a few words"}\n')
  build_store([src], os.path.join(d, "other_store"), spec)
  half = os.path.join(d, "half_store")
  os.makedirs(half)
  shutil.copy(os.path.join(d, "other_store", store_io.PLAN), half)


def make_examples(d: str) -> None:
  """The faulty inputs the table's commands name, in directory `d` (the commands run there)."""
  from granite_jax.ckpt.hf_config import to_hf_config
  from granite_jax.model import preset

  def write(rel, data):
    path = os.path.join(d, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)

  write("empty.jsonl", "")
  _token_stores(d)
  write("empty.py", "")
  write("bad.jsonl", '{"prompt": "What is 2 + 2?", "domain": "math", "reference": "4"}\n{"prompt": \n')
  write("hf_empty/config.json", "")
  write("hf_llama/config.json", json.dumps({"model_type": "llama", "hidden_size": 64}))
  write("hf_truncated/config.json", json.dumps(to_hf_config(preset("tiny"))))
  from safetensors.numpy import save
  blob = save({"model.embed_tokens.weight": np.zeros((64, 32), np.float32)})
  write("hf_truncated/model.safetensors", blob[:len(blob) // 2])
  write("run_empty/model_config.json", "")
  os.makedirs(os.path.join(d, "run_empty", "ckpt"), exist_ok=True)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("bad_input"))
  make_examples(d)
  return d


def run(command: str, cwd: str, timeout: float = 300) -> subprocess.CompletedProcess:
  """The README command line, with `python` this interpreter and launch/, configs/ from this repo."""
  argv = shlex.split(command)
  argv = [sys.executable if a == "python" else a for a in argv]
  argv = [os.path.join(ROOT, a) if a.startswith(("launch/", "configs/")) else a for a in argv]
  argv = [a.replace("=configs/", f"={ROOT}/configs/") for a in argv]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
  env.pop("GRANITE_JAX_DEBUG", None)
  return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def matches(expected: str, got: str) -> bool:
  """Equal, where `...` in the README stands for any text (library wording that may change)."""
  pattern = ".*".join(re.escape(p) for p in expected.split("..."))
  return re.fullmatch(pattern, got) is not None


ROWS = readme_rows()


@pytest.fixture(scope="module")
def results(examples):
  """Every row's command, run a few at a time (most of their time is Python and JAX imports)."""
  from concurrent.futures import ThreadPoolExecutor
  with ThreadPoolExecutor(4) as pool:
    return dict(zip([r["command"] for r in ROWS], pool.map(lambda r: run(r["command"], examples), ROWS)))


def test_table_covers_every_command_and_fault():
  assert ROWS, f"README.md has no table under {TITLE!r}"
  cmds = " ".join(r["command"] for r in ROWS)
  for needed in ("launch/run.py", "launch/local.py", "granite_jax.sft.curate", "granite_jax.ckpt.hf import",
                 "granite_jax.ckpt.hf export", "granite_jax.ckpt.merge", "granite_jax.eval ",
                 "granite_jax.plan"):
    assert needed in cmds, f"no README row runs {needed}"
  faults = " ".join(r["fault"] for r in ROWS)
  for fault in ("missing path", "empty file", "truncated safetensors", "model_type", "malformed JSONL"):
    assert fault in faults, f"no README row for the fault {fault!r}"


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[f"{r['command'].split()[1]}|{r['fault']}" for r in ROWS])
def test_readme_row(row, results, examples):
  r = results[row["command"]]
  lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
  assert "Traceback" not in r.stderr, r.stderr
  if row["exit"] == 0:  # not an error for this command: the table names what stdout shows
    assert r.returncode == 0 and not lines, r.stderr
    assert " ".join(row["line"].split()) in [" ".join(ln.split()) for ln in r.stdout.splitlines()], r.stdout
    return
  assert r.returncode == row["exit"], f"exit {r.returncode} for {row['command']}\n{r.stdout}\n{r.stderr}"
  assert len(lines) == 1, f"{len(lines)} stderr lines:\n{r.stderr}"
  got = lines[0].replace(examples + os.sep, "").replace(examples, ".")
  assert matches(row["line"], got), f"README says\n  {row['line']}\nthe command printed\n  {got}"


@pytest.mark.slow
def test_debug_shows_the_traceback(examples):
  row = next(r for r in ROWS if "granite_jax.ckpt.hf import" in r["command"])
  r = run(row["command"] + " --debug", examples)
  assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr
  assert r.stderr.rstrip().splitlines()[-1].endswith(row["line"].split(": ", 2)[-1])

"""Raw material for the demo corpus, harvested from the Python stdlib sources.

Everything here ships with the interpreter, so the demo corpus needs no
download. Files are visited in sorted order so the material is deterministic
for a given Python version. Material is split into train/eval pools by a hash
of the module name, so held-out documents come from modules training never sees.
"""
from __future__ import annotations

import ast
import dataclasses
import glob
import os
import sysconfig
import zlib

# Skipped: test suites (huge, repetitive), GUI/tooling packages, third-party.
_SKIP_PARTS = ("test", "tests", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo",
               "ensurepip", "pydoc_data", "__pycache__", "config-")
_MAX_FILE_BYTES = 400_000
EVAL_BUCKETS = 10  # 1 in EVAL_BUCKETS modules (by name hash) is held out for eval


@dataclasses.dataclass(frozen=True)
class Item:
  """One documented definition (module, class or function) of a stdlib file."""
  module: str      # dotted module name, e.g. "email.message"
  qualname: str    # "" for the module itself
  kind: str        # "module" | "class" | "function"
  signature: str   # "(a, b=1)" for functions, "" otherwise
  doc: str         # cleaned docstring ("" if none)
  source: str      # source text of the definition (module: whole file)


def split_of(module: str) -> str:
  return "eval" if zlib.crc32(module.encode()) % EVAL_BUCKETS == 0 else "train"


def stdlib_files() -> list[tuple[str, str]]:
  """Sorted (relative path, module name) of stdlib .py files, top level and one package deep."""
  root = sysconfig.get_paths()["stdlib"]
  paths = sorted(glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "*", "*.py")))
  out = []
  for p in paths:
    rel = os.path.relpath(p, root)
    parts = rel.replace(os.sep, "/").split("/")
    if any(part.startswith(_SKIP_PARTS) for part in parts) or os.path.getsize(p) > _MAX_FILE_BYTES:
      continue
    mod = rel[:-3].replace(os.sep, ".")
    out.append((p, mod[: -len(".__init__")] if mod.endswith(".__init__") else mod))
  return out


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
  try:
    return "(" + ast.unparse(fn.args) + ")"
  except Exception:  # noqa: BLE001 - exotic syntax; signature is cosmetic
    return "(...)"


def _items_of(path: str, module: str) -> list[Item]:
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    tree = ast.parse(text)
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return []
  lines = text.splitlines()
  items = [Item(module, "", "module", "", ast.get_docstring(tree) or "", text)]
  # Only top-level defs and methods of top-level classes: enough material, fast.
  for node in tree.body:
    defs = [(node, "")]
    if isinstance(node, ast.ClassDef):
      defs += [(c, node.name + ".") for c in node.body if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for d, prefix in defs:
      if not isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        continue
      src = "\n".join(lines[d.lineno - 1 : d.end_lineno])
      kind = "class" if isinstance(d, ast.ClassDef) else "function"
      sig = "" if kind == "class" else _signature(d)
      items.append(Item(module, prefix + d.name, kind, sig, ast.get_docstring(d) or "", src))
  return items


def stdlib_items() -> dict[str, list[Item]]:
  """{"train": [...], "eval": [...]} items of all stdlib files, deterministic order."""
  pools: dict[str, list[Item]] = {"train": [], "eval": []}
  for path, module in stdlib_files():
    pools[split_of(module)].extend(_items_of(path, module))
  return pools

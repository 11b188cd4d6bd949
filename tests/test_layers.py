"""The package layers of DESIGN.md hold: no module imports a package above its own, and no two
packages import each other (directly or around a loop). Every import counts, function-level
ones included, since a lazy import is still a dependency."""
import ast
import os
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top (DESIGN.md). A package imports only from its own layer or below.
LAYERS = [
    {"model", "ops", "sharding", "cli", "flops", "metric_names"},  # flops: FLOPs of a ModelConfig (train MFU,
    # plan); metric_names: the logged metric keys the loops write and plot.py reads
    {"data", "optim", "ckpt"},
    {"infer", "train"},
    {"sft", "rl", "eval", "plan", "demo", "plot"},  # plot: reads a run's metrics.jsonl
    {"launch"},  # launch/*.py, outside the package
]
LAYER_OF = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}


def package_of(module: str) -> str:
  """granite_jax.<pkg>.x -> pkg; the plan_* modules (until they are a package) are `plan`."""
  parts = module.split(".")
  if parts[0] == "launch":
    return "launch"
  if len(parts) == 1:
    return ""  # granite_jax/__init__.py: below everything, so it may import nothing
  return "plan" if parts[1].startswith("plan") else parts[1]


def layer_of(pkg: str) -> int:
  if pkg == "":
    return -1
  if pkg not in LAYER_OF:
    raise KeyError(f"package {pkg!r} has no layer: add it to LAYERS in tests/test_layers.py")
  return LAYER_OF[pkg]


def module_files(root: str):
  """(module name, path) of every .py under granite_jax/ and launch/."""
  for top in ("granite_jax", "launch"):
    for d, _, files in os.walk(os.path.join(root, top)):
      for f in sorted(files):
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
          if rel[-1] == "__init__":
            rel = rel[:-1]
          yield ".".join(rel), os.path.join(d, f)


def imports_of(module: str, path: str, is_package: bool):
  """(imported granite_jax module, line) for every import statement anywhere in the file."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: resolve against this module's package
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
      else:
        name = node.module or ""
      # `from granite_jax import train` imports the package `train`
      names = [name] if name != "granite_jax" else [f"granite_jax.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name.startswith("granite_jax.") or name == "granite_jax":
        yield name, node.lineno


def dependencies(root: str):
  """[(from module, from package, to package, line)] for imports that cross packages."""
  out = []
  for module, path in module_files(root):
    src = package_of(module)
    for name, line in imports_of(module, path, path.endswith("__init__.py")):
      dst = package_of(name)
      if dst != src and dst != "":
        out.append((module, src, dst, line))
  return out


def upward_imports(deps) -> list[str]:
  return [f"{m} (line {line}, layer {layer_of(s)}) imports {d} (layer {layer_of(d)})"
          for m, s, d, line in deps if layer_of(d) > layer_of(s)]


def package_cycles(deps) -> list[str]:
  """One message per strongly connected group of packages (Tarjan), naming an import per edge."""
  edges: dict[str, dict[str, str]] = {}
  for m, s, d, line in deps:
    edges.setdefault(s, {}).setdefault(d, f"{m}:{line}")
  index, low, stack, on, groups = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges.get(v, {}):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(sorted(group))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return [" <-> ".join(g) + ": " + ", ".join(f"{a} -> {b} ({edges[a][b]})" for a in g
                                              for b in g if b in edges.get(a, {}))
          for g in groups]


def test_no_upward_imports():
  bad = upward_imports(dependencies(ROOT))
  assert not bad, "imports from a higher layer (see DESIGN.md):\n" + "\n".join(bad)


def test_no_import_cycles_between_packages():
  bad = package_cycles(dependencies(ROOT))
  assert not bad, "packages that import each other:\n" + "\n".join(bad)


def test_every_package_has_a_layer():
  for _, src, dst, _ in dependencies(ROOT):
    layer_of(src), layer_of(dst)  # raises naming the package
  for module, _ in module_files(ROOT):
    layer_of(package_of(module))


def _write(root, files: dict[str, str]):
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(textwrap.dedent(text))


def test_checker_finds_lazy_upward_imports_and_cycles(tmp_path):
  """The checks above can fail: a made-up tree with one of each fault."""
  _write(tmp_path, {
      "granite_jax/__init__.py": "",
      "granite_jax/model/__init__.py": "",
      "granite_jax/model/core.py": """
          def f():
            from granite_jax.train import state  # lazy, still upward
          """,
      "granite_jax/train/__init__.py": "",
      "granite_jax/train/state.py": "from ..infer import sampler\n",  # relative import
      "granite_jax/infer/__init__.py": "from granite_jax import train\n",
      "granite_jax/infer/sampler.py": "import granite_jax.model.core  # downward: fine\n",
      "launch/run.py": "from granite_jax.train import state\n",
  })
  deps = dependencies(str(tmp_path))
  assert upward_imports(deps) == [
      "granite_jax.model.core (line 3, layer 0) imports train (layer 2)"]
  assert package_cycles([d for d in deps if d[1] != "model"]) == [
      "infer <-> train: infer -> train (granite_jax.infer:1), train -> infer (granite_jax.train.state:1)"]
  _write(tmp_path, {"granite_jax/mystery/__init__.py": "from granite_jax.model import core\n"})
  with pytest.raises(KeyError, match="'mystery' has no layer"):
    [layer_of(s) for _, s, _, _ in dependencies(str(tmp_path))]



def test_every_import_resolves():
  """A module moved or renamed leaves no stale import behind, lazy (function-level) ones included:
  every `import granite_jax.x` / `from granite_jax.x import y` in granite_jax/ and launch/ names a
  module that exists and, for `from`, a name it defines."""
  import importlib
  import importlib.util

  stale = []
  for module, path in module_files(ROOT):
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("granite_jax"):
        where = f"{module}:{node.lineno}"
        try:
          mod = importlib.import_module(node.module)
        except ImportError as e:
          stale.append(f"{where}: {node.module} ({e})")
          continue
        for a in node.names:
          if not hasattr(mod, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None:
            stale.append(f"{where}: {node.module} has no {a.name}")
      elif isinstance(node, ast.Import):
        for a in node.names:
          if a.name.startswith("granite_jax") and importlib.util.find_spec(a.name) is None:
            stale.append(f"{module}:{node.lineno}: no module {a.name}")
  assert not stale, stale

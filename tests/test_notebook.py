"""notebooks/quickstart.ipynb runs headlessly end to end (few steps, no downloads)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, demo_cache_dir):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1
  workdir = tmp_path / "run"
  # Papermill-style: the injected cell after the parameters cell overrides them.
  nb.cells.insert(nb.cells.index(params[0]) + 1, nbformat.v4.new_code_cell(
      f"STEPS = 3\nWORKDIR = {str(workdir)!r}\nCACHE_DIR = {demo_cache_dir!r}"))
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  assert (workdir / "metrics.jsonl").exists()
  assert (workdir / "plots" / "loss.png").exists()
  assert list(workdir.glob("events.out.tfevents.*"))
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "def fibonacci(n):" in outputs  # the sample was printed
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images  # the loss plot was displayed

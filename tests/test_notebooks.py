"""The notebooks run top to bottom without an error, with the quick settings they read from SARCLIP_QUICK=1.

Each one runs in a fresh Jupyter kernel started in notebooks/ (so `sys.path.insert(0, "..")` and
`../../shared` mean what they mean to a reader), and every cell that calls plt.show() must leave a
picture behind: a module that switched matplotlib away from the inline backend would blank them.
"""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
SHARED = FOLDER.parent.parent / "shared"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))  # 04 writes the quick checkpoint 05 reads (05 trains one without it)


def test_there_are_five_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_clean(path, monkeypatch):
    monkeypatch.setenv("SARCLIP_QUICK", "1")  # the kernel inherits this environment
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(FOLDER)}})
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, on any error
    for cell in notebook.cells:
        needs_shared = "if SHARED.exists()" in cell.source or "if real is not None" in cell.source
        if cell.cell_type == "code" and "plt.show()" in cell.source and (SHARED.is_dir() or not needs_shared):
            pictures = [o for o in cell.outputs if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
            assert pictures, f"{path.name}: this cell drew no picture:\n{cell.source[:300]}"

"""The notebooks of examples/notebooks/ run from top to bottom (nbclient); a failing cell fails the test.

Notebooks are committed without outputs. One that trains reads its data sizes from a first code cell holding
``TRAIN_SAMPLES = None`` and ``TEST_SAMPLES = None``; the test sets them small."""
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks run through nbclient: pip install -e .[test]")
nbclient = pytest.importorskip("nbclient", reason="the notebooks run through nbclient: pip install -e .[test]")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "examples" / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks_committed_without_outputs():
    assert len(NOTEBOOKS) == 3
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert not any(cell.get("outputs") or cell.get("execution_count") for cell in notebook.cells
                       if cell.cell_type == "code"), f"{path.name} holds outputs: clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, mnist_root, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = (cell.source.replace("TRAIN_SAMPLES = None", "TRAIN_SAMPLES = 1024")
                           .replace("TEST_SAMPLES = None", "TEST_SAMPLES = 300"))
    monkeypatch.setenv("MINIDAE_DATA", mnist_root)  # the kernel, a child process, finds MNIST there
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

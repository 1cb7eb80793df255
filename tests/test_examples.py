"""The example notebooks run top to bottom (their cells assert equality with pipeline())."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_is_a_notebook():
    assert (EXAMPLES / "compose_stages.ipynb") in NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    # The "python3" kernelspec runs `python`, which jupyter_client maps to sys.executable: the
    # kernel is this interpreter (the project's .venv). The first cell proves it.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # raises CellExecutionError on any failing cell / assertion
    assert os.path.realpath(nb.cells[0].outputs[0]["text"].strip()) == os.path.realpath(sys.executable)
    outputs = [o for cell in nb.cells[1:] if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if path.name == "compose_stages.ipynb":
        assert text.count("identical") == 5
        assert any("image/png" in o.get("data", {}) for o in outputs)

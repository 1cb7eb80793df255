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


# --------------------------------------------------------------------------- README and docs/

import ast  # noqa: E402
import builtins  # noqa: E402
import re  # noqa: E402

ROOT = EXAMPLES.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _python_blocks(path: Path) -> list[str]:
    return _FENCE.findall(path.read_text())


def _bound_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names the snippet binds other than by import, names it imports)."""
    bound: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                imported.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, imported


def _check_snippet(code: str, where: str) -> None:
    tree = ast.parse(code, filename=where)          # syntactically valid Python
    bound, imported = _bound_names(tree)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    used |= {n.value.id for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    undefined = used - bound - imported - set(dir(builtins))
    assert not undefined, f"{where}: uses {sorted(undefined)} without importing or defining it"
    unused = imported - used
    assert not unused, f"{where}: imports {sorted(unused)} but never uses it"


def test_readme_python_examples_are_valid_and_self_contained():
    blocks = _python_blocks(README)
    assert blocks, "the README shows no Python example"
    for i, code in enumerate(blocks):
        _check_snippet(code, f"README.md python block {i + 1}")
    # the main example: numpy imported because np is used, and at most ~10 lines of code
    first = [ln for ln in blocks[0].splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(first) <= 12, f"the README's example is {len(first)} lines"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_python_examples_are_valid_and_self_contained(path):
    for i, code in enumerate(_python_blocks(path)):
        _check_snippet(code, f"docs/{path.name} python block {i + 1}")


def test_readme_is_short_and_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for doc in ("install", "modes", "performance", "streaming", "porting", "troubleshooting"):
        assert f"docs/{doc}.md" in text, doc
    for page in [README, *DOCS]:
        base = page.parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (base / target).exists(), f"{page.name}: broken link {target}"


def test_readme_says_nothing_a_user_cannot_follow():
    for page in [README, *DOCS]:
        text = page.read_text()
        assert not re.search(r"\bissue\s*#?\d+", text, re.I), page.name
        assert "§" not in text and "UPSTREAM.md" not in text, page.name
        assert "✔" not in text and "✘" not in text, page.name
        # not on a package index: install from a clone or a git URL, never by bare name
        assert not re.search(r"pip install ['\"]?synctalk-audio(\[[a-z,]+\])?['\"]?(?!\s*@)(\s|$)", text), page.name


def test_readme_documents_every_cli_command():
    from synctalk_audio.cli import COMMANDS

    text = README.read_text()
    for cmd in COMMANDS:
        assert f"synctalk-audio {cmd.name}" in text, cmd.name

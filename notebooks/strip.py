"""Strip notebooks for git: no outputs, execution counts or run metadata (`python notebooks/strip.py [FILES]`).

`tests/test_notebooks.py` fails on any committed notebook this would change.
"""

import sys
from pathlib import Path

import nbformat


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        cell.metadata = nbformat.NotebookNode()
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    language = nb.metadata.get("language_info", {}).get("name", "python")
    nb.metadata = nbformat.NotebookNode(
        kernelspec=nb.metadata.get("kernelspec", {}), language_info=nbformat.NotebookNode(name=language)
    )
    return nb


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path(__file__).parent.glob("*.ipynb"))
    for path in paths:
        nbformat.write(strip(nbformat.read(path, as_version=4)), path)
        print(f"stripped {path}")

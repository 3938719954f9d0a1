"""The notebooks: committed with outputs stripped, and executed here on the real data so they never rot.

`02_results` needs a run and an ablation: a tiny real-data ablation (two augmentation
points, one fold, 2 epochs of 20 steps, a ~1.4k-parameter CNN) is trained once for the
module, and its baseline point doubles as the run. Skipped only when the real data is absent.
"""

import copy
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
import yaml

from configs import default
from fmnist_jax import ablation, data

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def nbstripout(path: Path, *extra: str) -> subprocess.CompletedProcess:
    """nbstripout on `path` with the arguments of the project's pre-commit hook (one owner for them)."""
    hooks = yaml.safe_load((NOTEBOOKS.parent / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    args = next(h for h in hooks if h["id"] == "nbstripout")["args"]
    return subprocess.run(
        [sys.executable, "-m", "nbstripout", *args, *extra, str(path)], capture_output=True, text=True, timeout=60
    )


def real_data_dir() -> Path | None:
    try:
        return data.find_data_dir()
    except data.DataError:
        return None


needs_real_data = pytest.mark.skipif(
    real_data_dir() is None,
    reason="real Fashion-MNIST not installed (`apt-get install dataset-fashion-mnist` or set FMNIST_DATA_DIR)",
)


def execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def images_shown(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_there_are_two_notebooks():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["01_eda.ipynb", "02_results.ipynb"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs"
    proc = nbstripout(path, "--verify")
    assert proc.returncode == 0, f"run `nbstripout` (or `pre-commit run`) on {path.name} before committing"


def test_stripper_removes_what_a_run_adds(tmp_path):
    nb = nbformat.read(NOTEBOOKS / "01_eda.ipynb", as_version=4)
    ran = copy.deepcopy(nb)
    code = next(c for c in ran.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="hi")]
    code.execution_count, code.metadata["execution"] = 3, {"iopub.status.idle": "now"}
    ran.metadata["language_info"]["version"] = "3.11.7"
    ran.metadata["widgets"] = {"state": {}}
    assert ran != nb
    nbformat.write(ran, tmp_path / "ran.ipynb")
    assert nbstripout(tmp_path / "ran.ipynb", "--verify").returncode != 0  # the check can fail
    assert nbstripout(tmp_path / "ran.ipynb").returncode == 0
    assert nbformat.read(tmp_path / "ran.ipynb", as_version=4) == nb


@pytest.fixture(scope="module")
def tiny_real_ablation(tmp_path_factory) -> Path:
    c = default.get_config("smoke")
    c.name = "nbtest"
    c.cv.folds = (0,)
    c.model.widths, c.model.depths = (8, 16), (1, 1)
    c.train.epochs, c.train.steps_per_epoch = 2, 20
    if "wandb" in c:
        c.wandb.mode = "disabled"
    workdir = tmp_path_factory.mktemp("nb_ablation")
    points = ablation.expand(c, [("hflip", {"augment": "flip_lr"}), ("none", {"augment": "none"})])
    ablation.run_grid(points, workdir, progress=False)
    ablation.write_results("nbtest", points, workdir, workdir, "hflip", "tests/test_notebooks.py")
    return workdir


@needs_real_data
def test_eda_notebook_runs_on_real_data():
    nb = execute("01_eda.ipynb")
    assert images_shown(nb) == 4  # samples, class balance, mean images, augmentations
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "train: images (60000, 28, 28) uint8" in text and "per class: [6000]" in text


@needs_real_data
def test_results_notebook_runs_on_a_real_run_and_ablation(tiny_real_ablation, monkeypatch):
    monkeypatch.setenv("FMNIST_RUN", str(tiny_real_ablation / "hflip"))
    monkeypatch.setenv("FMNIST_ABLATION", str(tiny_real_ablation))
    nb = execute("02_results.ipynb")
    # learning curves, confusion, predictions, ablation bar chart, ablation curves
    assert images_shown(nb) == 5

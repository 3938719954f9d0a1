"""The package's layers: every module imports only modules of lower layers, and the library never the commands.

README's "Layout" section draws the same table; a new module must be placed here to pass.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fmnist_jax"

LAYERS = [
    {"errors"},
    {"writers", "backend", "stats", "artifact", "config_lib", "data", "augment", "images", "metrics", "models"}
    | {"distributed", "drift", "feedback", "stops"},
    {"steps", "members", "record", "tracking", "plots", "monitoring"},
    {"validate", "checkpoints", "wandb_replay"},
    {"restore"},
    {"distill"},
    {"train"},
    {"evaluation", "exporter", "prediction", "serving", "reporting", "ablation"},
    {"cluster", "retraining", "monitoring_report"},
    {"commands.parsing"},
    {"commands.train", "commands.evaluate", "commands.export", "commands.predict", "commands.serve"}
    | {"commands.report", "commands.ablate", "commands.monitor", "commands.retrain"},
    {"cli"},
]
LIBRARY = {m for layer in LAYERS for m in layer if not m.startswith("commands.") and m != "cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if not name.endswith("__init__"):
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """fmnist_jax modules imported anywhere in the file (top level, in functions, under TYPE_CHECKING)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fmnist_jax"):
            sub = node.module.removeprefix("fmnist_jax").lstrip(".")
            if sub:
                out.add(sub)
            else:  # from fmnist_jax import a, b
                out |= {a.name for a in node.names}
            if sub == "commands":
                out |= {f"commands.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("fmnist_jax.") for a in node.names if a.name.startswith("fmnist_jax.")}
    return out - {"commands"}


def _layer(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_module_has_a_layer():
    placed = set().union(*LAYERS)
    assert set(_modules()) == placed, "place new modules in LAYERS (and the README's layout)"


def test_imports_flow_one_way():
    wrong = [
        f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        for name, path in sorted(_modules().items())
        for dep in sorted(_imports(path))
        if _layer(dep) >= _layer(name)
    ]
    assert not wrong, "\n".join(wrong)


def test_library_never_imports_the_command_line():
    for name in LIBRARY:
        deps = _imports(_modules()[name])
        assert not {d for d in deps if d.startswith("commands") or d == "cli"}, name


def test_the_checker_sees_lazy_and_aliased_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from fmnist_jax import data, train\nimport fmnist_jax.models\n"
        "def f():\n    from fmnist_jax.commands import parsing\n    from fmnist_jax.restore import Restored\n"
    )
    assert _imports(f) == {"data", "train", "models", "commands.parsing", "restore"}


def test_every_public_api_name_resolves_to_its_documented_object():
    import fmnist_jax
    from fmnist_jax import ablation, restore, train

    want = {
        "train_and_evaluate": train.train_and_evaluate,
        "train_packed": train.train_packed,
        "restore_run": restore.restore,
        "Restored": restore.Restored,
        "load_grid": ablation.load,
        "run_grid": ablation.run,
    }
    assert sorted(want) == fmnist_jax.__all__
    assert all(getattr(fmnist_jax, name) is obj for name, obj in want.items())

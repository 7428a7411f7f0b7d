"""The house is layered: imports point only down, and the roles import nothing of credit_model/training/."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own room and any room of a lower layer, never one above or beside it.
LAYERS = (
    ("credit_model.runtime",),
    ("credit_model",),                       # schema, preprocessing, deployment, explainability
    ("credit_model.training",),
    ("protocol",),
    ("parties", "evaluator", "scenarios"),   # the roles, and the scenario language
    ("simulation",),
    ("bench", "web"),
    ("run_scenario",),
)
ROLES = ("parties", "evaluator")


def room_of(module: str) -> str | None:
    """The room (a LAYERS entry) a dotted module name belongs to: its longest matching prefix."""
    rooms = [room for layer in LAYERS for room in layer if module == room or module.startswith(room + ".")]
    return max(rooms, key=len) if rooms else None


def layer_of(room: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if room in layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, lazy ones inside functions included."""
    tree, name = ast.parse(path.read_text(), str(path)), module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]  # `from pkg import module`
    return found


def project_files() -> list[Path]:
    files = [ROOT / "run_scenario.py"]
    for layer in LAYERS:
        for room in layer:
            folder = ROOT / room.replace(".", "/")
            if folder.is_dir():
                files += sorted(folder.rglob("*.py"))
    return sorted(set(files))


def test_every_import_points_down_or_stays_in_its_room():
    checked, wrong = 0, []
    for path in project_files():
        room = room_of(module_name(path))
        for line, target in imports_of(path):
            target_room = room_of(target)
            if target_room is None or target_room == room:
                continue
            checked += 1
            if layer_of(target_room) >= layer_of(room):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({room}) imports {target} ({target_room})")
            if room in ROLES and target_room == "credit_model.training":
                wrong.append(f"{path.relative_to(ROOT)}:{line}: a role imports {target} (training only)")
    assert checked > 100, f"only {checked} cross-room imports seen: the walk is broken"
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(set(wrong)))


def test_the_layer_check_sees_an_import_that_points_up(tmp_path, monkeypatch):
    """The check above can fail: a runtime module importing the scenario language is caught."""
    bad = ROOT / "credit_model" / "runtime" / "_layout_probe.py"
    bad.write_text("def f():\n    from scenarios.spec import load_scenario\n")
    try:
        with pytest.raises(AssertionError, match="_layout_probe.py:2"):
            test_every_import_points_down_or_stays_in_its_room()
    finally:
        bad.unlink()


# What a role loads at start-up beyond its imports: the evaluator builds its server circuit lazily.
START = {"evaluator.__main__": "from credit_model.deployment import load_deployment; import tempfile; "
                               "load_deployment().circuit_server(True, __import__('pathlib').Path(tempfile.mkdtemp()))"}


@pytest.mark.parametrize("module", ["parties.user", "parties.bank", "parties.agency", "evaluator.__main__"])
def test_a_role_imports_nothing_of_training(module):
    """Imported in a fresh interpreter (and, for the evaluator, with its circuit built), a role pulls in
    credit_model's runtime and shared modules but nothing of training/ (nor Concrete ML, scikit-learn, pandas or
    torch), which keeps its start-up at its measured figure."""
    code = (f"import sys, json; import {module}; {START.get(module, 'pass')}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('credit_model', 'concrete', 'sklearn', 'pandas', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    runtime = [m for m in modules if m.startswith("credit_model.runtime.")]
    assert "credit_model.deployment" in modules and runtime, modules  # it saw the role's own model code
    heavy = [m for m in modules if m.startswith(("credit_model.training", "concrete.ml", "concrete.fhe", "sklearn",
                                                 "pandas", "torch"))]
    assert not heavy, f"{module} imports {heavy}"

"""The layers of DESIGN section 2 where import-linter cannot look, checked by `make lint`.

import-linter analyses packages only: the top-level modules (config.py, worker.py,
starter.py...) are nodes it sees imported but not modules whose own imports it reads. This
applies the same ``layers`` contract, read from pyproject.toml, to each top-level module's
imports (lazy ones included), and keeps them and the simulators apart both ways. It also
holds activities/ to activity classes: every module there defines one.

    python -m tests.layers
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMULATORS = "simulators"


def layers(root: Path = ROOT) -> dict[str, int]:
    """Each name of the ``layers`` contract with its depth (0 is the top)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    depth: dict[str, int] = {}
    for i, layer in enumerate(contract["layers"]):
        for name in layer.split("|"):
            depth[name.strip().strip("()")] = i
    return depth


def top_level_modules(root: Path = ROOT) -> list[str]:
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return list(config["py-modules"])


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import in ``path``, lazy ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def layer_problems(root: Path = ROOT) -> list[str]:
    depth = layers(root)
    problems = []
    for module in top_level_modules(root):
        if module not in depth:
            problems.append(f"{module}.py is in no layer of pyproject.toml's layers contract")
            continue
        for line, name in imported(root / f"{module}.py"):
            if name == SIMULATORS:
                problems.append(f"{module}.py:{line} imports the simulators")
            elif name in depth and name != module and depth[name] <= depth[module]:
                problems.append(f"{module}.py:{line} imports {name}, not in a layer below")
    # import-linter forbids the simulators the packages; these see the top-level modules too.
    for path in sorted((root / SIMULATORS).glob("*.py")):
        for line, name in imported(path):
            if name in depth:
                problems.append(f"{SIMULATORS}/{path.name}:{line} imports {name} of the product")
    return problems


def activity_problems(root: Path = ROOT) -> list[str]:
    """Modules of activities/ that define no ``@activity.defn`` method."""
    problems = []
    for path in sorted((root / "activities").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        defines = any(
            isinstance(decorator, ast.Attribute | ast.Call)
            and ast.unparse(decorator).startswith("activity.defn")
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for decorator in node.decorator_list
        )
        if not defines:
            problems.append(f"activities/{path.name} defines no activity (activity classes only)")
    return problems


def main() -> int:
    problems = layer_problems() + activity_problems()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

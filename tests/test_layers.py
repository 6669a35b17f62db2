"""DESIGN section 2's layers where import-linter cannot look (tests/layers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests import layers


def test_every_top_level_module_imports_only_layers_below_it() -> None:
    assert layers.layer_problems() == []


def test_activities_holds_activity_classes_only() -> None:
    assert layers.activity_problems() == []


def test_an_entry_point_importing_another_or_a_simulator_is_refused(tmp_path: Path) -> None:
    shutil.copy(layers.ROOT / "pyproject.toml", tmp_path)
    for module in layers.top_level_modules():
        (tmp_path / f"{module}.py").write_text("")
    (tmp_path / "stack.py").write_text("import config\nimport demo\n")  # layers below
    (tmp_path / "worker.py").write_text("def run():\n    from starter import exit_with\n")
    (tmp_path / "demo.py").write_text("import simulators.windows\n")
    (tmp_path / "simulators").mkdir()
    (tmp_path / "simulators" / "telna.py").write_text("from ports import free_port\n")
    assert layers.layer_problems(tmp_path) == [
        "worker.py:2 imports starter, not in a layer below",
        "demo.py:1 imports the simulators",
        "simulators/telna.py:1 imports ports of the product",
    ]


def test_a_module_of_activities_without_an_activity_is_refused(tmp_path: Path) -> None:
    (tmp_path / "activities").mkdir()
    (tmp_path / "activities" / "helpers.py").write_text("def helper() -> None: ...\n")
    (tmp_path / "activities" / "work.py").write_text(
        "from temporalio import activity\n\n"
        "class Work:\n    @activity.defn(name='work')\n    async def work(self) -> None: ...\n"
    )
    assert layers.activity_problems(tmp_path) == [
        "activities/helpers.py defines no activity (activity classes only)"
    ]

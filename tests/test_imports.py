"""Imports that run one way and stay light: planning, the CLI, the run's orchestration and the backend seam import
neither torch nor transformers (checked in a fresh interpreter), and no module imports another in a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kanana_longctx"

LIGHT = [
    "kanana_longctx.plan", "kanana_longctx.plan.dims", "kanana_longctx.plan.flops", "kanana_longctx.plan.memory",
    "kanana_longctx.plan.reuse", "kanana_longctx.cli", "kanana_longctx.cli.niah_cmd", "kanana_longctx.cli.config_cmd",
    "kanana_longctx.cli.plot_cmd", "kanana_longctx.cli.bench_cmd", "kanana_longctx.run.runner",
    "kanana_longctx.run.distributed", "kanana_longctx.backends.base", "kanana_longctx.backends.registry",
    "kanana_longctx.kernels.choice", "kanana_longctx.scoring", "kanana_longctx.results", "kanana_longctx.options",
    "kanana_longctx.backends.endpoint", "kanana_longctx.cli.endpoint_options", "kanana_longctx.endpoint",
]


def test_planning_the_cli_and_the_runner_import_no_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("kanana_longctx")}


@pytest.mark.parametrize(
    "room, never",
    [
        ("plan", ("kanana_longctx.run", "kanana_longctx.backends", "kanana_longctx.fastpath", "kanana_longctx.kernels")),
        ("kernels", ("kanana_longctx.run", "kanana_longctx.backends", "kanana_longctx.fastpath")),
        ("fastpath", ("kanana_longctx.run", "kanana_longctx.backends")),
        ("backends", ("kanana_longctx.run", "kanana_longctx.cli")),
    ],
)
def test_rooms_import_downward_only(room, never):
    """run -> backends -> fastpath -> kernels, and everything -> plan: never back up."""
    for path in (PACKAGE / room).glob("*.py"):
        upward = sorted(n for n in _imports(path) if n.startswith(never))
        assert not upward, f"{path.name} imports {upward}"

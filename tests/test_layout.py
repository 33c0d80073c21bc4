"""The layout rule the README states, read from the import graph (every ``import`` and ``from ... import`` in the
source, module level or inside functions): imports run one way, and the CLI holds no workflow logic."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Which of Vigil's packages each package may import (besides itself). Everything else is a violation.
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "training": {"models"},
    "evaluation": {"models"},
    "fairness": {"models", "evaluation"},
    "serving": {"models"},
    "workflows": {"models", "training", "evaluation", "fairness", "serving"},
    # the command line: parse, call a workflow (or, for the admin commands, the service's stores), print
    "vigil": {"workflows", "serving", "models"},
    "benchmarks": {"models", "training", "evaluation", "fairness", "serving", "workflows"},
}
#: Third-party packages a package must not import (models is the contract: no web framework, no tracking).
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {"models": {"fastapi", "mlflow", "starlette"}, "serving": {"mlflow"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _edges(root: Path = REPO) -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the files that make that import, for the packages of ``root``."""
    edges: dict[tuple[str, str], list[str]] = {}
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            for target in _imports(path):
                if target != package and (target in ALLOWED or target in FORBIDDEN_THIRD_PARTY.get(package, ())):
                    edges.setdefault((package, target), []).append(str(path.relative_to(root)))
    return edges


@functools.cache
def _repo_edges() -> dict[tuple[str, str], list[str]]:
    return _edges(REPO)


def test_imports_run_one_way():
    edges = _repo_edges()
    wrong = {f"{a} -> {b}": files for (a, b), files in edges.items() if b not in ALLOWED[a] and b in ALLOWED}
    assert wrong == {}
    assert ("workflows", "training") in edges and ("vigil", "workflows") in edges  # the rule is read, not vacuous


@pytest.mark.parametrize("package", sorted(FORBIDDEN_THIRD_PARTY))
def test_contract_packages_do_not_import_frameworks_they_must_not_need(package):
    edges = _repo_edges()
    assert {b: files for (a, b), files in edges.items() if a == package and b in FORBIDDEN_THIRD_PARTY[package]} == {}


def test_the_cli_holds_no_workflow_logic():
    """vigil/ is the command line only: no module but cli.py, and cli.py imports no training, evaluation or
    fairness code (it calls workflows/)."""
    assert sorted(p.name for p in (REPO / "vigil").glob("*.py")) == ["__init__.py", "cli.py"]
    assert not _imports(REPO / "vigil" / "cli.py") & {"training", "evaluation", "fairness", "torch", "mlflow"}


def test_a_violation_is_seen(tmp_path):
    """The check itself can fail: a models module importing serving is reported."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("from serving.api.app import create_app\n", encoding="utf-8")
    assert _edges(tmp_path) == {("models", "serving"): ["models/bad.py"]}

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


def _defines_router(path: Path) -> bool:
    """Whether ``path`` is a route module: it assigns a module-level ``router``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "router" for t in node.targets)
        for node in tree.body
    )


def _modules_imported(path: Path, root: Path) -> set[str]:
    """Every dotted module name ``path`` imports (relative imports resolved; ``from a import b`` gives ``a`` and
    ``a.b``, since ``b`` may be a module)."""
    package = path.relative_to(root).parent.parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _route_imports(root: Path = REPO) -> dict[str, list[str]]:
    """serving module -> the route modules of serving/api/ it imports. Only the app factory (serving/api/app.py)
    may import them: what two routes share lives in a module that is not a route (e.g. serving/api/json_body.py,
    serving/api/triage_scoring.py, serving/imaging_result.py)."""
    api = root / "serving" / "api"
    routes = {f"serving.api.{p.stem}" for p in api.glob("*.py") if _defines_router(p)}
    found: dict[str, list[str]] = {}
    for path in sorted((root / "serving").rglob("*.py")):
        if path == api / "app.py":
            continue
        own = ".".join(path.relative_to(root).with_suffix("").parts)
        imported = sorted((_modules_imported(path, root) & routes) - {own})
        if imported:
            found[str(path.relative_to(root))] = imported
    return found


def test_route_modules_do_not_import_each_other():
    routes = {p.stem for p in (REPO / "serving" / "api").glob("*.py") if _defines_router(p)}
    assert routes >= {"cds", "dicomweb", "imaging", "ops", "triage"}  # the routes are found, so the check reads them
    assert _route_imports() == {}


def test_a_route_importing_a_route_is_seen(tmp_path):
    """The check itself can fail: a route importing another, absolutely or relatively, is reported."""
    api = tmp_path / "serving" / "api"
    api.mkdir(parents=True)
    (api / "triage.py").write_text("router = object()\n", encoding="utf-8")
    (api / "cds.py").write_text("from serving.api.triage import read_json\nrouter = object()\n", encoding="utf-8")
    (api / "ops.py").write_text("from . import triage\nrouter = object()\n", encoding="utf-8")
    (api / "shared.py").write_text("import serving.api.cds\n", encoding="utf-8")
    (api / "app.py").write_text("from serving.api import cds, ops, triage\n", encoding="utf-8")  # the factory may
    assert _route_imports(tmp_path) == {
        "serving/api/cds.py": ["serving.api.triage"],
        "serving/api/ops.py": ["serving.api.triage"],
        "serving/api/shared.py": ["serving.api.cds"],
    }


#: vigil/'s modules: the parser and entry point (cli.py), the commands by group, and how a command fails.
CLI_MODULES = ["__init__.py", "cli.py", "commands_admin.py", "commands_models.py", "commands_service.py", "output.py"]


def test_the_cli_holds_no_workflow_logic():
    """vigil/ is the command line only: no module but those of :data:`CLI_MODULES`, and none of them imports
    training, evaluation or fairness code (they call workflows/)."""
    assert sorted(p.name for p in (REPO / "vigil").rglob("*.py")) == CLI_MODULES
    for path in (REPO / "vigil").glob("*.py"):
        assert not _imports(path) & {"training", "evaluation", "fairness", "torch", "mlflow"}, path.name


def test_a_violation_is_seen(tmp_path):
    """The check itself can fail: a models module importing serving is reported."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("from serving.api.app import create_app\n", encoding="utf-8")
    assert _edges(tmp_path) == {("models", "serving"): ["models/bad.py"]}


#: Sub-packages by task that must not import each other (what both need lives one level up, e.g.
#: models/onnx_file.py, models/model_card.py), and the store, which imports no other part of the service.
INDEPENDENT: dict[str, set[str]] = {
    "models.triage": {"models.imaging"},
    "models.imaging": {"models.triage"},
    "serving.store": {"serving.api", "serving.fhir", "serving.dicom_node"},
}


def _subpackage_edges(root: Path = REPO) -> dict[str, list[str]]:
    """'<file>' -> the forbidden sub-packages it imports, by :data:`INDEPENDENT`."""
    found: dict[str, list[str]] = {}
    for package, forbidden in INDEPENDENT.items():
        for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
            hits = {f for f in forbidden for m in _modules_imported(path, root) if m == f or m.startswith(f + ".")}
            if hits:
                found[str(path.relative_to(root))] = sorted(hits)
    return found


def test_task_subpackages_do_not_import_each_other():
    assert all((REPO / p.replace(".", "/")).is_dir() for p in INDEPENDENT)  # the packages exist, so they are read
    assert _subpackage_edges() == {}


def test_a_subpackage_violation_is_seen(tmp_path):
    (tmp_path / "models" / "imaging").mkdir(parents=True)
    (tmp_path / "models" / "imaging" / "bad.py").write_text("from models.triage.onnx import x\n", encoding="utf-8")
    assert _subpackage_edges(tmp_path) == {"models/imaging/bad.py": ["models.triage"]}


#: A library module is read in one sitting: at most this many lines. Declarative catalogues (tables of terms, not
#: logic) are exempt, by name.
MAX_MODULE_LINES = 400
CATALOGUES = {"models/triage/complaint_terms.py"}
LIBRARY_PACKAGES = ("models", "training", "evaluation", "fairness", "serving", "workflows", "vigil")


def _long_modules(root: Path = REPO) -> dict[str, int]:
    found = {}
    for package in LIBRARY_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = str(path.relative_to(root))
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES and name not in CATALOGUES:
                found[name] = lines
    return found


def test_no_library_module_is_longer_than_the_limit():
    assert all((REPO / c).is_file() for c in CATALOGUES)  # an exemption names a file that exists
    assert _long_modules() == {}


def test_a_long_module_is_seen(tmp_path):
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    assert _long_modules(tmp_path) == {"serving/long.py": MAX_MODULE_LINES + 1}


def test_the_slow_tier_collects_every_module_with_a_slow_test(tmp_path):
    """`-m slow` skips the import of modules without the text ``mark.slow``; a slow test marked some other way would
    then run in no tier, so the fast tier's collection refuses it, naming the module."""
    from types import SimpleNamespace

    from tests.conftest import pytest_collection_modifyitems, pytest_ignore_collect

    marked, hidden, fast = (tmp_path / f"test_{n}.py" for n in ("marked", "hidden", "fast"))
    marked.write_text("import pytest\npytestmark = pytest.mark.slow\n")
    hidden.write_text("def test_x():\n    pass\n")  # its slow marker comes from elsewhere (a conftest, say)
    fast.write_text("def test_y():\n    pass\n")
    slow_tier = SimpleNamespace(getoption=lambda name, default=None: "slow")
    assert [pytest_ignore_collect(p, slow_tier) for p in (marked, fast)] == [False, True]
    assert pytest_ignore_collect(tmp_path / "conftest.py", slow_tier) is None  # not a test module: pytest decides
    fast_tier = SimpleNamespace(getoption=lambda name, default=None: "not slow")
    assert pytest_ignore_collect(fast, fast_tier) is None

    def item(path, slow):
        return SimpleNamespace(path=path, nodeid=f"{path.name}::t", fixturenames=(), get_closest_marker=lambda m: slow)

    pytest_collection_modifyitems(fast_tier, [item(marked, True), item(fast, False)])  # consistent: no error
    with pytest.raises(pytest.UsageError, match=r"test_hidden\.py"):
        pytest_collection_modifyitems(fast_tier, [item(marked, True), item(hidden, True)])

"""The package and the service meet only at the contract.

Every import statement is read with ``ast`` (at any depth: inside functions too): the
``promotion`` package never imports ``services``, and the service (``services/router``)
imports nothing of ``promotion`` but the contract (``promotion.contract``) and the
registry adapter (``promotion.registry``). The example models' training code beside it
(``services/fraud``, ``services/examples``) is a team's code: it may use the package's
public API, as a team's training job does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVICE_MAY_IMPORT = ("promotion.contract", "promotion.registry")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file; ``from pkg import name`` counts as
    ``pkg.name`` when ``pkg`` is a top-level package (it may name a submodule)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if "." in node.module:
                found.append((node.lineno, node.module))
            else:
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _within(module: str, root: str) -> bool:
    return module == root or module.startswith(root + ".")


def package_violations(path: Path) -> list[str]:
    return [f"{line} imports {mod}" for line, mod in imported_modules(path) if _within(mod, "services")]


def service_violations(path: Path) -> list[str]:
    return [f"{line} imports {mod}" for line, mod in imported_modules(path)
            if _within(mod, "promotion") and not any(_within(mod, ok) for ok in SERVICE_MAY_IMPORT)]


def _check(folder: str, rule) -> list[str]:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return [f"{p.relative_to(REPO)}:{v}" for p in files for v in rule(p)]


def test_the_package_never_imports_the_service():
    assert _check("promotion", package_violations) == []


def test_the_service_imports_only_the_contract_and_the_registry_adapter():
    assert _check("services/router", service_violations) == []


@pytest.mark.parametrize("source, rule, bad", [
    ("def f():\n    from services.router import worker\n", package_violations, True),
    ("import services.router.process as p\n", package_violations, True),
    ("from services import fraud\n", package_violations, True),
    ("from promotion.contract import launch\n", package_violations, False),
    ("def f():\n    from promotion._internal.digest import tree_digest\n", service_violations, True),
    ("from promotion import errors\n", service_violations, True),
    ("import promotion.gates\n", service_violations, True),
    ("from promotion.registry import Registry, RegistryError\n", service_violations, False),
    ("from promotion import contract\nfrom promotion.contract.digest import tree_digest\n", service_violations, False),
])
def test_the_rules_see_every_form_of_import(tmp_path, source, rule, bad):
    f = tmp_path / "m.py"
    f.write_text(source)
    assert bool(rule(f)) is bad

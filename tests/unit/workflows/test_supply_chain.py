"""Supply chain: what the workflows and ``make`` install, and who must review it.

Every workflow installs with ``make install``; these tests hold that install to the lock
(``uv.lock``, with hashes, matching ``pyproject.toml``), hold the bench-only environment to
its own hashed lock, and hold CODEOWNERS to covering everything that decides a verdict.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from promotion.github.codeowners import owners
from tests.unit.workflows.conftest import ROOT

LOCK = ROOT / "uv.lock"
UV_PIN = ROOT / ".ci" / "requirements-uv.txt"
BENCH_LOCK = ROOT / "bench" / "requirements-evidently.txt"
BENCH_IN = ROOT / "bench" / "requirements-evidently.in"
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def uv() -> str:
    found = Path(sys.executable).with_name("uv")
    if not found.exists():
        found = Path(shutil.which("uv") or "uv")
    if not found.exists():
        pytest.fail("uv is not installed (make install puts it in the venv)")
    return str(found)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock() -> dict:
    return tomllib.loads(LOCK.read_text())


def _key(name: str, specifier: str = "", marker: str = "", extras=()) -> tuple:
    return (canonicalize_name(name), tuple(sorted(extras)), str(SpecifierSet(specifier)), marker or "")


def _declared() -> set[tuple]:
    """pyproject's dependencies (and extras, as ``extra == '<name>'`` markers), as uv records them."""
    project = pyproject()["project"]
    found = set()
    lines = [(r, "") for r in project["dependencies"]]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        lines += [(r, f"extra == '{extra}'") for r in reqs]
    for text, marker in lines:
        req = Requirement(text)
        own = str(req.marker) if req.marker else ""
        found.add(_key(req.name, str(req.specifier), " and ".join(m for m in (own, marker) if m), req.extras))
    return found


def _locked_requirements() -> set[tuple]:
    project = next(p for p in lock()["package"] if p["name"] == "promotion")
    return {_key(r["name"], r.get("specifier", ""), r.get("marker", ""), r.get("extras", ()))
            for r in project["metadata"]["requires-dist"]}


# -- the lock ------------------------------------------------------------------------

def test_the_lock_records_exactly_the_dependencies_pyproject_declares():
    declared, locked = _declared(), _locked_requirements()
    assert declared - locked == set(), "in pyproject.toml, not in uv.lock: run `uv lock`"
    assert locked - declared == set(), "in uv.lock, no longer in pyproject.toml: run `uv lock`"


def test_uv_agrees_offline_that_the_lock_is_up_to_date():
    proc = subprocess.run([uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_dependency_added_without_relocking_is_caught(tmp_path):
    # proves the two checks above can fail: the same checks on a drifted copy
    (tmp_path / "uv.lock").write_text(LOCK.read_text())
    text = (ROOT / "pyproject.toml").read_text()
    assert '"numpy>=1.26",' in text
    (tmp_path / "pyproject.toml").write_text(text.replace('"numpy>=1.26",', '"numpy>=1.26",\n    "tabulate>=0.9",'))
    proc = subprocess.run([uv(), "lock", "--check", "--offline"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert (tmp_path / "uv.lock").read_text() == LOCK.read_text(), "--check must never rewrite the lock"


def test_every_locked_distribution_comes_from_pypi_with_a_sha256():
    missing = []
    for pkg in lock()["package"]:
        if pkg["source"].get("editable") == ".":
            continue  # the project itself
        assert pkg["source"] == {"registry": "https://pypi.org/simple"}, f"{pkg['name']}: {pkg['source']}"
        files = ([pkg["sdist"]] if "sdist" in pkg else []) + pkg.get("wheels", [])
        if not files or not all(re.fullmatch(r"sha256:[0-9a-f]{64}", f.get("hash", "")) for f in files):
            missing.append(pkg["name"])
    assert missing == []


def test_the_installer_tools_are_locked_and_uv_is_bootstrapped_at_the_same_version_with_hashes():
    versions = {p["name"]: p["version"] for p in lock()["package"]}
    for tool in ("uv", "pip", "setuptools"):
        assert tool in versions, f"{tool} is not in the lock's tools group"
    text = UV_PIN.read_text()
    pins = re.findall(r"^uv==(\S+)", text, re.M)
    assert pins == [versions["uv"]], f"{UV_PIN.name} pins {pins}, uv.lock has {versions['uv']}"
    assert len(HASH.findall(text)) >= 2
    assert "uv==" + versions["uv"] in pyproject()["dependency-groups"]["tools"]


# -- make install --------------------------------------------------------------------

def _install_commands(tmp_path) -> list[str]:
    """What ``make install`` would run for a fresh venv (make -n prints, runs nothing)."""
    proc = subprocess.run(["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def test_make_install_installs_only_from_the_lock_with_hashes(tmp_path):
    commands = _install_commands(tmp_path)
    installs = [c for c in commands if re.search(r"\b(install|sync|add)\b", c)]
    venv = str(tmp_path / "venv")
    assert installs == [
        f"{venv}/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes "
        "-r .ci/requirements-uv.txt",
        f"{venv}/bin/uv pip sync --quiet --python {venv}/bin/python --require-hashes {venv}/requirements.lock.txt",
        f"{venv}/bin/uv pip install --quiet --python {venv}/bin/python --no-deps --no-build-isolation -e .",
    ], "every install is hash-checked from a lock; the project alone is installed without one"
    export = [c for c in commands if " export " in c]
    assert len(export) == 1 and "--locked" in export[0] and "--no-hashes" not in export[0]
    assert "--extra test" in export[0] and "--group tools" in export[0]


def test_make_install_reinstalls_when_the_lock_changes():
    text = (ROOT / "Makefile").read_text()
    rule = next(line for line in text.splitlines() if line.startswith("$(STAMP):"))
    assert "pyproject.toml" in rule and "uv.lock" in rule and ".ci/requirements-uv.txt" in rule


# -- the bench-only environment -------------------------------------------------------

def _pins(text: str) -> dict[str, str]:
    return {canonicalize_name(m.group(1)): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+?)(?:\s|$)", text, re.M)}


def test_the_bench_environment_is_pinned_with_hashes_and_satisfies_its_inputs():
    text = BENCH_LOCK.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("-o ")) + 1:].strip())
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9._-]+==\S+", entry), f"not an exact pin: {entry.splitlines()[0]}"
        assert HASH.search(entry), f"no hash: {entry.splitlines()[0]}"
    pins = _pins(text)
    for line in BENCH_IN.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name in pins and req.specifier.contains(pins[name]), f"{line}: locked {pins.get(name)}"


def test_the_bench_runs_the_projects_numpy():
    project = {canonicalize_name(p["name"]): p["version"] for p in lock()["package"]}
    assert _pins(BENCH_LOCK.read_text())["numpy"] == project["numpy"]


def test_the_bench_venv_is_installed_from_its_lock_and_rebuilt_when_the_lock_changes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_drift", ROOT / "bench" / "drift.py")
    drift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drift)
    monkeypatch.setattr(drift, "VENV", tmp_path / "bench-venv")
    ran = []

    def run(cmd, check=False, **kwargs):
        ran.append([str(c) for c in cmd])
        if "venv" in cmd:
            (tmp_path / "bench-venv" / "bin").mkdir(parents=True, exist_ok=True)
            (tmp_path / "bench-venv" / "bin" / "python").touch()
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(drift.subprocess, "run", run)
    drift.ensure_venv()
    install = ran[-1]
    assert "--require-hashes" in install and str(BENCH_LOCK) in install
    assert not any(a == "evidently" or a.startswith("numpy==") for a in install), "nothing unpinned"
    ran.clear()
    drift.ensure_venv()
    assert ran == [], "an up-to-date bench venv is reused"
    (tmp_path / "bench-venv" / ".requirements.sha256").write_text("0" * 64 + "\n")
    drift.ensure_venv()
    assert ran and "--require-hashes" in ran[-1], "a venv built from another lock is rebuilt"


# -- CODEOWNERS ----------------------------------------------------------------------

GOVERNED = (
    ".github/CODEOWNERS", ".github/workflows/gates.yml", "promotion/cli.py", "promotion/gates/approvals.py",
    "promotion/records/verify.py", "services/router/worker.py", "policies/prod.yaml", "environments/trust.yaml",
    "environments/records/prod/0001.json", "environments/prod.yaml", "Makefile", "pyproject.toml", "uv.lock",
    "bench/drift.py", "bench/requirements-evidently.txt", ".ci/run", ".ci/requirements-uv.txt",
    "tests/unit/workflows/test_supply_chain.py",
)


@pytest.mark.parametrize("path", GOVERNED)
def test_codeowners_names_an_owner_for_everything_that_decides_a_verdict(path):
    text = (ROOT / ".github" / "CODEOWNERS").read_text()
    assert owners(text, path), f"{path} has no code owner: a change to it needs only ordinary approvals"


def test_signing_keys_and_prod_need_the_release_managers_too():
    text = (ROOT / ".github" / "CODEOWNERS").read_text()
    for path in ("environments/trust.yaml", "environments/prod.yaml", "policies/prod.yaml"):
        assert "your-org/ml-release-managers" in owners(text, path), path


def test_the_parser_used_above_finds_no_owner_for_an_uncovered_path():
    # the coverage test can fail: a path no rule matches has no owner
    assert owners("/policies/ @your-org/ml-platform\n", "promotion/cli.py") == []

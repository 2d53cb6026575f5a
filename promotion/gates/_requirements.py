"""A model's declared requirements against the Python environment that will serve it.

Where MLflow writes them, in the model directory: ``requirements.txt``, the
``dependencies`` of ``python_env.yaml`` and the ``pip`` list of ``conda.yaml`` (all three
are read; a requirement declared in any of them must hold), and the ``python_version``
of the ``python_function`` flavour in ``MLmodel``.

A requirement holds when the installed distribution of that name (``importlib.metadata``)
satisfies its specifier (``packaging``: ``scikit-learn==1.9.1``, ``pandas>=2,<3``;
pre-releases count). A distribution that is not installed under the requirement's name
may be installed under another that provides the same import package (``xgboost`` is
satisfied by ``xgboost-cpu``'s version). Markers are evaluated for this interpreter (a
requirement for another platform is skipped); ``-r other.txt`` is followed inside the
model directory; other pip options (``--index-url``...) and ``-c`` constraints are
ignored; an editable or unparseable line cannot be checked and is reported as a problem.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REQUIREMENT_FILES = ("requirements.txt", "python_env.yaml", "conda.yaml")
_MAX_INCLUDE_DEPTH = 5


@dataclass(frozen=True)
class Declared:
    """One requirement line and where it was declared."""

    text: str
    file: str
    line: int


@dataclass
class Verdicts:
    """What the declared requirements say, checked against this interpreter's environment."""

    checked: list[str] = field(default_factory=list)        # "scikit-learn 1.9.1 (scikit-learn)"
    unmet: list[str] = field(default_factory=list)          # "requirements.txt:2 scikit-learn==1.8.0: installed 1.9.1"
    problems: list[str] = field(default_factory=list)       # lines that cannot be checked
    sources: list[str] = field(default_factory=list)        # files read


def _strip(line: str) -> str:
    return re.split(r"(^|\s)#", line, maxsplit=1)[0].strip()


def _from_text(path: Path, root: Path, shown: str, depth: int, out: list[Declared], problems: list[str]) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{shown}: cannot read ({exc.__class__.__name__})")
        return
    for i, raw in enumerate(lines, 1):
        line = _strip(raw)
        if not line:
            continue
        include = re.match(r"^(-r|--requirement)[\s=]+(\S+)$", line)
        if include:
            _include(include.group(2), path, root, f"{shown}:{i}", depth, out, problems)
        elif line.startswith(("-e", "--editable")):
            problems.append(f"{shown}:{i} {line}: an editable requirement cannot be checked")
        elif line.startswith("-"):
            continue  # -c constraints, --index-url...: not requirements of the model
        else:
            out.append(Declared(line, shown, i))


def _include(name: str, parent: Path, root: Path, where: str, depth: int, out: list[Declared],
             problems: list[str]) -> None:
    target = (parent.parent / name).resolve()
    if depth >= _MAX_INCLUDE_DEPTH:
        problems.append(f"{where} -r {name}: included more than {_MAX_INCLUDE_DEPTH} levels deep")
    elif root.resolve() not in target.parents or not target.is_file():
        problems.append(f"{where} -r {name}: not a file inside the model directory")
    else:
        _from_text(target, root, target.relative_to(root.resolve()).as_posix(), depth + 1, out, problems)


def _from_yaml(path: Path, root: Path, out: list[Declared], problems: list[str]) -> None:
    """``dependencies`` of python_env.yaml, the ``pip`` list of conda.yaml."""
    from promotion._internal import yamlio
    from promotion.errors import ConfigError

    shown = path.name
    try:
        doc = yamlio.load(path, shown)
    except ConfigError as exc:
        problems.append(exc.diagnostics().splitlines()[0])
        return
    data = doc.data if isinstance(doc.data, dict) else {}
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        problems.append(f"{shown}:{doc.line_of(('dependencies',))} dependencies: not a list")
        return
    pip_lists = [(("dependencies",), deps)] if path.name == "python_env.yaml" else [
        (("dependencies", i, "pip"), d["pip"]) for i, d in enumerate(deps) if isinstance(d, dict) and "pip" in d]
    for at, items in pip_lists:
        if not isinstance(items, list):
            problems.append(f"{shown}:{doc.line_of(at)} {'.'.join(map(str, at))}: not a list")
            continue
        for j, item in enumerate(items):
            line = doc.line_of(at + (j,))
            text = _strip(str(item))
            include = re.match(r"^(-r|--requirement)[\s=]+(\S+)$", text)
            if include:
                if include.group(2) != "requirements.txt":  # requirements.txt is read on its own
                    _include(include.group(2), path, root, f"{shown}:{line}", 0, out, problems)
            elif text.startswith(("-e", "--editable")):
                problems.append(f"{shown}:{line} {text}: an editable requirement cannot be checked")
            elif text and not text.startswith("-"):
                out.append(Declared(text, shown, line))


def declared(model_dir: Path) -> tuple[list[Declared], list[str], list[str]]:
    """(requirements, problems, files read) of the model in ``model_dir``."""
    root = Path(model_dir)
    out: list[Declared] = []
    problems: list[str] = []
    sources = []
    for name in REQUIREMENT_FILES:
        path = root / name
        if not path.is_file():
            continue
        sources.append(name)
        if name.endswith(".txt"):
            _from_text(path, root, name, 0, out, problems)
        else:
            _from_yaml(path, root, out, problems)
    return out, problems, sources


def installed_version(name: str) -> tuple[str, str] | None:
    """(distribution, version) installed for requirement ``name``, or None."""
    from importlib import metadata

    try:
        return name, metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    module = re.sub(r"[-.]+", "_", name).lower()
    for dist in sorted(metadata.packages_distributions().get(module, ())):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check(model_dir: Path, ignore: tuple[str, ...] = ()) -> Verdicts:
    """Every declared requirement of the model in ``model_dir`` against this environment."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    reqs, problems, sources = declared(model_dir)
    result = Verdicts(problems=list(problems), sources=sources)
    skip = {canonicalize_name(n) for n in ignore}
    seen: set[tuple[str, str]] = set()
    for d in reqs:
        where = f"{d.file}:{d.line} {d.text}"
        try:
            req = Requirement(d.text)
        except InvalidRequirement as exc:
            result.problems.append(f"{where}: not a requirement ({str(exc).splitlines()[0][:120]})")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        if name in skip or (name, str(req.specifier)) in seen:
            continue
        seen.add((name, str(req.specifier)))
        found = installed_version(req.name)
        if found is None:
            result.unmet.append(f"{where}: not installed")
            continue
        dist, version = found
        via = "" if canonicalize_name(dist) == name else f" as {dist}"
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            result.unmet.append(f"{where}: installed {version}{via}")
        else:
            result.checked.append(f"{req.name}{req.specifier} ({version}{via})")
    return result


def python_mismatch(model_dir: Path) -> tuple[str | None, str]:
    """(the model's Python version, or None when it names none; this interpreter's version)."""
    from promotion._internal import yamlio
    from promotion.errors import ConfigError

    here = ".".join(map(str, sys.version_info[:3]))
    try:
        doc = yamlio.load(Path(model_dir) / "MLmodel", "MLmodel")
    except ConfigError:
        return None, here
    flavors = (doc.data or {}).get("flavors") if isinstance(doc.data, dict) else None
    pyfunc = (flavors or {}).get("python_function") if isinstance(flavors, dict) else None
    version = (pyfunc or {}).get("python_version") if isinstance(pyfunc, dict) else None
    return (str(version) if version else None), here

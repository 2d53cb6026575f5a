"""The artifact gate: is the version's artifact safe to load, and can this environment load it?

Serving any flavour means unpickling what a training job wrote, in the router and in the
gates that score the model. Before anything loads it, this gate scans every file of the
version's model directory (as downloaded from the registry, the bytes the lineage gate
hashes) with `picklescan <https://github.com/mmaitre314/picklescan>`_:

- a file that is a pickle (protocol 2+ header, a pickle file extension, or any file whose
  first pickle parses to its STOP opcode, whatever its name), a zip archive (skops, numpy
  ``.npz``, PyTorch) or a numpy ``.npy`` with objects is scanned for the globals it
  imports;
- ``artifact.pickle`` blocks on any import picklescan rates dangerous (``os.system``,
  ``subprocess.Popen``, ``builtins.eval``, ``posix``...), naming the file and the global:
  ``model.pkl: posix.system``; a symbolic link or an unreadable file blocks too;
- ``artifact.code``: the model brings Python code that runs at load: source files
  (``*.py``: a custom model from code, ``code_paths``), pickles that rebuild functions or
  classes by value (cloudpickle's ``_make_function``, ``types.CodeType``...), or a pyfunc
  ``loader_module`` outside ``mlflow``. A scanner cannot judge code; with ``allow_code:
  true`` (the default) the check passes and lists what will run, for the reviewer; with
  ``allow_code: false`` it blocks.

Then the model's declared requirements (:mod:`promotion.gates._requirements`):

- ``artifact.requirements`` blocks on each requirement of ``requirements.txt``,
  ``python_env.yaml`` or ``conda.yaml`` the serving environment does not satisfy (the
  Python environment the gate runs in: the project's locked environment, which the
  router runs in too), naming it: ``requirements.txt:2 scikit-learn==1.8.0: installed
  1.9.1``, ``requirements.txt:3 catboost: not installed``; ``ignore`` lists names not
  checked;
- ``artifact.python``: the ``python_version`` the model was saved with must have the
  serving interpreter's major.minor (pickles of one minor version often fail on another).

The drift and cost gates load models only after :func:`require_safe` (the same scan,
done once per version), whether or not the policy lists this gate.

Policy section (``gates.artifact``), with its defaults::

    allow_code: true
    requirements: true
    python: true
    ignore: []
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from promotion.errors import Error
from promotion.gates.base import Check, GateContext, GateResult, GateSpec

# cloudpickle and types globals that rebuild code by value: code, not an exploit by name
CODE_GLOBALS = {
    "cloudpickle.cloudpickle": {"_builtin_type", "_make_function", "_function_setstate", "_make_cell",
                                "_make_empty_cell", "subimport", "_make_skeleton_class", "_class_setstate",
                                "_make_dict_keys", "_make_dict_values", "_make_dict_items"},
    "cloudpickle.cloudpickle_fast": {"_function_setstate", "_class_setstate"},
    "types": {"CodeType", "FunctionType"},
}
_PICKLE_EXTS = {".pkl", ".pickle", ".joblib", ".dat", ".data", ".bin", ".pt", ".pth", ".ckpt", ".npy"}
_ZIP = b"PK\x03\x04"
_NUMPY = b"\x93NUMPY"


class UnsafeArtifact(Error):
    """A model artifact that must not be loaded."""


@dataclass(frozen=True)
class Finding:
    """One global a pickle imports, and where."""

    file: str
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.file}: {self.module}.{self.name}"


@dataclass(frozen=True)
class Scan:
    """What the scan of one model directory found."""

    scanner: str
    files: int                      # files scanned as pickles, archives or arrays
    total: int                      # files in the artifact
    unsafe: tuple[Finding, ...]     # dangerous imports
    code: tuple[str, ...]           # what brings code: "amount_rule.py (Python source)"
    errors: tuple[str, ...]         # files that could not be scanned

    @property
    def safe(self) -> bool:
        return not self.unsafe and not self.errors


@dataclass(frozen=True)
class ArtifactSettings:
    """``gates.artifact``."""

    allow_code: bool = True
    requirements: bool = True
    python: bool = True
    ignore: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "ArtifactSettings":
        return cls(bool(m.get("allow_code", True)), bool(m.get("requirements", True)), bool(m.get("python", True)),
                   tuple(m.get("ignore") or ()))


def _is_pickle_stream(path: Path) -> bool:
    """True when the file's first pickle parses to its STOP opcode (what ``pickle.load`` reads)."""
    import pickletools

    try:
        with open(path, "rb") as fh:
            for op, _, _ in pickletools.genops(fh):
                if op.name == "STOP":
                    return True
    except Exception:  # noqa: BLE001 - not a pickle: pickle.load would fail on it too
        return False
    return False


def _scan_file(path: Path, shown: str):
    """picklescan's result for one file, or None when the file is no pickle, archive or array."""
    from picklescan import scanner

    with open(path, "rb") as fh:
        head = fh.read(8)
    ext = path.suffix.lower()
    with open(path, "rb") as fh:
        if head.startswith(_ZIP):
            return scanner.scan_zip_bytes(fh, shown)
        if head.startswith(_NUMPY):
            return scanner.scan_numpy(fh, shown)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return scanner.scan_pickle_bytes(fh, shown)
    if ext in _PICKLE_EXTS or _is_pickle_stream(path):
        with open(path, "rb") as fh:
            return scanner.scan_bytes(fh, shown, ext if ext in _PICKLE_EXTS else None)
    return None


def scan_directory(model_dir: Path) -> Scan:
    """Scan every file under ``model_dir`` (see the module docstring)."""
    import logging
    from importlib import metadata

    from picklescan.scanner import SafetyLevel

    logging.getLogger("picklescan").setLevel(logging.CRITICAL)  # findings are reported as checks
    root = Path(model_dir)
    files, total, unsafe, code, errors = 0, 0, [], [], []
    for base, dirs, names in os.walk(root):
        for d in list(dirs):
            if (Path(base) / d).is_symlink():
                errors.append(f"{(Path(base) / d).relative_to(root).as_posix()}: a symbolic link")
                dirs.remove(d)
        for name in sorted(names):
            path = Path(base) / name
            shown = path.relative_to(root).as_posix()
            total += 1
            if path.is_symlink():
                errors.append(f"{shown}: a symbolic link")
                continue
            if path.suffix == ".py":
                code.append(f"{shown} (Python source)")
            try:
                result = _scan_file(path, shown)
            except Exception as exc:  # noqa: BLE001 - a file the scanner cannot read blocks
                errors.append(f"{shown}: cannot be scanned ({exc.__class__.__name__}: {str(exc)[:120]})")
                continue
            if result is None:
                continue
            files += 1
            by_value = False
            for g in result.globals:
                if g.name in CODE_GLOBALS.get(g.module, ()):
                    by_value = True
                elif g.safety is SafetyLevel.Dangerous:
                    unsafe.append(Finding(shown, g.module, g.name))
            if by_value:
                code.append(f"{shown} (pickled code: rebuilds functions or classes by value)")
    loader = _loader_module(root)
    if loader and not (loader == "mlflow" or loader.startswith("mlflow.")):
        code.append(f"MLmodel (loader_module {loader})")
    return Scan(f"picklescan {metadata.version('picklescan')}", files, total,
                tuple(sorted(set(unsafe), key=str)), tuple(code), tuple(errors))


def _loader_module(root: Path) -> str | None:
    from promotion._internal import yamlio
    from promotion.errors import ConfigError

    try:
        data = yamlio.load(root / "MLmodel", "MLmodel").data
    except ConfigError:
        return None
    pyfunc = ((data or {}).get("flavors") or {}).get("python_function") if isinstance(data, dict) else None
    return str(pyfunc.get("loader_module")) if isinstance(pyfunc, dict) and pyfunc.get("loader_module") else None


def scan(ctx: GateContext, version: int) -> Scan:
    """The scan of ``version``'s artifact, done once per gate run."""
    def run() -> Scan:
        path = ctx.artifact(version)
        try:
            return scan_directory(path)
        except Error:
            raise
        except Exception as exc:
            raise UnsafeArtifact(f"v{version}: the artifact cannot be scanned ({exc.__class__.__name__}: "
                                 f"{str(exc)[:200]})") from exc

    return ctx._once(("artifact_scan", version), run)


def require_safe(ctx: GateContext, version: int) -> None:
    """Raise :class:`UnsafeArtifact` unless ``version``'s artifact may be loaded in this process.

    Dangerous imports or unscannable files always refuse; code refuses when the policy's
    ``gates.artifact.allow_code`` is false.
    """
    found = scan(ctx, version)
    if found.unsafe:
        raise UnsafeArtifact(f"v{version} is not loaded: its artifact imports {_list(found.unsafe)} (unsafe)")
    if found.errors:
        raise UnsafeArtifact(f"v{version} is not loaded: {_list(found.errors)}")
    allow_code = ArtifactSettings.from_mapping(ctx.policy.gates.get("artifact") or {}).allow_code
    if found.code and not allow_code:
        raise UnsafeArtifact(f"v{version} is not loaded: it brings code ({_list(found.code)}) and the policy "
                             "sets gates.artifact.allow_code: false")


def _list(items, n: int = 5) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


class ArtifactGate(GateSpec):
    name = "artifact"
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "allow_code": {"type": "boolean"},
        "requirements": {"type": "boolean"},
        "python": {"type": "boolean"},
        "ignore": {"type": "array", "uniqueItems": True,
                   "items": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"}},
    }}
    defaults = {"allow_code": True, "requirements": True, "python": True, "ignore": []}
    Settings = ArtifactSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> GateResult:
        s = self.Settings.from_mapping(settings)
        version = ctx.env.model.version
        pol = lambda *k: ctx.policy_line("gates", "artifact", *k)  # noqa: E731
        found = scan(ctx, version)
        problems = [str(f) for f in found.unsafe] + list(found.errors)
        checks = [Check.judge(
            "artifact.pickle", len(problems), "0 unsafe", not problems,
            (f"v{version}: unsafe content: {_list(problems, 10)}" if problems else
             f"v{version}: {found.total} file(s), {found.files} of them pickles, archives or arrays, scanned with "
             f"{found.scanner}: no unsafe import"), *pol())]
        code_ok = s.allow_code or not found.code
        if found.code:
            msg = f"v{version} runs code at load: {_list(found.code, 10)}" + (
                "; review it" if s.allow_code else "; the policy allows no code (allow_code: false)")
        else:
            msg = f"v{version} brings no code of its own"
        checks.append(Check.judge("artifact.code", len(found.code), "allowed" if s.allow_code else "none",
                                  code_ok, msg, *pol("allow_code")))
        path = ctx.artifact(version)
        details: dict[str, Any] = {"scanner": found.scanner, "scanned_files": found.files,
                                   "unsafe": [str(f) for f in found.unsafe], "code": list(found.code),
                                   "errors": list(found.errors)}
        if s.requirements:
            checks.append(self._requirements(version, path, s, pol("requirements"), details))
        if s.python:
            checks.append(self._python(version, path, pol("python")))
        return GateResult(self.name, tuple(checks), details)

    def _requirements(self, version: int, path: Path, s: ArtifactSettings, where, details) -> Check:
        from promotion.gates import _requirements

        verdicts = _requirements.check(path, s.ignore)
        details["requirements"] = {"checked": verdicts.checked, "unmet": verdicts.unmet, "problems": verdicts.problems,
                                   "sources": verdicts.sources}
        bad = verdicts.unmet + verdicts.problems
        if not verdicts.sources:
            return Check.block("artifact.requirements", f"cannot decide: v{version} declares no requirements "
                               f"({', '.join(_requirements.REQUIREMENT_FILES)} absent)", "all met", *where)
        if bad:
            return Check.judge("artifact.requirements", len(bad), "all met", False,
                               f"v{version} needs what the serving environment lacks: {_list(bad, 10)}", *where)
        return Check.judge("artifact.requirements", 0, "all met", True,
                           f"v{version}'s {len(verdicts.checked)} requirement(s) are met: {_list(verdicts.checked, 8)}",
                           *where)

    def _python(self, version: int, path: Path, where) -> Check:
        from promotion.gates import _requirements

        theirs, here = _requirements.python_mismatch(path)
        if theirs is None:
            return Check.judge("artifact.python", None, f"{here.rsplit('.', 1)[0]}.x", True,
                               f"v{version} names no Python version; serving runs {here}", *where)
        same = theirs.split(".")[:2] == here.split(".")[:2]
        return Check.judge("artifact.python", theirs, f"{'.'.join(here.split('.')[:2])}.x", same,
                           f"v{version} was saved with Python {theirs}; serving runs {here}", *where)

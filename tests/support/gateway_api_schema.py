"""Validate rendered Gateway API manifests offline, two ways.

- :func:`npm_problems`: the official schema as shipped by npm
  ``@kubernetes-models/gateway-api`` (Gateway API v1.0 standard), installed from
  ``tools/k8s-validate/package-lock.json`` by ``make test`` (``npm ci --ignore-scripts``)
  and run by ``tools/k8s-validate/validate.mjs`` under Node. Missing Node or a missing
  package is a test failure, never a skip.
- :func:`crd_problems`: the ``openAPIV3Schema`` of the HTTPRoute CRD of the current
  release (v1.6.1), vendored next to the repository at ``../shared/vendor/`` where that
  folder exists (:func:`crd_schema` returns None elsewhere, and the caller skips).

Neither checks the CRDs' CEL rules (``x-kubernetes-validations``): only an API server does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "k8s-validate"
VALIDATOR = TOOL / "validate.mjs"
PACKAGE = TOOL / "node_modules" / "@kubernetes-models" / "gateway-api" / "package.json"
CRD_DIR = REPO.parent / "shared" / "vendor" / "gateway-api-v1.6.1"
HTTPROUTE_CRD = CRD_DIR / "gateway.networking.k8s.io_httproutes.yaml"


class ValidatorMissing(AssertionError):
    """Node or the pinned npm package is not installed: the check cannot run (a failure)."""


def npm_problems(docs: list[dict]) -> list[list[str]]:
    """Per document, the problems the npm package's schema (plus strict fields) finds."""
    node = shutil.which("node")
    if node is None:
        raise ValidatorMissing("node is not installed (Debian: apt-get install nodejs)")
    if not PACKAGE.exists():
        raise ValidatorMissing(f"{PACKAGE.relative_to(REPO)} missing: run `npm ci --ignore-scripts` in "
                               f"{TOOL.relative_to(REPO)} (make test does)")
    proc = subprocess.run([node, str(VALIDATOR), "--json", "-"], input=json.dumps(docs), capture_output=True,
                          text=True, timeout=60)
    if proc.returncode not in (0, 1):
        raise ValidatorMissing(f"validate.mjs exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return [r["errors"] for r in json.loads(proc.stdout)]


def installed_version() -> str:
    """The version of ``@kubernetes-models/gateway-api`` in node_modules."""
    return json.loads(PACKAGE.read_text())["version"]


@lru_cache(maxsize=None)
def crd_schema(version: str = "v1") -> dict | None:
    """The HTTPRoute CRD's openAPIV3Schema for ``version``; None without the vendored CRDs."""
    import yaml

    if not HTTPROUTE_CRD.exists():
        return None
    crd = yaml.safe_load(HTTPROUTE_CRD.read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{HTTPROUTE_CRD.name} has no version {version}")


def crd_problems(doc: dict, schema: dict) -> list[str]:
    """Problems of ``doc`` against the CRD schema (jsonschema, OpenAPI's ``nullable``
    ignored), plus fields the schema does not declare (strict field validation)."""
    from jsonschema import Draft7Validator

    found = [f"{'.'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}"
             for e in Draft7Validator(schema).iter_errors(doc)]
    _unknown(doc, schema, "", found)
    return found


def _unknown(value, schema: dict, path: str, out: list[str]) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _unknown(item, schema.get("items") or {}, f"{path}[{i}]", out)
        return
    if not isinstance(value, dict) or "properties" not in schema:
        return
    if schema.get("additionalProperties") or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    for key, item in value.items():
        at = f"{path}.{key}" if path else key
        if key not in schema["properties"]:
            out.append(f"{at}: unknown field")
        elif key != "metadata":  # ObjectMeta is not spelled out in a CRD
            _unknown(item, schema["properties"][key], at, out)

"""serving.kind is a typed field of the environment file: each kind has its own schema block;
an unknown kind or a field of another kind is a `file:line field` error, exit 2."""

from __future__ import annotations

import pytest

from promotion.cli import main
from promotion.config import Project
from promotion.errors import ConfigError, ServiceError
from promotion.traffic import KINDS, backend_class, backend_for
from promotion.traffic.base import TrafficBackend
from promotion.traffic.bentoml_router import BentoMLRouter
from promotion.traffic.envoy import EnvoyBackend

ENVOY = """serving:
  kind: envoy
  endpoint: http://127.0.0.1:10000
  admin: http://127.0.0.1:9901
  route_file: /var/lib/promotion/prod/envoy/route.json
  replicas:
    "1": [http://127.0.0.1:3101, http://127.0.0.1:3102]
    "2": [http://127.0.0.1:3201]
"""


def _serving(repo, block: str) -> None:
    path = repo / "environments" / "prod.yaml"
    text = path.read_text()
    start, end = text.index("serving:"), text.index("metrics:")
    path.write_text(text[:start] + block + "\n" + text[end:])


def _problems(repo) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Project(repo).environment("prod")
    return caught.value.problems


def test_no_kind_is_the_bentoml_router(repo):
    env = Project(repo).environment("prod")
    assert env.serving.kind == "bentoml"
    backend = backend_for(env)
    assert isinstance(backend, BentoMLRouter) and isinstance(backend, TrafficBackend)


def test_an_envoy_block_builds_the_envoy_backend(repo):
    _serving(repo, ENVOY)
    env = Project(repo).environment("prod")
    backend = backend_for(env)
    assert env.serving.kind == "envoy" and isinstance(backend, EnvoyBackend) and isinstance(backend, TrafficBackend)
    assert backend.replicas == {1: ["http://127.0.0.1:3101", "http://127.0.0.1:3102"], 2: ["http://127.0.0.1:3201"]}
    assert str(backend.route_file) == "/var/lib/promotion/prod/envoy/route.json"


def test_an_unknown_kind_is_a_file_line_error_and_exit_2(repo, capsys):
    _serving(repo, "serving:\n  kind: istio\n  endpoint: http://127.0.0.1:3000\n")
    assert _problems(repo) == ["environments/prod.yaml:13 serving.kind: must be one of 'bentoml', 'envoy', 'gateway-api'"]
    assert main(["--root", str(repo), "validate"]) == 2
    assert "environments/prod.yaml:13 serving.kind: must be one of" in capsys.readouterr().err


def test_a_field_of_another_kind_is_refused_with_its_line(repo):
    _serving(repo, ENVOY.replace("  replicas:", "  routing_key_header: X-Routing-Key\n  replicas:"))
    assert _problems(repo) == ["environments/prod.yaml:17 serving: unknown field(s): routing_key_header"]
    _serving(repo, "serving:\n  endpoint: http://127.0.0.1:3000\n  route_file: /x/route.json\n")
    assert _problems(repo) == ["environments/prod.yaml:14 serving: unknown field(s): route_file"]


def test_envoy_requires_its_fields_and_checks_them(repo):
    _serving(repo, "serving:\n  kind: envoy\n  endpoint: http://127.0.0.1:10000\n")
    problems = _problems(repo)
    assert all(p.startswith("environments/prod.yaml:12 serving: ") for p in problems)
    assert {p.split(": ", 1)[1] for p in problems} == {"admin is required", "route_file is required",
                                                       "replicas is required"}
    _serving(repo, ENVOY.replace('"2": [http://127.0.0.1:3201]', '"v2": [http://127.0.0.1:3201]'))
    assert any("serving.replicas" in p for p in _problems(repo))
    _serving(repo, ENVOY.replace("/var/lib/promotion/prod/envoy/route.json", "envoy/route.json"))
    assert any(p.startswith("environments/prod.yaml:16 serving.route_file:") for p in _problems(repo))


def test_envoy_admin_must_be_loopback_or_https(repo):
    # the admin interface has no authentication: plain http only on this machine
    _serving(repo, ENVOY.replace("admin: http://127.0.0.1:9901", "admin: http://envoy.internal:9901"))
    assert _problems(repo) == ["environments/prod.yaml:15 serving.admin: must be https:// (envoy.internal is not a "
                               "loopback host; plain http would send tokens and results in clear text)"]


def test_the_registry_fails_closed_and_names_the_kinds():
    assert set(KINDS) >= {"bentoml", "envoy"}
    with pytest.raises(ServiceError, match="unknown traffic backend kind 'istio'"):
        backend_class("istio")


def test_every_registered_kind_has_a_schema_block():
    from promotion.config import schema

    doc = schema("environment")
    assert set(KINDS) <= set(doc["properties"]["serving"]["properties"]["kind"]["enum"])
    for kind in doc["properties"]["serving"]["properties"]["kind"]["enum"]:
        assert f"serving_{kind.replace('-', '_')}" in doc["$defs"], kind


def test_serve_writes_the_envoy_bootstrap_and_its_first_files(repo, tmp_path, capsys):
    import json

    _serving(repo, ENVOY.replace("/var/lib/promotion/prod/envoy", str(tmp_path / "envoy")))
    assert main(["--root", str(repo), "serve", "prod", "--envoy-bootstrap", str(tmp_path / "boot.json")]) == 0
    assert capsys.readouterr().out.strip() == f"envoy -c {tmp_path / 'boot.json'}"
    boot = json.loads((tmp_path / "boot.json").read_text())
    assert boot["node"]["id"] == "promotion-prod"
    route = json.loads((tmp_path / "envoy" / "route.json").read_text())
    assert route["version_info"] == "1"  # the file's version at 100%
    assert json.loads((tmp_path / "envoy" / "clusters.json").read_text())["resources"][0]["name"] == "v1"
    # without the flag, serve refuses: it would start a router on Envoy's port
    assert main(["--root", str(repo), "serve", "prod"]) == 2
    assert "pass --envoy-bootstrap PATH" in capsys.readouterr().err

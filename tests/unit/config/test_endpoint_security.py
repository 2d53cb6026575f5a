"""Where environment files may send requests and tokens: https outside loopback, a safe
admin-token variable, and the operator's registry over the file's."""

from __future__ import annotations

import pytest

from promotion.cli import main


def _replace(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _line(path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old,new,field", [
    ("endpoint: http://127.0.0.1:3000", "endpoint: http://models.example.com", "serving.endpoint"),
    ("url: http://127.0.0.1:3000/metrics", "url: http://prometheus.internal:9090", "metrics.url"),
    ("\nserving:", "\nregistry:\n  tracking_uri: http://mlflow.example.com\n\nserving:", "registry.tracking_uri"),
    ("endpoint: http://127.0.0.1:3000", "endpoint: http://localhost.example.com", "serving.endpoint"),
    ("endpoint: http://127.0.0.1:3000", "endpoint: https://user:pw@models.example.com", "serving.endpoint"),
])
def test_plain_http_to_another_host_is_refused_with_file_and_line(repo, capsys, old, new, field):
    path = repo / "environments" / "prod.yaml"
    _replace(path, old, new)

    assert main(["--root", str(repo), "validate"]) == 2

    err = capsys.readouterr().err
    line = _line(path, field.split(".")[-1] + ":")
    assert f"environments/prod.yaml:{line} {field}: must" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["https://models.example.com", "http://127.0.0.1:3000", "http://localhost:3000",
                                   "http://[::1]:3000", "http://127.9.9.9:3000"])
def test_https_and_loopback_http_are_fine(repo, value):
    _replace(repo / "environments" / "prod.yaml", "endpoint: http://127.0.0.1:3000", f"endpoint: {value}")
    assert main(["--root", str(repo), "validate"]) == 0


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "MLFLOW_TRACKING_TOKEN", "PROMOTION_BOT_TOKEN", "AWS_SECRET_ACCESS_KEY"])
def test_the_admin_token_variable_cannot_name_another_secret(repo, capsys, name):
    path = repo / "environments" / "prod.yaml"
    _replace(path, "admin_token_env: PROMOTION_ADMIN_TOKEN", f"admin_token_env: {name}")

    assert main(["--root", str(repo), "validate"]) == 2

    assert f"environments/prod.yaml:{_line(path, 'admin_token_env')} serving.admin_token_env:" in capsys.readouterr().err


def test_the_operators_registry_wins_over_the_files(repo, monkeypatch, tmp_path):
    from promotion.registry import Registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'ops.db'}")
    reg = Registry.for_root(repo, "https://mlflow.example.com")
    assert reg.uri == f"sqlite:///{tmp_path / 'ops.db'}" and reg.uri_source == "$MLFLOW_TRACKING_URI"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert Registry.for_root(repo, "https://mlflow.example.com").uri == "https://mlflow.example.com"


def test_registry_credentials_go_only_to_the_operators_registry(repo, monkeypatch):
    from promotion.errors import RegistryError
    from promotion.registry import Registry

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com/")
    Registry(root=repo).check_credentials()
    Registry("https://MLFLOW.example.com:443/api", root=repo).check_credentials()  # same origin
    with pytest.raises(RegistryError, match=r"refusing to send \$MLFLOW_TRACKING_TOKEN there: it belongs to "
                                            r"\$MLFLOW_TRACKING_URI \(https://mlflow.example.com\)"):
        Registry("https://other.example.com", root=repo).check_credentials()
    with pytest.raises(RegistryError, match="artifact at http://files.example.com"):
        Registry(root=repo).check_credentials("http://files.example.com/a/b", "artifact at http://files.example.com")


@pytest.mark.parametrize("uri,refused", [
    ("s3://models/fraud/7", False),                          # the cloud SDK's own credentials
    ("gs://models/fraud/7", False),
    ("/var/models/fraud 7", False),                          # a local folder, blanks and all
    ("mlflow-artifacts:/fraud/7", False),                    # the registry's own artifact proxy
    (" HTTPS://mlflow.example.com/artifacts/7", False),
    ("mlflow-artifacts://files.example.com/fraud/7", True),  # http(s) to files.example.com
    ("https://mlflow.example.com\\@files.example.com/7", True),
    ("https://user@mlflow.example.com/7", True),
    ("dbfs:/models/7", True),                                # cannot tell where the token goes
    ("my-plugin://somewhere/7", True),
])
def test_artifact_locations_are_judged_as_mlflow_fetches_them(repo, monkeypatch, uri, refused):
    from promotion.errors import RegistryError
    from promotion.registry import Registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    reg = Registry(root=repo)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t")
    if refused:
        with pytest.raises(RegistryError, match=r"^model m version 7: .*\$MLFLOW_TRACKING_TOKEN") as err:
            reg.artifact_uri(uri, "model m version 7")
        assert "\n" not in err.value.diagnostics() and "user@" not in err.value.diagnostics()
    else:
        assert reg.artifact_uri(uri, "model m version 7") == uri.strip()
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    assert reg.artifact_uri(uri, "model m version 7") == uri.strip()  # no credentials: nothing to leak

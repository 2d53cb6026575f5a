"""The registry token goes only to the registry: a version (or run) whose artifact location
names another host gets nothing, whatever the scheme (a real MLflow tracking server, in
process, over HTTP; the attacker is a loopback listener)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from promotion.cli import main
from tests.unit.governance.conftest import git

TOKEN = "WRITE-TOKEN"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A real MLflow tracking server on loopback, and a client writing its store directly.

    Versions are written to the store rather than through the server: MLflow 3.17 refuses
    a host-addressed source at registration, but a registry that allows them
    (``MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES``), an older server or a database
    edit holds them all the same, and the workflow must not trust that.
    """
    from mlflow import MlflowClient
    from werkzeug.serving import make_server

    db = f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"
    store = MlflowClient(db, db)
    store.search_experiments()  # create the schema before the server opens the database
    saved = {k: os.environ.get(k) for k in ("_MLFLOW_SERVER_FILE_STORE", "_MLFLOW_SERVER_REGISTRY_STORE")}
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = os.environ["_MLFLOW_SERVER_REGISTRY_STORE"] = db
    from mlflow.server import app

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", store
    finally:
        server.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def workflow(tracking, monkeypatch):
    """The rollout job's environment: the operator's registry and its write token."""
    url, store = tracking
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return url, store


def _register(store, name: str, source: str) -> int:
    from mlflow.exceptions import MlflowException

    try:
        store.create_registered_model(name)
    except MlflowException:
        pass  # registered by an earlier case
    return int(store.create_model_version(name, source).version)


@pytest.mark.parametrize("source", [
    "mlflow-artifacts://{host}/fraud/model",
    "mlflow-artifacts://{host}",
    " http://{host}/fraud/model",
    "\thttp://{host}/fraud/model",
    "HTTP://{host}/fraud/model",
    "Https://{host}/fraud/model",
])
def test_an_artifact_location_on_another_host_gets_no_token(workflow, attacker, tmp_path, source):
    """Reproduction: only sources starting with "http" were checked, so a version stored at
    mlflow-artifacts://ATTACKER was fetched over http with ``Bearer $MLFLOW_TRACKING_TOKEN``."""
    from promotion.errors import RegistryError
    from promotion.registry import Registry

    _, store = workflow
    host = attacker.url.split("//", 1)[1]
    version = _register(store, "elsewhere", source.format(host=host))

    with pytest.raises(RegistryError) as err:
        Registry.for_root(tmp_path).artifact_path("elsewhere", version)

    assert attacker.requests == [], "the attacker's host was contacted"
    message = err.value.diagnostics()
    assert message.startswith(f"model elsewhere version {version}: artifact at ") and "\n" not in message
    assert f"(http://{host}): refusing to send $MLFLOW_TRACKING_TOKEN there: it belongs to $MLFLOW_TRACKING_URI" \
        in message.replace("https://", "http://")


def test_a_run_stored_on_another_host_gets_no_token(workflow, attacker, tmp_path):
    """A run whose artifact location is another host: its reference sample (``runs:/``) and a
    version registered from it are refused before any request."""
    from promotion.errors import RegistryError
    from promotion.registry import Registry

    _, store = workflow
    experiment = store.create_experiment("elsewhere-runs", artifact_location=f"mlflow-artifacts://{attacker.url[7:]}/x")
    run = store.create_run(experiment)
    reg = Registry.for_root(tmp_path)

    with pytest.raises(RegistryError, match=r"refusing to send \$MLFLOW_TRACKING_TOKEN there"):
        reg.download_run_artifact(run.info.run_id, "reference.parquet", tmp_path / "dl")
    version = _register(store, "from-run", f"runs:/{run.info.run_id}/model")
    with pytest.raises(RegistryError, match=r"refusing to send \$MLFLOW_TRACKING_TOKEN there"):
        reg.artifact_path("from-run", version)
    assert attacker.requests == []


def test_the_tracking_servers_own_artifacts_are_fetched_with_the_token(workflow, tmp_path):
    """``mlflow-artifacts:/path`` (no host) is the tracking server itself: allowed, and the
    failure that follows (this server proxies no artifacts) is the server's, not a refusal."""
    from promotion.errors import RegistryError
    from promotion.registry import Registry

    url, store = workflow
    reg = Registry.for_root(tmp_path)
    assert reg.artifact_uri(" mlflow-artifacts:/fraud/model", "here") == "mlflow-artifacts:/fraud/model"
    assert reg.artifact_uri(f"HTTP{url[4:]}/x", "same origin") == f"HTTP{url[4:]}/x"
    version = _register(store, "at-home", "mlflow-artifacts:/fraud/model")
    with pytest.raises(RegistryError) as err:
        reg.artifact_path("at-home", version)
    assert "refusing" not in err.value.diagnostics()


def test_the_pull_request_gate_blocks_a_proposal_stored_on_another_host(workflow, attacker, pull, capsys):
    """In the workflow: the proposed version's artifact is on the attacker's host; the gate
    blocks with a one-line reason and the attacker receives nothing."""
    _, store = workflow
    _register(store, "fraud-detector", "s3://models/fraud/1")
    _register(store, "fraud-detector", f"mlflow-artifacts://{attacker.url[7:]}/fraud/2")
    pull.edit("environments/prod.yaml", "  version: 1\n", "  version: 2\n")
    pull.edit("environments/prod.yaml", "  digest: sha256:" + "0" * 64, "  digest: sha256:" + f"{2:064x}")
    pull.commit("promote prod to v2")

    code = main(["--root", str(pull.root), "gate", "prod", "--base", "main", "--only", "schema", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert attacker.requests == [], "the attacker's host was contacted"
    assert code == 1
    schema = next(g for g in out["gates"] if g["gate"] == "schema")["checks"][0]
    assert schema["verdict"] == "BLOCK" and "\n" not in schema["message"]
    assert "model fraud-detector version 2: artifact at mlflow-artifacts://127.0.0.1:" in schema["message"]
    assert "refusing to send $MLFLOW_TRACKING_TOKEN there" in schema["message"]
    assert git(pull.root, "status", "--porcelain") == ""

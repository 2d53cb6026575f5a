"""The model registry: MLflow behind a small adapter that speaks the project's errors.

Usage::

    from promotion.registry import Registry
    reg = Registry.for_root(project.root)           # $MLFLOW_TRACKING_URI or the embedded store
    mv = reg.version("fraud-detector", 7)
    print(mv.metrics["f1"], mv.tags["data_snapshot"], mv.digest)
    previous = reg.set_alias("fraud-detector", "prod", 7)   # "prod-previous" now pins the old holder

Aliases (not the deprecated stages) mark what runs where: one alias per environment, and
``<env>-previous`` keeps the previous holder findable as the rollback target. MLflow keeps
no alias history; the signed records and git history are that history.

The embedded default is a sqlite store plus an explicit artifact root, both under the
project's state folder (see :mod:`promotion._internal.paths`).

Where the registry is, and who may receive its credentials: ``$MLFLOW_TRACKING_URI`` (the
operator's, e.g. the workflow's variable) wins over an environment file's
``registry.tracking_uri``; the file's URI is used only when the variable is unset. MLflow
sends ``$MLFLOW_TRACKING_TOKEN`` (or ``_USERNAME``/``_PASSWORD``) to whatever HTTP host it
talks to, so they belong to ``$MLFLOW_TRACKING_URI`` alone: a registry, or an artifact
download, on any other HTTP origin while they are set is refused (:class:`RegistryError`)
before a request is made. An artifact location is judged as MLflow will fetch it
(:meth:`Registry.artifact_uri`): ``mlflow-artifacts://host`` is HTTP to ``host``, ``runs:/``
and ``models:/`` are resolved through this registry first, a scheme with its own
credentials (``s3``, ``gs``, ``wasbs``, local files...) never gets the token, and a scheme
whose destination cannot be told is refused while the credentials are set.
``MLFLOW_TRACKING_AWS_SIGV4`` (requests signed with the machine's AWS credentials) and
``MLFLOW_TRACKING_AUTH`` (an auth plugin) count as such credentials too.

A registry named by an environment file (``registry.tracking_uri`` while
``$MLFLOW_TRACKING_URI`` is unset) gets no credential of the machine at all: it may be an
http(s) tracking server (the rule above) or a local sqlite file, never a database server
(libpq would answer it with ``$PGPASSWORD`` or ``~/.pgpass``), and none of its artifact
locations may be read through a cloud SDK (``s3``, ``gs``, ``wasbs``...): boto3 would sign
for it with ``AWS_*`` keys or the instance role and read from ``$MLFLOW_S3_ENDPOINT_URL``,
so a file could make the operator's keys fetch any object they can read. The S3 keys
belong to the registry the operator names; with proxied artifacts (``mlflow server
--artifacts-destination s3://...``) only the tracking server holds them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from promotion._internal.digest import tree_digest
from promotion._internal.paths import state_dir
from promotion.errors import RegistryError

_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
EXPERIMENT = "promotion"
PREVIOUS_SUFFIX = "-previous"


def alias_of(env: str) -> str:
    """The registry alias of environment ``env``: its stage. ``prod`` and ``prod/<model>``
    (one of several models promoted in prod) both use the alias ``prod`` of their own model."""
    return env.split("/", 1)[0]
# what MLflow's REST client sends to the tracking host (mlflow.environment_variables)
CREDENTIAL_VARS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# artifact schemes MLflow fetches over HTTP with those credentials (HttpArtifactRepository;
# mlflow-artifacts://host[:port] becomes http(s)://host[:port], the tracking host when it names none)
HTTP_SCHEMES = ("http", "https", "mlflow-artifacts")
# resolved through the registry to another location, which is judged in turn
INDIRECT_SCHEMES = ("runs", "models")
# artifact stores with credentials of their own (cloud SDK settings, the URI's user info) or
# none at all (local files): MLflow's token never goes there. Anything else (a plugin's
# scheme, dbfs, uc...) may use it in ways this module cannot see, so it is refused while set.
OWN_CREDENTIAL_SCHEMES = ("", "file", "s3", "gs", "wasbs", "abfss", "r2", "b2", "ftp", "sftp", "hdfs", "viewfs")
MAX_INDIRECTIONS = 3
# artifact stores read through an SDK that signs with the machine's own credentials (AWS_*,
# an instance role, ~/.aws, GOOGLE_APPLICATION_CREDENTIALS, Azure identities, Kerberos...),
# which a process cannot all see: never for a registry that an environment file chose
AMBIENT_CREDENTIAL_SCHEMES = ("s3", "gs", "wasbs", "abfss", "r2", "b2", "hdfs", "viewfs")
# the stores an environment file may name as the registry: an http(s) tracking server (its
# token is checked) or local files; a database server (or databricks, with its config file's
# token) is the operator's to name
FILE_REGISTRY_SCHEMES = ("http", "https", "sqlite", "file", "")
FILE_SOURCE = "the environment file's registry.tracking_uri"


@dataclass(frozen=True)
class ModelVersion:
    """What the registry knows of one model version."""

    name: str
    version: int
    run_id: str | None
    source: str
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    aliases: tuple[str, ...] = ()
    digest: str | None = None  # the digest recorded at registration (a tag; verify, don't trust)
    extra: dict[str, Any] = field(default_factory=dict)


def embedded_uri(root: str | Path | None = None) -> tuple[str, str]:
    """(tracking URI, artifact root) of the embedded store under the state folder."""
    state = state_dir(root)
    (state / "mlartifacts").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state / 'mlflow.db'}", (state / "mlartifacts").as_uri()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn MLflow and transport failures into RegistryError naming ``what``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        first = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0][:300]
        if code == "RESOURCE_DOES_NOT_EXIST" or "not found" in first.lower() or "does not exist" in first.lower():
            raise RegistryError(f"{what}: does not exist in the registry") from exc
        raise RegistryError(f"{what}: registry error: {first}") from exc
    except OSError as exc:
        raise RegistryError(f"{what}: cannot reach the registry ({exc.__class__.__name__}: {exc})") from exc
    except Exception as exc:  # requests, sqlalchemy and friends: never raw to the user
        raise RegistryError(f"{what}: registry failure ({exc.__class__.__name__}: {str(exc)[:300]})") from exc


class Registry:
    """MLflow model registry adapter."""

    def __init__(self, tracking_uri: str | None = None, root: str | Path | None = None,
                 *, uri_source: str | None = None, chosen_by_file: bool = False) -> None:
        """``tracking_uri`` is used as given (else ``$MLFLOW_TRACKING_URI``, else the embedded
        store); ``uri_source`` names where it came from, for messages. ``chosen_by_file``:
        a file anyone can edit named it, so it gets no credential of this machine."""
        self.root = Path(root or Path.cwd())
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.uri_source = uri_source or ("$MLFLOW_TRACKING_URI" if uri and not tracking_uri else "the caller")
        self.chosen_by_file = bool(chosen_by_file and tracking_uri)
        self.artifact_root: str | None = None
        if not uri:
            uri, self.artifact_root = embedded_uri(self.root)
        elif uri.startswith("sqlite:"):
            # a database store has no artifact root of its own; never MLflow's ./mlruns
            self.artifact_root = embedded_uri(self.root)[1]
        self.uri = uri
        self._client = None

    @classmethod
    def for_root(cls, root: str | Path, tracking_uri: str | None = None,
                 source: str = FILE_SOURCE) -> "Registry":
        """The registry of a project: ``$MLFLOW_TRACKING_URI`` when set, else ``tracking_uri``
        (an environment file's ``registry.tracking_uri``), else the embedded store.

        The operator's variable wins so that a file (which a pull request can edit) never
        chooses the host that receives the registry credentials.
        """
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        if from_env:
            return cls(from_env, root, uri_source="$MLFLOW_TRACKING_URI")
        return cls(tracking_uri, root, uri_source=source if tracking_uri else None,
                   chosen_by_file=bool(tracking_uri))

    def check_credentials(self, uri: str | None = None, what: str | None = None) -> None:
        """Refuse when MLflow would send ``$MLFLOW_TRACKING_TOKEN`` (or the username and
        password) to an HTTP origin other than ``$MLFLOW_TRACKING_URI``'s (``http``,
        ``https`` and ``mlflow-artifacts://host``, in any case, blanks around it ignored).

        ``uri`` defaults to the registry's own; ``what`` names it in the message.
        """
        given = str(uri or self.uri).strip()
        uri = _http_target(given, self.uri)  # mlflow-artifacts://host is HTTP to host
        held = _held()
        if not held or not _is_http(uri):
            return
        trusted = (os.environ.get("MLFLOW_TRACKING_URI") or "").strip()
        if _is_http(trusted) and _plain_authority(uri) and _origin(uri) == _origin(trusted):
            return
        owner = f"$MLFLOW_TRACKING_URI ({_origin(trusted)})" if trusted else "$MLFLOW_TRACKING_URI, which is unset"
        raise RegistryError(
            f"{what or f'registry {_origin(given)} (from {self.uri_source})'}: refusing to send "
            f"${held[0]} there: it belongs to {owner}; set MLFLOW_TRACKING_URI to the registry "
            "these credentials are for, or unset them")

    def check_store(self) -> None:
        """Refuse a registry store that an environment file chose and that would be reached
        with this machine's credentials: anything but an http(s) tracking server (whose token
        :meth:`check_credentials` guards) or a local sqlite file."""
        scheme = _scheme(self.uri).split("+", 1)[0]
        if self.chosen_by_file and scheme not in FILE_REGISTRY_SCHEMES:
            raise RegistryError(
                f"registry {_shown(self.uri)} (from {self.uri_source}): a {scheme or 'local'} registry store is "
                "named by $MLFLOW_TRACKING_URI only (its client would use this machine's credentials, e.g. "
                "$PGPASSWORD or ~/.pgpass, for a host the file chose); set MLFLOW_TRACKING_URI")

    def artifact_uri(self, uri: str, what: str) -> str:
        """The artifact location ``uri`` as MLflow will fetch it: stripped, ``runs:/`` and
        ``models:/`` resolved through this registry. :class:`RegistryError` (naming ``what``)
        when fetching it would send the registry's credentials anywhere but
        ``$MLFLOW_TRACKING_URI``'s origin, or when it cannot be told where they would go.

        Download what this returns, not ``uri``: that is what was checked.
        """
        current = str(uri).strip()
        for _ in range(MAX_INDIRECTIONS + 1):
            scheme = _scheme(current)
            if scheme not in INDIRECT_SCHEMES:
                break
            with _translated(what):
                current = self._resolve(current, scheme, what)
        else:
            raise RegistryError(f"{what}: {uri} resolves through more than {MAX_INDIRECTIONS} registry references")
        if self.chosen_by_file and scheme in AMBIENT_CREDENTIAL_SCHEMES:
            raise RegistryError(
                f"{what}: the artifact location {_shown(current)} comes from registry {_shown(self.uri)} "
                f"(from {self.uri_source}); {scheme}:// is read with this machine's own credentials "
                "(AWS_*, $MLFLOW_S3_ENDPOINT_URL, cloud identities): refusing; set MLFLOW_TRACKING_URI "
                "to the registry those credentials are for")
        held = _held()
        if not held or scheme in OWN_CREDENTIAL_SCHEMES:
            return current
        if scheme not in HTTP_SCHEMES:
            raise RegistryError(f"{what}: the artifact location {_shown(current)} uses the scheme {scheme!r}, whose "
                                f"destination for ${held[0]} cannot be checked: refusing while it is set")
        target = _http_target(current, self.uri)
        self.check_credentials(target, f"{what}: artifact at {_shown(current)} ({_origin(target)})")
        return current

    def _resolve(self, uri: str, scheme: str, what: str) -> str:
        """One step of a ``runs:/`` or ``models:/`` location, through this registry only."""
        from urllib.parse import urlsplit

        if urlsplit(uri).netloc:  # runs://profile@databricks/..., models://...: another registry
            raise RegistryError(f"{what}: the artifact location {_shown(uri)} names another registry: refusing it")
        from mlflow.utils.uri import append_to_uri_path

        if scheme == "runs":
            from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

            run_id, path = RunsArtifactRepository.parse_runs_uri(uri)
            return append_to_uri_path(self.client.get_run(run_id).info.artifact_uri, path or "")
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        model_uri, path = ModelsArtifactRepository.split_models_uri(uri)
        found = get_model_name_and_version(self.client, model_uri)
        if len(found) == 1:
            base = self.client.get_logged_model(found[0]).artifact_location
        else:
            base = self.client.get_model_version_download_uri(*found)
        return append_to_uri_path(base, path) if path else base

    @property
    def client(self):
        if self._client is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            self.check_store()
            self.check_credentials()
            from mlflow.tracking import MlflowClient

            with _translated(f"registry {self.uri}"):
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    # -- reading ---------------------------------------------------------------------

    def version(self, name: str, version: int | str) -> ModelVersion:
        """One model version with its run's metrics and params; RegistryError if absent."""
        what = f"model {name} version {version}"
        with _translated(what):
            mv = self.client.get_model_version(name, str(version))
            metrics: dict[str, float] = {}
            params: dict[str, str] = {}
            if mv.run_id:
                run = self.client.get_run(mv.run_id)
                metrics, params = dict(run.data.metrics), dict(run.data.params)
        tags = dict(mv.tags or {})
        return ModelVersion(
            name=name, version=int(mv.version), run_id=mv.run_id, source=mv.source,
            tags=tags, metrics=metrics, params=params, aliases=tuple(mv.aliases or ()),
            digest=tags.get("artifact_digest"),
        )

    def alias(self, name: str, alias: str) -> int | None:
        """The version holding ``alias``, or None."""
        from mlflow.exceptions import MlflowException

        alias = alias_of(alias)
        with _translated(f"model {name} alias {alias}"):
            try:
                return int(self.client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

    def previous(self, name: str, env: str) -> int | None:
        """The pinned rollback target of ``env``: the holder before the current one."""
        return self.alias(name, alias_of(env) + PREVIOUS_SUFFIX)

    # -- writing ---------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version``; pin the previous holder as ``<alias>-previous``.

        Returns the previous holder. Idempotent: setting the current holder changes nothing.
        """
        alias = alias_of(alias)
        current = self.alias(name, alias)
        if current == int(version):
            return self.previous(name, alias)
        with _translated(f"model {name} version {version}"):
            self.client.get_model_version(name, str(version))  # fail before touching aliases
            if current is not None:
                self.client.set_registered_model_alias(name, alias + PREVIOUS_SUFFIX, str(current))
            self.client.set_registered_model_alias(name, alias, str(version))
        return current

    def restore_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` back at ``version`` without re-pinning ``<alias>-previous``."""
        alias = alias_of(alias)
        with _translated(f"model {name} version {version}"):
            self.client.set_registered_model_alias(name, alias, str(version))

    def set_tag(self, name: str, version: int, key: str, value: str) -> None:
        with _translated(f"model {name} version {version}"):
            self.client.set_model_version_tag(name, str(version), key, value)

    # -- artifacts -------------------------------------------------------------------

    def artifact_path(self, name: str, version: int, cache: str | Path | None = None) -> Path:
        """A local copy of the version's model artifact directory (downloaded once)."""
        base = Path(cache) if cache else state_dir(self.root) / "artifacts"
        dest = base / name / str(version)
        if (dest / "MLmodel").is_file():
            return dest
        with _translated(f"model {name} version {version}"):
            import mlflow.artifacts

            tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=_mkdir(base / name)))
            try:
                # resolve models:/ through this registry, not whatever the process default is
                # a version whose source is elsewhere (http, mlflow-artifacts://host, ...) would get the token too
                source = self.artifact_uri(self.client.get_model_version_download_uri(name, str(version)),
                                           f"model {name} version {version}")
                got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=self.uri))
                if not (got / "MLmodel").is_file():
                    raise RegistryError(f"model {name} version {version}: the artifact at {source} holds no MLmodel file")
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(got, dest)  # atomic: a half-downloaded artifact is never used
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def artifact_digest(self, name: str, version: int) -> str:
        """The sha256 of the artifact as it is in the registry now (recomputed, not a tag)."""
        return tree_digest(self.artifact_path(name, version))

    def download_run_artifact(self, run_id: str, path: str, dest: str | Path) -> Path:
        """A run's artifact (a file or folder) copied under ``dest``; the run's artifact
        location is checked like a model version's (:meth:`artifact_uri`)."""
        what = f"run {run_id} artifact {path}"
        with _translated(what):
            import mlflow.artifacts
            from mlflow.utils.uri import append_to_uri_path

            base = self.client.get_run(run_id).info.artifact_uri
            source = self.artifact_uri(append_to_uri_path(base, path), what)
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=self.uri))


def _held() -> list[str]:
    """The credential variables MLflow would use for the tracking host, as they are set."""
    held = [v for v in CREDENTIAL_VARS if os.environ.get(v)]
    if (os.environ.get("MLFLOW_TRACKING_AWS_SIGV4") or "").strip().lower() in ("1", "true", "yes", "y", "t"):
        held.append("MLFLOW_TRACKING_AWS_SIGV4 (requests signed with this machine's AWS credentials)")
    if (os.environ.get("MLFLOW_TRACKING_AUTH") or "").strip():
        held.append("MLFLOW_TRACKING_AUTH")
    return held


def _scheme(uri: str) -> str:
    """The scheme MLflow picks the artifact repository by (``urlparse``: lower case, leading
    blanks dropped; one letter is a Windows drive)."""
    from urllib.parse import urlsplit

    try:
        scheme = urlsplit(str(uri)).scheme
    except ValueError:
        return "(unparsable)"
    return "" if len(scheme) == 1 else scheme


def _is_http(uri: str) -> bool:
    return _scheme(uri) in ("http", "https")


def _plain_authority(uri: str) -> bool:
    """No user info, blanks, control characters or backslashes: nothing two URL parsers
    (urllib here, urllib3 in requests) could read as different hosts."""
    from urllib.parse import urlsplit

    text = str(uri).strip()
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in text):
        return False
    try:
        netloc = urlsplit(text).netloc
    except ValueError:
        return False
    return bool(_AUTHORITY.match(netloc))


def _http_target(uri: str, tracking_uri: str) -> str:
    """The http(s) URL MLflow sends a request to for ``uri`` (``mlflow-artifacts://host``
    is the tracking URI's scheme to ``host``; without a host, the tracking host)."""
    from urllib.parse import urlsplit

    if _scheme(uri) != "mlflow-artifacts":
        return uri
    parts, track = urlsplit(uri.strip()), urlsplit(str(tracking_uri).strip())
    if track.scheme not in ("http", "https"):
        # MLflow refuses mlflow-artifacts without an http(s) tracking URI; a host is still judged
        return f"http://{parts.netloc}{parts.path}" if parts.netloc else uri
    return f"{track.scheme}://{parts.netloc or track.netloc}{parts.path}"


def _shown(uri: str) -> str:
    """A location for a one-line message: no user info, no control characters, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in str(uri).strip())
    return re.sub(r"//[^/@?#]*@", "//", text)[:200]


def _origin(uri: str) -> str:
    """scheme://host[:port] of an http(s) URI (lower case, default ports dropped), else the URI."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(uri).strip())
        port = parts.port
    except ValueError:
        return str(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return str(uri)
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p

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
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from promotion._internal.digest import tree_digest
from promotion._internal.paths import state_dir
from promotion.errors import RegistryError

EXPERIMENT = "promotion"
PREVIOUS_SUFFIX = "-previous"


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

    def __init__(self, tracking_uri: str | None = None, root: str | Path | None = None) -> None:
        self.root = Path(root or Path.cwd())
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.artifact_root: str | None = None
        if not uri:
            uri, self.artifact_root = embedded_uri(self.root)
        elif uri.startswith("sqlite:"):
            # a database store has no artifact root of its own; never MLflow's ./mlruns
            self.artifact_root = embedded_uri(self.root)[1]
        self.uri = uri
        self._client = None

    @classmethod
    def for_root(cls, root: str | Path, tracking_uri: str | None = None) -> "Registry":
        return cls(tracking_uri, root)

    @property
    def client(self):
        if self._client is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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

        with _translated(f"model {name} alias {alias}"):
            try:
                return int(self.client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

    def previous(self, name: str, env: str) -> int | None:
        """The pinned rollback target of ``env``: the holder before the current one."""
        return self.alias(name, env + PREVIOUS_SUFFIX)

    # -- writing ---------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version``; pin the previous holder as ``<alias>-previous``.

        Returns the previous holder. Idempotent: setting the current holder changes nothing.
        """
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
                source = self.client.get_model_version_download_uri(name, str(version))
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
        with _translated(f"run {run_id} artifact {path}"):
            import mlflow.artifacts

            return Path(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dest), tracking_uri=self.uri))


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p

"""Where a model version came from: code commit, data snapshot, environment lock, params.

These are the lineage tags the ``lineage`` gate requires. Each is computed so that it
means something, and refused when it cannot: a commit of a work tree with uncommitted
changes does not name the code that trained the model, so it is not a code commit.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from promotion.errors import BadInput


class RegisterError(BadInput):
    """A version cannot be registered as asked; nothing was registered (exit 2)."""


def code_commit(code_dir: Path, caller: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the repository holding ``code_dir``.

    Refused (:class:`RegisterError`) outside git, before the first commit, when a tracked
    file has uncommitted changes, or when ``caller`` (the training script) is not tracked:
    then the commit does not describe the code that trained the model.
    """
    from promotion._internal.git import Git
    from promotion.errors import GitError

    git = Git(code_dir)
    hint = "commit the training code first, or pass code_commit= (e.g. the CI build's commit)"
    try:
        top = git("rev-parse", "--show-toplevel").strip()
    except GitError:
        raise RegisterError(f"{code_dir} is not inside a git repository: no code commit to record; {hint}") from None
    try:
        head = git("rev-parse", "--verify", "HEAD").strip()
    except GitError:
        raise RegisterError(f"{top} has no commit yet: no code commit to record; {hint}") from None
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()]
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise RegisterError(f"{top} has uncommitted changes ({shown}): HEAD {head[:12]} is not the code that "
                            f"trained this model; {hint}")
    if caller is not None and caller.is_file():
        try:
            rel = caller.resolve().relative_to(Path(top).resolve())
        except ValueError:
            rel = None
        if rel is not None and not git("ls-files", "--", rel.as_posix()).strip():
            raise RegisterError(f"{rel} (the training code) is not committed in {top}; {hint}")
    return head


def frame_digest(*frames: Any) -> str:
    """``sha256:<hex>`` of data frames' content: column names, dtypes and every value.

    Strings and categoricals are hashed by value (pandas' stable row hashes), so the
    digest is the same in every process. Anything pandas cannot hash (cells holding
    lists or dicts) raises :class:`RegisterError`.
    """
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()
    for i, data in enumerate(frames):
        if data is None:
            continue
        frame = data.to_frame() if isinstance(data, pd.Series) else pd.DataFrame(data)
        h.update(f"frame {i} {frame.shape}\0".encode())
        for col in frame.columns:
            column = frame[col]
            h.update(f"{col}\0{column.dtype}\0".encode())
            try:
                values = pd.util.hash_pandas_object(column, index=False).to_numpy()
            except TypeError as exc:
                raise RegisterError(f"cannot compute a data snapshot digest: column {col!r} holds values pandas "
                                    f"cannot hash ({exc}); pass data_snapshot= (your dataset's version id)") from None
            h.update(np.ascontiguousarray(values).tobytes())
    return "sha256:" + h.hexdigest()


def environment_lock(lock_file: str | Path | None = None) -> tuple[str, str, str]:
    """(file name, lock text, its digest) of the training environment.

    ``lock_file`` (a ``uv.lock``, ``requirements.txt`` with hashes, ``conda-lock.yml``) is
    used as it is; without one, every installed distribution as ``name==version``.
    """
    if lock_file is not None:
        path = Path(lock_file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RegisterError(f"env_lock {path}: cannot read ({exc.strerror or exc})") from None
        if not data.strip():
            raise RegisterError(f"env_lock {path}: is empty")
        return path.name, data.decode("utf-8", "replace"), "sha256:" + hashlib.sha256(data).hexdigest()
    from importlib import metadata

    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]},
                  key=str.lower)
    text = "\n".join(pins) + "\n"
    return "environment.lock", text, "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def model_params(model: Any) -> dict[str, Any]:
    """The hyperparameters of a scikit-learn-style model (``get_params``), scalars only.

    Nested estimators of a pipeline appear as ``<step>__<param>``; the estimator objects
    themselves are left out (their parameters are there).
    """
    get = getattr(model, "get_params", None)
    if not callable(get):
        return {}
    try:
        params = get(deep=True)
    except Exception:  # noqa: BLE001 - a model whose get_params fails has no params to record
        return {}
    return {str(k): v for k, v in sorted(params.items()) if _scalar(v)}


def params_digest(params: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the params as sorted JSON (values that are not JSON as their str)."""
    text = json.dumps(dict(params), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def loggable_params(params: Mapping[str, Any], limit: int = 500) -> dict[str, str]:
    """Params as MLflow takes them: string values, each at most ``limit`` characters."""
    return {k: (s if len(s := str(v)) <= limit else s[: limit - 3] + "...") for k, v in params.items()}


def requirements(modules: Iterable[str]) -> list[str]:
    """``dist==version`` for the distributions that provide ``modules`` (top-level names).

    The same pins MLflow's inference would find, without importing the model in a
    subprocess (which takes seconds); ``xgboost`` resolves to whichever distribution
    installed it (``xgboost`` or ``xgboost-cpu``).
    """
    from importlib import metadata

    provided = metadata.packages_distributions()
    out: dict[str, str] = {}
    for module in modules:
        for dist in provided.get(module, []):
            try:
                out[dist.lower()] = f"{dist}=={metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
    return sorted(out.values(), key=str.lower)

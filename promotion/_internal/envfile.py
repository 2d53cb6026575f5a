"""Edit an environment file's model version and digest, keeping comments and layout."""

from __future__ import annotations

import io
from pathlib import Path

from promotion._internal.atomic import atomic_write
from promotion.errors import ConfigError


def set_model(path: str | Path, version: int, digest: str) -> bool:
    """Set ``model.version`` and ``model.digest`` in place; returns False if already so."""
    from ruamel.yaml import YAML

    path = Path(path)
    yaml = YAML()  # round-trip: comments, key order and quoting survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    text = path.read_text(encoding="utf-8")
    doc = yaml.load(text)
    model = doc.get("model") if hasattr(doc, "get") else None
    if model is None:
        raise ConfigError(f"{path}:1 model: is required")
    if model.get("version") == int(version) and model.get("digest") == digest:
        return False
    model["version"] = int(version)
    model["digest"] = digest
    out = io.StringIO()
    yaml.dump(doc, out)
    atomic_write(path, out.getvalue())
    return True

"""Content digests: ``sha256:<hex>`` of a file or of a whole artifact directory.

A directory's digest is the sha256 of its manifest: one line ``<sha256 of file>  <path>``
per regular file, sorted by POSIX relative path (the format of ``sha256sum``). It changes
when any file's bytes, name or presence change, and not with timestamps or walk order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, or of a directory's manifest (see module docstring)."""
    path = Path(path)
    if path.is_file():
        return "sha256:" + file_sha256(path)
    lines = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        lines.append(f"{file_sha256(f)}  {f.relative_to(path).as_posix()}\n")
    if not lines:
        raise FileNotFoundError(f"{path}: no files to digest")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()

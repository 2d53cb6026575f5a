"""Artifact digests: ``sha256:<64 hex>`` of a model version's artifact directory.

The registry records the digest at registration (tag ``artifact_digest``), the
environment file and the routing document carry it, and the router recomputes it over
the files it fetched before it loads a version::

    from promotion.contract.digest import tree_digest, DIGEST_RE
    assert DIGEST_RE.match(tree_digest("/path/to/model"))

A directory's digest is the sha256 of its manifest: one line ``<sha256 of file>  <path>``
per regular file, sorted by POSIX relative path (the format of ``sha256sum``); see
:mod:`promotion._internal.digest`, which computes it.
"""

from __future__ import annotations

import re

from promotion._internal.digest import bytes_digest, file_sha256, tree_digest

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

__all__ = ["DIGEST_RE", "tree_digest", "file_sha256", "bytes_digest"]

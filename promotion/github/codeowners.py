"""CODEOWNERS: who owns a path. The last matching rule wins, as on GitHub.

Patterns follow GitHub's gitignore-like rules: a leading ``/`` anchors to the root, a
trailing ``/`` matches a directory's contents, ``*`` does not cross ``/``, ``**`` does,
and a pattern without a ``/`` (other than a trailing one) matches at any depth.
"""

from __future__ import annotations

import re

LOCATIONS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")


def _regex(pattern: str) -> re.Pattern:
    anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
    p = pattern.lstrip("/")
    directory = p.endswith("/")
    p = p.rstrip("/")
    out = ""
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif p.startswith("**", i):
            out += ".*"
            i += 2
        elif p[i] == "*":
            out += "[^/]*"
            i += 1
        elif p[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(p[i])
            i += 1
    prefix = "^" if anchored else "^(?:.*/)?"
    suffix = "/.*$" if directory else "(?:/.*)?$"
    return re.compile(prefix + out + suffix)


def owners(text: str, path: str) -> list[str]:
    """Owners (``@user`` or ``@org/team``, without the ``@``) of ``path``; [] when none."""
    found: list[str] = []
    path = path.lstrip("/")
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("\\#") else raw.strip()
        if not line:
            continue
        parts = line.split()
        if _regex(parts[0]).match(path):
            found = [o[1:] for o in parts[1:] if o.startswith("@")]
    return found
